"""The re-resolve timer: every worker re-emits the due entries of the partitions it actively owns.

It reads only the due-time index (`geo-schedule`), whose keys sort by lane then due time, so a tick stops
at the first entry not yet due: O(due entries), never O(table) (fact 4). It never writes a table (fact 1):
it sends a retry request keyed by the IP to the co-partitioned results topic, and the cache agent decides
(`policy.on_retry`) whether an attempt really starts, which makes re-emission idempotent. A tick never
raises (fact 5) and is skipped while the app rebalances or recovers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Any

from .ipapi import MAX_BATCH as RESOLVE_BATCH  # IPs per API request
from .policy import RETRY_LANE, parse_schedule_key

log = logging.getLogger(__name__)

SCAN_CHUNK = 500  # index keys read between yields to the event loop


def tick_capacity(requests: int, window: float, interval: float, share: float) -> int:
    """How many IPs this worker may re-emit per tick: its share of what the API budget absorbs in one
    interval. At least one, so a tiny share still makes progress."""
    return max(1, math.floor(requests * RESOLVE_BATCH * (interval / window) * share))


def register(geo: Any) -> None:
    app = geo.app
    s = geo.settings
    # ip -> the due time it had when this worker re-emitted it. The cache agent moves the due time when it
    # starts the attempt, so an entry still showing the same due time is one we already asked for: one
    # emission per attempt, however many ticks pass before the agent catches up.
    recently: dict[str, float] = {}

    @app.timer(s.retry_interval, name="geo-retry-timer")  # type: ignore[untyped-decorator]  # faust is untyped
    async def retry_timer() -> None:
        if app.rebalancing or not _recovered(app):
            log.info("retry tick skipped: rebalancing or recovering")
            return
        try:
            stats = await run_tick(geo, recently)
        except Exception:  # fact 5: an exception escaping a timer kills the worker
            log.exception("retry tick failed; the next tick runs as usual")
            return
        geo.stats.ticks.append(stats)
        log.info("retry tick: %s", " ".join(f"{k}={v:g}" for k, v in stats.items()))


async def run_tick(geo: Any, recently: dict[str, float], now: float | None = None) -> dict[str, float]:
    """Scan due index entries of active partitions, oldest first per lane, and re-emit up to capacity."""
    started = time.perf_counter()
    s = geo.settings
    now = time.time() if now is None else now
    store = geo.schedule.data
    dbs = list(store._dbs_for_actives())  # active partitions only: standbys are another worker's job
    share = len(dbs) / s.partitions
    capacity = tick_capacity(s.budget_requests, s.budget_window, s.retry_interval, share) if dbs else 0
    for ip, due_at in list(recently.items()):
        if now - due_at > s.pending_timeout:
            del recently[ip]  # the agent never saw our request (lost): let it go out again
    due: list[tuple[str, float, str]] = []  # (lane, due, ip)
    unresolved = 0
    scanned = 0
    for db in dbs:
        for raw_key, _ in store._visible_items(db):
            scanned += 1
            if scanned % SCAN_CHUNK == 0:
                await asyncio.sleep(0)  # yield to the loop: the agents keep running during a long scan
            lane, due_at, ip = parse_schedule_key(raw_key.decode())
            if lane == RETRY_LANE:
                unresolved += 1
            if due_at > now:
                if lane == RETRY_LANE:
                    continue  # later retry-lane keys are not due either; keep counting unresolved
                break  # refresh lane: everything after this is later still
            due.append((lane, due_at, ip))
    due.sort()
    emitted = skipped_recent = 0
    for _lane, due_at, ip in due:
        if emitted >= capacity:
            break
        if recently.get(ip) == due_at:
            skipped_recent += 1
            continue
        await geo.app.producer.send(
            s.results_topic, ip.encode(), json.dumps({"type": "retry"}).encode(), None, None, None
        )
        recently[ip] = due_at
        emitted += 1
    return {
        "due": len(due),
        "emitted": emitted,
        "skipped_budget": max(0, len(due) - emitted - skipped_recent),
        "skipped_recent": skipped_recent,
        "unresolved": unresolved,
        "scanned": scanned,
        "partitions": len(dbs),
        "seconds": time.perf_counter() - started,
    }


def _recovered(app: Any) -> bool:
    recovery = getattr(app.tables, "recovery", None)
    completed = getattr(recovery, "completed", None)
    return completed is None or completed.is_set()


def register_progress(geo: Any, every: float = 10.0) -> None:
    """A progress line every `every` seconds and a summary when the worker stops."""
    app = geo.app

    @app.timer(every, name="geo-progress")  # type: ignore[untyped-decorator]  # faust is untyped
    async def progress() -> None:
        log.info("progress: %s", geo.stats.line())

    @app.on_before_shutdown.connect  # type: ignore[untyped-decorator]  # faust is untyped
    async def summary(app: Any, **kwargs: Any) -> None:
        log.info("summary: %s", geo.stats.line())
