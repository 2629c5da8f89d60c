"""The re-resolve timer: every worker re-emits the due entries of the partitions it actively owns.

It reads only the due-time index the geo table keeps beside its entries (`cache.table.IndexedStore`), whose
keys sort by lane then due time: each lane is read from its start up to the first key not yet due, at most
`capacity` keys per partition, so a tick costs O(due entries), never O(table); the count of unresolved
entries comes from counters the store keeps, never from a scan. Faust allows table writes only inside an
agent's stream iteration, so the timer does not write: it sends a retry request keyed by the IP to the
co-partitioned results topic, and the cache agent decides (`policy.on_retry`) whether an attempt really
starts, which makes re-emission idempotent. A tick never raises (an exception escaping a Faust timer
kills the worker) and is skipped while the app rebalances or recovers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from pipeline.cache.policy import OFFLINE_PROVIDERS, REFRESH_LANE, RETRY_LANE
from pipeline.cache.table import IndexedStore
from pipeline.config.settings import Settings
from pipeline.kafka import faustx
from pipeline.kafka.faustx import StallWatch
from pipeline.messages import encode_reanswer, encode_retry
from pipeline.providers.ipapi import MAX_BATCH  # IPs per API request (ip-api answers 422 past it)
from pipeline.stats import Stats

log = logging.getLogger(__name__)

SCAN_CHUNK = 500  # index keys read between yields to the event loop


def tick_capacity(requests: int, window: float, interval: float, share: float) -> int:
    """How many IPs this worker may re-emit per tick: its share of what the API budget absorbs in one
    interval. At least one, so a tiny share still makes progress."""
    return max(1, math.floor(requests * MAX_BATCH * (interval / window) * share))


class RetryTimer:
    """Re-emits due entries of this worker's active partitions, within its share of the API budget."""

    def __init__(self, app: faust.App, settings: Settings, store: IndexedStore, stats: Stats) -> None:
        self.app, self.settings, self.store, self.stats = app, settings, store, stats
        # ip -> the due time it had when this worker re-emitted it. The cache agent moves the due time when
        # it starts the attempt, so an entry still showing the same due time is one we already asked for:
        # one emission per attempt, however many ticks pass before the agent catches up.
        self.recently: dict[str, float] = {}

    def register(self) -> None:
        every = self.settings.retry_interval
        guarded_timer(self.app, every, "geo-retry-timer", self._tick, "retry tick", settled_only=True)

    async def _tick(self) -> None:
        stats = await self.run_tick()
        self.stats.ticks.append(stats)
        self.stats.ticks_run += 1
        self.stats.tick_seconds += stats["seconds"]
        del self.stats.ticks[:-100]  # the last hundred ticks are plenty for a summary
        log.info("retry tick: %s", " ".join(f"{k}={v:g}" for k, v in stats.items()))

    async def run_tick(self, now: float | None = None) -> dict[str, float]:
        """Read due index keys of active partitions, oldest first per lane, and re-emit up to capacity."""
        started = time.perf_counter()
        s = self.settings
        now = time.time() if now is None else now
        partitions = len(self.store.active_partitions())
        share = partitions / s.partitions
        capacity = (
            tick_capacity(s.budget_requests, s.budget_window, s.retry_interval, share) if partitions else 0
        )
        for ip, due_at in list(self.recently.items()):
            if now - due_at > s.pending_timeout:
                del self.recently[ip]  # the agent never saw our request (lost): let it go out again
        due: list[tuple[str, float, str]] = []  # (lane, due, ip), retry lane first
        scanned = 0
        limit = capacity + len(self.recently)  # per partition: enough to get past ones already emitted
        for lane in (RETRY_LANE, REFRESH_LANE):
            for due_at, ip in self.store.due(lane, now, limit):
                scanned += 1
                if scanned % SCAN_CHUNK == 0:
                    await asyncio.sleep(0)  # yield to the loop: the agents keep running during a long read
                due.append((lane, due_at, ip))
        due.sort()
        emitted = skipped_recent = 0
        for _lane, due_at, ip in due:
            if emitted >= capacity:
                break
            if self.recently.get(ip) == due_at:
                skipped_recent += 1
                continue
            await self.app.producer.send(s.results_topic, ip.encode(), encode_retry(due_at), None, None, None)
            self.recently[ip] = due_at
            emitted += 1
        return {
            "due": len(due),
            "emitted": emitted,
            "skipped_budget": max(0, len(due) - emitted - skipped_recent),
            "skipped_recent": skipped_recent,
            "unresolved": self.store.lane_size(RETRY_LANE),
            "scanned": scanned,
            "partitions": partitions,
            "seconds": time.perf_counter() - started,
        }


