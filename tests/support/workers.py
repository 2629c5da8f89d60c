"""Pipeline workers as real processes (`python -m pipeline worker`), for rebalancing and crash tests.

Two Faust apps in one process share module state and stall after one stops, so multi-worker tests run
each worker as its own process, configured only through the environment, like production.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from pipeline.app import ensure_topics
from pipeline.devtools.broker import free_port
from pipeline.secret import Secret
from pipeline.settings import Settings
from tests.support.kafka import wait_for

REPO = Path(__file__).resolve().parents[2]


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes `Settings.from_env` rebuild `settings` (the secrets aside)."""
    env: dict[str, str] = {}
    for name, value in settings.describe():
        if value in ("None", "", str(Secret("redacted"))):  # describe() shows a secret only redacted
            continue
        if name == "GEO_PROVIDERS":
            value = ",".join(settings.providers)
        env[name] = value
    return env


class WorkerProcess:
    """One worker process with its own data dir and log file."""

    def __init__(self, settings: Settings, data_dir: Path, log: Path) -> None:
        env = {
            **os.environ,
            **settings_env(settings),
            "GEO_DATA_DIR": str(data_dir),
            "GEO_WEB_PORT": str(free_port()),
            "PYTHONPATH": str(REPO),
        }
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - held for the child's lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "worker"],
            env=env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
        return b"[^Worker]: Ready" in self.log_path.read_bytes()

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(line for line in text if "buffer full" not in line)[-4000:][-lines * 120 :]

    def kill(self) -> None:
        """SIGKILL: a crash, no clean shutdown, no final commit."""
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@contextlib.asynccontextmanager
async def running_workers(
    settings: Settings, tmp_path: Path, n: int = 2
) -> AsyncIterator[list[WorkerProcess]]:
    """`n` worker processes on `settings` (topics created first), each with its own data dir and log file
    under `tmp_path`; all ready before the block runs, all stopped after it."""
    await ensure_topics(settings)
    workers = [WorkerProcess(settings, tmp_path / f"w{i}", tmp_path / f"w{i}.log") for i in range(n)]
    try:
        await wait_for(lambda: all(w.ready() for w in workers), 90, message=f"{n} workers ready")
        yield workers
    finally:
        for w in workers:
            w.stop()
