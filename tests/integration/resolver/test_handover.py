"""The budget across a handover of the resolve partition, with two workers' clocks 30 s apart and the owner
frozen (SIGSTOP) past its session: its successor counts the frozen owner's requests although their time
stamps lie in its future, and the owner, thawed (SIGCONT) with a batch in hand, asks nothing more. The
fake ip-api counts every request per server window; none holds more than the budget."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from pipeline.app import ensure_topics
from pipeline.config.settings import Settings
from pipeline.devtools.fake_ipapi import IpApiServer, ServerConfig
from pipeline.devtools.processes import WorkerProcess
from pipeline.devtools.workloads import public_ips
from pipeline.messages import decode_asked
from tests.support.chaos import FAST_FAILOVER, READY_TIMEOUT, api_requests
from tests.support.kafka import wait_for
from tests.support.pipeline import make_settings, publish, read_topic
from tests.support.workers import faketime_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUDGET = 5  # requests per server window, on the fake ip-api and in the workers
# seconds: longer than a handover (10 s session timeout, a rebalance, the asked log read back), so the
# successor's first chance to ask falls inside the window the frozen owner has just spent
WINDOW = 30.0
AHEAD = "+30s"  # the first owner's clock, relative to everyone else's
ASSIGNED = "resolver: assigned ["
LOADED = "resolver: asked log loaded for resolve partitions [0]"
OWNER_TRIES = 3  # workers "a" and "b": A sorts first in the round-robin assignor; retries cover a slow join
FENCED = "the group moved on before the call"  # the resolver's log line when its fence commit is refused


async def answered(settings: Settings) -> int:
    """Requests whose answers the asked log holds: their resolver has moved on to its next batch."""
    records = await read_topic(settings.kafka_bootstrap, settings.asked_topic)
    asks = (decode_asked(r.value) for r in records)
    return len({a.at for a in asks if a is not None and a.answered})


def assigned_lines(worker: WorkerProcess) -> list[str]:
    return [ln for ln in worker.log_path.read_text(errors="replace").splitlines() if ASSIGNED in ln]


async def owner_after_join(settings: Settings, ahead: WorkerProcess, other: WorkerProcess, seen: int) -> bool:
    """Whether `ahead` holds the resolve partition once `other` joined (`seen`: `ahead`'s assignment lines
    before that)."""
    mine = f"{settings.resolve_topic}[0]"

    def settled() -> tuple[bool, bool] | None:
        a, b = assigned_lines(ahead), assigned_lines(other)
        if len(a) <= seen or not b or (mine in a[-1]) == (mine in b[-1]):
            return None
        return (mine in a[-1], True)

    found = await wait_for(settled, READY_TIMEOUT, interval=0.5, message="the resolve group rebalanced")
    return bool(found[0])


async def test_a_frozen_owner_with_a_clock_ahead_never_makes_a_window_exceed_the_budget(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Worker A runs 30 s ahead and owns the resolve partition under a backlog; once the answers of a
    window's budget are in the asked log (A waits for its budget with its next batch) it is frozen past
    its session, worker B takes the partition over and asks, then A is thawed with its batch in hand: no
    server window holds more than the budget and nobody is banned."""
    ips = public_ips(4000, seed=83, offline_known=False)
    async with IpApiServer(ServerConfig(window=WINDOW, batch_limit=BUDGET)) as api:
        settings = make_settings(
            kafka_bootstrap,
            tmp_path,
            providers=("ipapi", "offline"),
            ipapi_url=api.url,
            budget_requests=BUDGET,
            budget_window=WINDOW,
            pending_timeout=600.0,
            http_timeout=5.0,
        )
        await ensure_topics(settings)
        workdir = tmp_path / "crew"
        workdir.mkdir()
        starts = 0

        def start(name: str, **env: str) -> WorkerProcess:
            nonlocal starts
            starts += 1
            log = workdir / f"{name}.{starts}.log"
            return WorkerProcess(settings, workdir / name, log, GEO_WORKER_NAME=name, **FAST_FAILOVER, **env)

        ahead = start("a", **faketime_env(AHEAD))
        other: WorkerProcess | None = None
        frozen = False
        try:
            await wait_for(ahead.ready, READY_TIMEOUT, message="worker A ready")
            for _ in range(OWNER_TRIES):  # B joins until the partition stays with A
                seen = len(assigned_lines(ahead))
                other = start("b")
                await wait_for(other.ready, READY_TIMEOUT, message="worker B ready")
                if await owner_after_join(settings, ahead, other, seen):
                    break
                await asyncio.to_thread(other.stop)
            else:
                pytest.fail(f"worker A never kept the resolve partition in {OWNER_TRIES} joins of B")
            assert other is not None
            await publish(kafka_bootstrap, settings.events_topic, [ip.encode() for ip in ips])

            # A spends a window's budget (its burst), then waits out the window with a batch in hand
            async def spent_a_window() -> bool:
                return await answered(settings) >= BUDGET

            await wait_for(spent_a_window, 90, interval=0.5, message=api.summary)
            os.kill(ahead.pid, signal.SIGSTOP)
            frozen, frozen_at, spent = True, time.monotonic(), api.requests
            # B takes over after A's session expires, reads the asked log back and asks: a window's budget
            loaded = await wait_for(
                lambda: LOADED in other.log_path.read_text(errors="replace"),
                60,
                message="B loaded the asked log",
            )
            await wait_for(lambda: api.requests >= spent + BUDGET, 3 * WINDOW, message=lambda: api.summary())
            thawed_at = time.monotonic()
            os.kill(ahead.pid, signal.SIGCONT)
            frozen = False
            before_thaw = api.requests
            # A, thawed, rejoins the group (and gets its resolve partition or not); give it a window
            await wait_for(
                lambda: len(assigned_lines(ahead)) > seen + 1 or api.requests >= before_thaw + BUDGET,
                60,
                message="A rejoined after the thaw",
            )
            await wait_for(lambda: api.requests >= before_thaw + BUDGET, 2 * WINDOW + 10, message=api.summary)
            requests = await api_requests(settings)
        finally:
            if frozen:
                os.kill(ahead.pid, signal.SIGCONT)
            await asyncio.to_thread(ahead.stop)
            if other is not None:
                await asyncio.to_thread(other.stop)
    by_a = [r for r in requests if r.by.endswith(f":{ahead.pid}")]
    fenced = ahead.log_path.read_text(errors="replace").count(FENCED)
    print(
        f"\nhandover with A {AHEAD}: frozen {thawed_at - frozen_at:.1f}s (B loaded the asked log: "
        f"{bool(loaded)}); requests asked by A {len(by_a)}, by anyone {len(requests)}; batches A's fence "
        f"stopped after the thaw: {fenced}; API {api.summary()}"
    )
    assert api.max_in_window() <= BUDGET
    assert api.violations == 0 and api.count_429 == 0 and not api.banned