SWEEP_EVERY = 10.0  # seconds between version sweeps
SWEEP_CHUNK = 1_000  # entries re-answered per sweep at most: ~100/s, never a burst on the hot path's loop
RELOAD_CHECK_EVERY = 10.0  # seconds between looks at the .mmdb files (a stat each when nothing changed)
STALL_CHECK_EVERY = 30.0  # seconds between stall checks: far below the threshold, cheap (a few requests)


def guarded_timer(
    app: faust.App,
    every: float,
    name: str,
    body: Callable[[], Awaitable[Any]],
    what: str,
    *,
    settled_only: bool = False,
) -> None:
    """Run `body` every `every` seconds as a Faust timer that never raises: an exception escaping a Faust
    timer kills the worker, so a failure is logged and the next run goes on as usual. `settled_only` skips
    runs while the app rebalances or recovers its tables (the partitions being read may move)."""

    async def run() -> None:
        if settled_only and (app.rebalancing or not faustx.recovered(app)):
            log.info("%s skipped: rebalancing or recovering", what)
            return
        try:
            await body()
        except Exception:
            log.exception("%s failed; the next one runs as usual", what)

    app.timer(every, name=name)(run)


def register_stall_check(app: faust.App, watch: StallWatch) -> None:
    """Look for stalled stream partitions every STALL_CHECK_EVERY seconds (the watch logs and remedies)."""
    guarded_timer(app, STALL_CHECK_EVERY, "geo-stall-check", watch.check, "stall check")


class VersionSweep:
    """Re-answers, in chunks, the entries of this worker's partitions that an older version of some offline
    data answered: the store keeps them in a version index, so a sweep reads only what it re-answers.

    A sweep sends a "reanswer" request keyed by the IP to the co-partitioned results topic; the cache agent
    answers it with today's data (`policy.on_reanswer`). Remote answers are never in the index: entries
    waiting for the remote (partial, unresolved) get the new data at their next retry, within the budget.
    """

    def __init__(
        self, app: faust.App, settings: Settings, store: IndexedStore, sources: dict[str, Any]
    ) -> None:
        self.app, self.settings, self.store = app, settings, store
        self.sources = sources  # provider name -> offline source (with `version`)
        self._last: set[str] = set()  # sent by the previous sweep: the agent may not have answered yet

    def register(self) -> None:
        guarded_timer(
            self.app, SWEEP_EVERY, "geo-version-sweep", self._tick, "version sweep", settled_only=True
        )

    async def _tick(self) -> None:
        sent = await self.run_sweep()
        if sent:
            log.info(
                "version sweep: %d entries answered by older offline data sent to be answered again", sent
            )

    async def run_sweep(self) -> int:
        """Send up to SWEEP_CHUNK re-answer requests; returns how many went out."""
        batch: list[str] = []
        for name, source in self.sources.items():
            prefix = OFFLINE_PROVIDERS[name]
            batch += [
                ip
                for ip in self.store.older_versions(prefix, source.version, SWEEP_CHUNK)
                if ip not in self._last
            ]
            if len(batch) >= SWEEP_CHUNK:
                break
        batch = batch[:SWEEP_CHUNK]
        for ip in batch:
            await self.app.producer.send(
                self.settings.results_topic, ip.encode(), encode_reanswer(), None, None, None
            )
        self._last = set(batch)
        return len(batch)


def register_reload(app: faust.App, source: Any) -> None:
    """Reopen replaced offline data files without a restart (`MmdbSource.maybe_reload`), in a thread: a
    changed 60 MB file takes a moment to read and check, and lookups go on meanwhile."""

    async def reload() -> None:
        if await asyncio.to_thread(source.maybe_reload):
            log.info("mmdb: reloaded, now %s", source.version)

    guarded_timer(app, RELOAD_CHECK_EVERY, "geo-mmdb-reload", reload, "mmdb reload check")


def register_progress(app: faust.App, stats: Stats, watch: StallWatch, every: float = 10.0) -> None:
    """A progress line every `every` seconds (with any stalled partition) and a summary when the worker
    stops."""

    @app.timer(every, name="geo-progress")  # type: ignore[untyped-decorator]  # faust is untyped
    async def progress() -> None:
        stalled = watch.line()
        if stalled != "stalled=none":
            log.error("progress: %s %s", stats.line(), stalled)
        else:
            log.info("progress: %s", stats.line())

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode's signal types want a sync receiver
    async def summary(app: Any, **kwargs: Any) -> None:
        log.info("summary: %s %s", stats.line(), watch.line())
