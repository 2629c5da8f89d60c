"""Session fixtures shared by every tier, the one async test style of the agent and integration tiers, and
the choice of tiers.

Tiers: `tests/unit` (pure: no loop, no I/O), `tests/agent` (services driven in one event loop, loopback
servers at most) and `tests/integration` (the real Kafka broker, marked `integration`). Plain `pytest`
runs the fast tiers; `pytest -m integration` the broker tier; `pytest --all-tiers` (the README's test
command and CI) every tier. A path into tests/integration, or any `-m`, selects as written.

The Kafka broker is started at most once per session and only when a test asks for `kafka_bootstrap`, so
unit-only runs never touch Java. Point KAFKA_BOOTSTRAP_SERVERS at a running broker to reuse it instead.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.devtools.broker import BrokerInfo, LocalKafka
from tests.support import runner
from tests.support.runner import run_bounded

EXIT_STATUS = pytest.StashKey[int]()
ASYNC_MARGIN = 40.0  # s of a test's timeout kept for its task stacks and the bounded clean-up (2 x 10 s)

# Hypothesis keeps its example database and constants cache out of the repository (by default it writes
# .hypothesis/ in the working directory). It reads this variable lazily, on first use, so setting it here,
# before any test runs, is enough; a value set by the caller wins.
HYPOTHESIS_HOME = Path(tempfile.gettempdir()) / "geo-pipeline-hypothesis"
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(HYPOTHESIS_HOME))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--all-tiers",
        action="store_true",
        help="run every tier: unit, agent and integration (the last starts a real Kafka broker)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without --all-tiers, -m or a path into tests/integration, leave the broker tier out."""
    if config.getoption("--all-tiers") or config.getoption("markexpr"):
        return
    if any("integration" in str(arg) for arg in config.args):
        return
    slow = [item for item in items if item.get_closest_marker("integration")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("integration")]


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A test that runs the CLI in-process (`main([...])`) reconfigures the root logger with a handler on
    the stream pytest captured for that test; put the root logger back afterwards, or every later log line
    goes to a closed stream ("--- Logging error ---")."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def local_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo | None]:
    """The broker this session started (None when KAFKA_BOOTSTRAP_SERVERS names an external one)."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield None
        return
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"))
    # The broker runs in its own session, so a SIGTERM to pytest (CI cancelling a job) would orphan it:
    # turn SIGTERM into KeyboardInterrupt, which pytest unwinds through fixture teardown.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        started = time.monotonic()
        info = broker.start(progress=False)
        print(f"\nsession kafka at {info.bootstrap}, started in {time.monotonic() - started:.1f}s")
        yield info
    finally:
        broker.stop()
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def kafka_bootstrap(local_kafka: BrokerInfo | None) -> str:
    """Bootstrap address of a real Kafka broker: KAFKA_BOOTSTRAP_SERVERS, or one started for this session."""
    if local_kafka is None:
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    return local_kafka.bootstrap


# `async def` tests run in a fresh event loop each (no plugin needed: one hook), bounded below the test's
# pytest-timeout so a hang fails with every task's stack instead of pytest-timeout's last resort
@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs: dict[str, Any] = {name: pyfuncitem.funcargs[name] for name in names}
    run_bounded(pyfuncitem.obj(**kwargs), _async_limit(pyfuncitem))
    return True


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """After a test timed out, exit once everything is reported: the threads it left behind (Faust's
    consumer thread) would keep the interpreter waiting for them, and CI with it."""
    if runner.abandoned:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(config.stash.get(EXIT_STATUS, 1) or 1)


def _async_limit(item: pytest.Item) -> float:
    """The test's pytest-timeout (its marker, else the ini value) less room for the stacks and clean-up."""
    marker = item.get_closest_marker("timeout")
    total = float(marker.args[0]) if marker and marker.args else float(item.config.getini("timeout"))
    return max(total - ASYNC_MARGIN, total / 2)
