"""Worker processes for the integration tests: started, awaited until ready, stopped."""

from __future__ import annotations

import contextlib
import glob
from collections.abc import AsyncIterator
from pathlib import Path

from pipeline.app import ensure_topics
from pipeline.config.settings import Settings
from pipeline.devtools.processes import WorkerProcess, settings_env, worker_processes
from tests.support.kafka import wait_for

__all__ = ["WorkerProcess", "faketime_env", "running_workers", "settings_env"]


@contextlib.asynccontextmanager
async def running_workers(
    settings: Settings, tmp_path: Path, n: int = 2
) -> AsyncIterator[list[WorkerProcess]]:
    """`n` worker processes on `settings` (topics created first), each with its own data dir and log file
    under `tmp_path`; all ready before the block runs, all stopped after it."""
    await ensure_topics(settings)
    with worker_processes(settings, tmp_path, n) as workers:
        await wait_for(lambda: all(w.ready() for w in workers), 90, message=f"{n} workers ready")
        yield workers


FAKETIME_LIBS = (  # where distributions put libfaketime
    "/usr/lib/*/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
)


def faketime_env(offset: str) -> dict[str, str]:
    """The environment that runs a worker process under libfaketime with its clocks `offset` away (e.g.
    "+30s"): the `faketime` package (apt-get install faketime), preloaded as the `faketime` command does."""
    found = [path for pattern in FAKETIME_LIBS for path in sorted(glob.glob(pattern))]
    assert found, "libfaketime not found: apt-get install faketime (.ci/run installs it when missing)"
    return {"LD_PRELOAD": found[0], "FAKETIME": offset}
