"""Pipeline workers as real processes (`python -m pipeline worker`), for benchmarks and fault tests.

Two Faust apps in one process share module state and stall after one stops, and a worker sharing its
process with the benchmark's own readers would be measured with their work; so multi-worker runs, crash
tests and the backlog benchmark run each worker as its own process, configured only through the
environment, like production. `LoggedProcess` is what every such child has in common (the Quix Streams
job of `bench --with-quix` is one too); `wait_count` polls a count while watching them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path

from pipeline.config.secret import Secret
from pipeline.config.settings import Settings
from pipeline.devtools.broker import free_port

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # holds `pipeline/`: a source checkout or site-packages
READY = b"geo-pipeline worker ready"  # printed once the app has started (pipeline/cli/worker.py READY_LINE)
PROGRESS_EVERY = 2.0  # seconds between the progress lines of `wait_count`


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes `Settings.from_env` rebuild `settings` (the secrets aside: `describe`
    shows them only redacted)."""
    env: dict[str, str] = {}
    for name, value in settings.describe():
        if value in ("None", "", str(Secret("redacted"))):
            continue
        env[name] = value
    return env


class ProcessExited(AssertionError):
    """A child process exited while it was still needed; an AssertionError, so a test's wait fails at once
    with the process's log."""


class LoggedProcess:
    """A child process writing its stdout and stderr to a log file, stopped with SIGTERM, then SIGKILL."""

    label = "process"  # names the process in errors

    def __init__(
        self, command: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None, cwd: Path
    ) -> None:
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115 - held for the child's lifetime
        self.proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT)
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check(self) -> None:
        """ProcessExited with the log's tail when the process has exited."""
        if self.proc.poll() is not None:
            raise ProcessExited(f"{self.label} exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def peak_rss_mib(self) -> float | None:
        """The process's peak resident set so far (VmHWM), in MiB; None once it has exited."""
        return peak_rss_mib(self.pid)

    def kill(self) -> None:
        """SIGKILL: a crash, no clean shutdown, no final commit."""
        self.proc.kill()
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 30.0) -> float:
        """SIGTERM, as `docker stop` and Kubernetes send it; returns the seconds the process took to exit
        (SIGKILL after `timeout`)."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return time.monotonic() - started

    def stop(self, timeout: float = 30.0) -> float:
        """`terminate`, then close the log; returns the seconds the process took to exit."""
        took = self.terminate(timeout)
        self._log.close()
        return took


class WorkerProcess(LoggedProcess):
    """One worker process with its own data dir, web port and log file."""

    label = "worker"

    def __init__(
        self, settings: Settings, data_dir: Path, log: Path, *, profile: Path | None = None, **env: str
    ) -> None:
        environ = {
            **os.environ,
            **settings_env(settings),
            "GEO_DATA_DIR": str(data_dir),
            "GEO_WEB_PORT": str(free_port()),
            "PYTHONPATH": str(PACKAGE_ROOT),
            **env,
        }
        self.data_dir = data_dir
        # with `profile`, the worker runs under cProfile, which writes its stats there when it exits cleanly
        profiler = ["-m", "cProfile", "-o", str(profile)] if profile is not None else []
        command = [sys.executable, *profiler, "-m", "pipeline", "worker"]
        super().__init__(command, log, env=environ, cwd=PACKAGE_ROOT)

    def ready(self) -> bool:
        """Started and assigned; ProcessExited with the log's tail when the process died instead."""
        self.check()
        return READY in self.log_path.read_bytes()


async def wait_count(
    count: Callable[[], Awaitable[int]],
    target: int,
    procs: Sequence[LoggedProcess],
    what: str,
    timeout: float,
) -> list[float]:
    """Poll `count()` until it reaches `target`, with a progress line naming `what` every PROGRESS_EVERY
    seconds; returns each process's peak RSS in MiB. ProcessExited when one of them exits, TimeoutError
    after `timeout` seconds."""
    started = shown = time.monotonic()
    peaks = [0.0] * len(procs)
    while True:
        for i, proc in enumerate(procs):
            proc.check()
            peaks[i] = max(peaks[i], proc.peak_rss_mib() or 0.0)
        done = await count()
        if done >= target:
            return peaks
        now = time.monotonic()
        if now - started > timeout:
            tails = "\n".join(proc.tail() for proc in procs)
            raise TimeoutError(f"{what}: {done:,}/{target:,} after {timeout:.0f}s\n{tails}")
        if now - shown >= PROGRESS_EVERY:
            shown = now
            print(f"  {now - started:5.1f}s {what}: {done:,}/{target:,}", flush=True)
        await asyncio.sleep(0.5)  # polling offsets: there is no event to wait on


def peak_rss_mib(pid: int) -> float | None:
    """Process `pid`'s peak resident set so far (VmHWM), in MiB; None once it has exited."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


@contextlib.contextmanager
def worker_processes(
    settings: Settings, workdir: Path, n: int, *, profile: bool = False
) -> Iterator[list[WorkerProcess]]:
    """`n` worker processes on `settings`, each with its own data dir and log under `workdir`; all stopped
    (SIGTERM) on exit. Topics must exist first (`app.ensure_topics`). With `profile`, each runs under
    cProfile and leaves its stats in `workdir/w<i>.prof` once stopped."""
    workdir.mkdir(parents=True, exist_ok=True)
    workers = [
        WorkerProcess(
            settings,
            workdir / f"w{i}",
            workdir / f"w{i}.log",
            profile=workdir / f"w{i}.prof" if profile else None,
        )
        for i in range(n)
    ]
    try:
        yield workers
    finally:
        for worker in workers:
            worker.stop()
