"""The hot path: every input event is enriched here, once, by the worker that consumed it.

Why not a Faust agent: Faust's per-event stream machinery (event objects, acks, offset tracking) costs
more than everything this step does. So ingest is a plain aiokafka consume-produce loop running inside
the worker as a service, in its own consumer group (`<app>-ingest`: the input partitions are shared among
workers like any group's). Per input batch it routes each record with `routing.Router` (pure), appends the
outputs to one record batch per output partition (no per-record future or partitioner call: the key hash
is cached per IP), sends those batches, waits until every one is delivered, then commits the batch's own
offsets: at-least-once, a crash replays the batch, never loses it (`batch.py`). The delivery and commit
of up to three batches run while the next is routed. A rebalance waits for the batches in hand before it
revokes.

Outputs: every valid event goes to the enriched topic in the configured shape, keyed by its (first) IP
(input-partition order per IP kept) or by the input's key (GEO_ENRICHED_KEY), with the input's headers,
the input's timestamp and a `geo-format` header naming the shape; each IP new to this worker also goes,
once, to `<app>-ips-seen` for the table's owner; bad input goes to the dead-letter topic with the reason
and the input's headers. A group-less consumer follows the resolved topic on every worker into
the worker's replica of it (RocksDB on disk, `replica.py`: it keeps its offsets, so a restart reads only
what it missed) and refreshes the near cache's copies; the near cache also holds this worker's own
provisional entries.

Failures: a delivery that failed for a reason that may pass (broker down, leader moving) rewinds and
replays the batch with back-off, at most MAX_REPLAYS times before the worker stops with a clear error; a
record that can never be written (too large, topic not authorised) goes to the dead-letter topic instead,
or, when that too refuses it, is logged loudly with its coordinates and counted, and the batch moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError
from mode import Service

from pipeline.config.settings import Settings
from pipeline.hotpath.batch import Batch, Built, build
from pipeline.hotpath.outputs import partition_count
from pipeline.hotpath.replica import Replica
from pipeline.hotpath.routing import NearCache, Router
from pipeline.kafka.config import client_kwargs
from pipeline.messages import encode_seen
from pipeline.stats import Stats

log = logging.getLogger(__name__)

INPUT_BATCH = 2000  # records per getmany: bounds the replay after a crash and the wait of a rebalance
FETCH_WAIT_MS = 500  # an idle poll returns this often, so a stop is noticed quickly
LINGER_MS = 5  # the producer batches sends for this long: throughput over a few ms of latency
OUTPUT_BATCH_BYTES = 512 * 1024  # one record batch per output partition and input batch, under 1 MiB
REPLAY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 30.0, 30.0, 30.0)  # back-off before each replay
NEAR_WARM_WAIT = 30.0  # at start, ingest waits this long at most for the replica to catch up
# batches being delivered and committed while the next is routed: the broker's work overlaps ours, and
# with three a slow acknowledgement no longer stops the routing (one: the loop waited 0.5-1.4 s of a 2-3 s
# drain for deliveries; docs/benchmarks.md). With CARRY_MAX a crash replays at most 5 x INPUT_BATCH.
UNSETTLED_MAX = 3
# a batch's steps, timed (stage_seconds); deliver and commit overlap the next batch's routing, and wait
# is what the loop still waits for them
STAGES = ("fetch", "route and build", "wait", "deliver", "commit")


class _WaitForBatch(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Revocation waits until the batch being routed and every batch before it are delivered and
    committed, so nobody replays them."""

    def __init__(self, lock: asyncio.Lock, settled: Callable[[], Awaitable[None]]) -> None:
        self.lock, self.settled = lock, settled

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self.lock:
            await self.settled()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("ingest: assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


class HotPath(Service):
    """Ingest loop and near-cache feeder of one worker; started with the app, before table recovery (it
    reads none of the table: seen records wait on their topic until the cache agent runs)."""

    def __init__(
        self, settings: Settings, stats: Stats, router: Router, replica: Replica, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.settings, self.stats, self.router, self.replica = settings, stats, router, replica
        self.near: NearCache = router.near
        self.lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._feeder: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._ends: dict[TopicPartition, int] = {}  # the resolved topic's end offsets at start
        self.replay_delays = REPLAY_DELAYS
        self.caught_up = asyncio.Event()  # the replica holds what was on the resolved topic at start
        self.catch_up_records = 0  # resolved records read to catch up at start (the delta after a restart)
        self.catch_up_seconds: float | None = None  # how long that took
        # wall seconds of the batches by stage (fetch: from asking to a non-empty batch): logged at stop,
        # the breakdown `bench` prints beside its rates (no profiler in the way)
        self.stage_seconds = dict.fromkeys(STAGES, 0.0)
        self.batches = 0
        # routed batches whose delivery and commit run behind the next one's routing, oldest first
        self._unsettled: deque[tuple[Built, asyncio.Future[None]]] = deque()
        self._carried: list[Built] = []  # settled batches whose commit a later, unsettled batch makes

    async def on_start(self) -> None:
        s = self.settings
        self._producer = AIOKafkaProducer(
            **client_kwargs(s),
            linger_ms=LINGER_MS,
            acks="all",
            max_batch_size=OUTPUT_BATCH_BYTES,
        )
        self._consumer = AIOKafkaConsumer(
            **client_kwargs(s),
            group_id=f"{s.app_id}-ingest",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=max(1024 * 1024, s.max_event_bytes + 1024),
        )
        self._feeder = AIOKafkaConsumer(**client_kwargs(s), auto_offset_reset="earliest")
        await asyncio.gather(self._producer.start(), self._consumer.start(), self._feeder.start())
        for topic in (s.enriched_topic, s.seen_topic, s.dlq_topic):
            await self._producer.partitions_for(topic)  # metadata before the first batch is built
        self._consumer.subscribe([s.events_topic], listener=_WaitForBatch(self.lock, self.settled))
        parts = await self._producer.partitions_for(s.resolved_topic)
        tps = [TopicPartition(s.resolved_topic, p) for p in sorted(parts)]
        self._feeder.assign(tps)
        ends = await self._feeder.end_offsets(tps)
        starts = await self._resume(tps, ends)
        self._ends = {tp: end for tp, end in ends.items() if end > starts[tp]}
        behind = sum(end - starts[tp] for tp, end in self._ends.items())
        log.info("replica: following %s, %d records behind", s.resolved_topic, behind)
        if not self._ends:  # nothing was published while it was down (or ever): caught up already
            self._announce_caught_up(0.0)
        self.add_future(self._feed())
        self.add_future(self._ingest())
        self.add_future(self._resend_overdue())

    async def on_stop(self) -> None:
        async with self.lock:  # the batches in hand are delivered and committed before the clients close
            await self.settled()
            while self._unsettled and _settled_ok(self._unsettled[0][1]):
                self._settle_done()  # counted in the stage times
            failed = sum(not _settled_ok(task) for _, task in self._unsettled)  # reads every failure
            if failed:
                log.warning("ingest: %d batches not delivered at stop: the next owner replays them", failed)
        if self.batches:
            stages = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in self.stage_seconds.items())
            log.info("ingest: time by stage over %d batches: %s", self.batches, stages)
        # not under the lock: leaving the group revokes our partitions, and revocation waits for the lock
        clients = [c for c in (self._consumer, self._feeder, self._producer) if c is not None]
        await asyncio.gather(*(c.stop() for c in clients), return_exceptions=True)
        self.replica.close()  # after the feeder stopped: nothing writes it any more

    async def _resume(
        self, tps: list[TopicPartition], ends: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """Point the feeder where the replica stopped reading (returned); a stored offset the topic does
        not have (recreated, truncated) or a replica too old to trust starts it over from the beginning."""
        assert self._feeder is not None
        self.replica.open(time.time())
        stored = self.replica.offsets()
        starts = await self._feeder.beginning_offsets(tps)
        if any(not starts[tp] <= stored.get(tp.partition, starts[tp]) <= ends[tp] for tp in tps):
            log.warning("replica: its offsets do not fit %s any more; rebuilding it", tps[0].topic)
            self.replica.reset()
            stored = {}
        positions = {tp: stored.get(tp.partition, starts[tp]) for tp in tps}
        for tp, position in positions.items():
            self._feeder.seek(tp, position)
        return positions

    # -- for the metrics and readiness endpoints (pipeline/web/server.py); the loops never call these -----

    async def lag(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> input records not yet consumed, per partition this worker is assigned:
        the high watermark of the last fetch minus the position (a partition never fetched is left out)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        lags: dict[tuple[str, int], int] = {}
        for tp in sorted(consumer.assignment()):
            high = consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = await asyncio.wait_for(consumer.position(tp), 1.0)
            except (KafkaError, TimeoutError, AssertionError):  # revoked or being reset meanwhile
                continue
            lags[tp.topic, tp.partition] = max(0, high - position)
        return lags

    async def broker_reachable(self, timeout: float) -> bool:
        """Whether a metadata request through this worker's own producer is answered within `timeout`."""
        if self._producer is None:
            return False
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout)
        except (KafkaError, TimeoutError, OSError):
            return False
        return True

    # -- the replica's feed ----------------------------------------------------------------------------

    async def _feed(self) -> None:
        """Follow the resolved topic into the replica (the latest entry per IP is what hits are served)
        and refresh the near cache's copy of each IP it holds."""
        assert self._feeder is not None
        started = time.monotonic()
        while not self.should_stop:
            try:
                batch = await self._feeder.getmany(timeout_ms=FETCH_WAIT_MS, max_records=INPUT_BATCH)
            except ConsumerStoppedError:
                return  # on_stop closed it
            except KafkaError as exc:  # a stale replica serves old answers: keep trying, loudly
                log.warning("replica: reading %s failed (%r); retrying", self.settings.resolved_topic, exc)
                await self.sleep(1.0)  # back-off before the next fetch, not synchronisation
                continue
            updates = [
                (record.key, record.value)
                for records in batch.values()
                for record in records
                if record.key is not None and _servable(record.value)
            ]
            if batch:  # the offsets move past skipped (malformed) records too
                ends = {tp.partition: records[-1].offset + 1 for tp, records in batch.items() if records}
                self.replica.apply(updates, ends, time.time())
            for ip, value in updates:
                self.near.refresh(ip, value)
            if not self.caught_up.is_set():
                self.catch_up_records += sum(len(records) for records in batch.values())
                await self._check_caught_up(started)

    async def _check_caught_up(self, started: float) -> None:
        """Announce it once the start-up backlog of the resolved topic is read (after a restart: the
        records published while the worker was down)."""
        assert self._feeder is not None
        for tp, end in self._ends.items():
            if await self._feeder.position(tp) < end:
                return
        self._announce_caught_up(time.monotonic() - started)

    def _announce_caught_up(self, seconds: float) -> None:
        self.catch_up_seconds = seconds
        self.caught_up.set()
        log.info(
            "replica: caught up with %s in %.1fs (%d records read%s)",
            self.settings.resolved_topic,
            seconds,
            self.catch_up_records,
            ", rebuilt from the beginning" if self.replica.rebuilt else "",
        )

    # -- ingest ---------------------------------------------------------------------------------------

    async def _resend_overdue(self) -> None:
        """Send again the IPs whose first sight never got the owner's answer within the pending timeout.

        Why: a seen record can be lost on its way into the table (a Faust consumer that skips a record
        while it rebalances was measured once in 15 two-worker starts), and an IP that is never seen again
        would then have its events enriched but never an entry. The owner's own timer covers everything
        after the entry exists; this covers the step before it. Costs one pass over the near cache.
        """
        assert self._producer is not None
        every = max(1.0, self.router.resend_after / 4)
        while not self.should_stop:
            await self.sleep(every)
            overdue = self.router.overdue(time.time())
            if not overdue or self.should_stop:
                continue
            s = self.settings
            value = encode_seen(time.time(), s.worker_label)
            try:
                partitions = await partition_count(self._producer, s.seen_topic, s.partitions)
                sends = [
                    await self._producer.send(s.seen_topic, value, key=ip, partition=h % partitions)
                    for ip, h in overdue
                ]
                await asyncio.gather(*sends)
            except KafkaError as exc:  # they stay marked: sent again after another pending timeout
                log.warning("ingest: resending %d unanswered first sights failed (%r)", len(overdue), exc)
                continue
            log.info(
                "ingest: %d first sights got no answer from the table's owner in time: sent again",
                len(overdue),
            )

    async def _ingest(self) -> None:
        """Fetch and route batch after batch while the one before is delivered and committed (at most
        UNSETTLED_MAX behind); a failed delivery replays from the first batch not committed, with back-off."""
        assert self._consumer is not None
        # hits served from the start: a restarted worker would otherwise re-send every IP as new
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.caught_up.wait(), NEAR_WARM_WAIT)
        replays = 0
        while not self.should_stop:
            asked = time.perf_counter()
            try:
                batch = await self._consumer.getmany(timeout_ms=FETCH_WAIT_MS, max_records=INPUT_BATCH)
            except ConsumerStoppedError:
                return  # on_stop closed it
            if self.should_stop:
                continue  # stopping: the batch is not processed, its offsets are not committed
            if batch:
                self.stage_seconds["fetch"] += time.perf_counter() - asked
            elif not self._unsettled:
                continue
            async with self.lock:
                if self.should_stop:  # stopped while we waited for the lock: the clients are closing
                    continue
                try:
                    if batch:
                        self._launch(await self._build(batch))
                    # idle: what is in flight settles now, not when the next event comes
                    replays = 0 if await self._settle(UNSETTLED_MAX if batch else 0) else replays
                except KafkaError as exc:
                    size = await self._recover(batch)
                    if replays >= len(self.replay_delays):
                        raise RuntimeError(
                            f"ingest: a batch failed {replays + 1} times ({exc!r}); stopping"
                        ) from exc
                    self.stats.replays += 1
                    delay = self.replay_delays[replays]
                    log.warning(
                        "ingest: %d records not delivered (%r); replay %d in %.1fs",
                        size,
                        exc,
                        replays + 1,
                        delay,
                    )
                    replays += 1
                else:
                    continue
            await self.sleep(delay)  # back-off before the replay, outside the lock a rebalance waits on

    async def _build(self, batch: Batch) -> Built:
        assert self._producer is not None
        started = time.perf_counter()
        built = await build(batch, self.router, self._producer, self.settings)
        self.stage_seconds["route and build"] += time.perf_counter() - started
        return built

    def _launch(self, built: Built) -> None:
        """Start delivering and committing `built` behind the batches still unsettled."""
        assert self._consumer is not None
        before = None
        if self._unsettled:
            last, before = self._unsettled[-1]
            last.successor = built  # if it is still being delivered, this one commits for both
        settle = built.settle(self._consumer, self.stats, self.settings.dlq_topic, before)
        self._unsettled.append((built, asyncio.ensure_future(settle)))

    async def _settle(self, keep: int) -> bool:
        """Wait until at most `keep` batches are unsettled; whether any settled. Raises the KafkaError of
        the first one that failed (the ones after it failed with it)."""
        waited = time.perf_counter()
        settled = False
        while len(self._unsettled) > keep:
            await asyncio.shield(self._unsettled[0][1])  # a cancelled loop must not cancel a commit half done
            self._settle_done()
            settled = True
        self.stage_seconds["wait"] += time.perf_counter() - waited
        return settled

    async def settled(self) -> None:
        """Every batch handed out is delivered and committed, or failed (the loop replays it)."""
        if self._unsettled:
            await asyncio.wait([task for _, task in self._unsettled])

    async def _recover(self, batch: Batch) -> int:
        """A batch failed: let the rest finish, forget the first sights of every batch not committed (and
        of `batch`, if building it failed), rewind to their first offsets. Records to replay."""
        await self.settled()
        failed: list[Built] = []
        while self._unsettled:
            built, task = self._unsettled[0]
            if failed or not _settled_ok(task):
                failed.append(self._unsettled.popleft()[0])
            else:
                self._settle_done()  # committed before the failure (or carried: replayed with it)
        failed[0:0], self._carried = self._carried, []
        batches = [built.batch for built in failed]
        if batch and not any(batch is b for b in batches):
            batches.append(batch)
        for built in failed:
            built.out.abandon()
        self.router.undo(*(built.fresh for built in failed))
        self._rewind(batches)
        return sum(len(records) for b in batches for records in b.values())

    def _settle_done(self) -> None:
        built, _ = self._unsettled.popleft()
        if built.committed:
            self._carried.clear()  # its commit covered theirs
        else:
            self._carried.append(built)
        for stage, seconds in built.seconds.items():
            self.stage_seconds[stage] += seconds
        self.batches += 1

    def _rewind(self, batches: list[Batch]) -> None:
        """Seek back to the first offset each partition has in `batches` (oldest first), so the next
        fetch replays them (never skips one)."""
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        firsts: dict[TopicPartition, int] = {}
        for batch in batches:
            for tp, records in batch.items():
                if records:
                    firsts.setdefault(tp, records[0].offset)
        for tp, offset in firsts.items():
            if tp in assigned:  # a revoked partition is replayed by its new owner
                self._consumer.seek(tp, offset)

    async def process(self, batch: Batch) -> None:
        """Route `batch`, deliver it and commit it, on its own (tests; the loop overlaps batches)."""
        self._launch(await self._build(batch))
        await self._settle(0)


def _settled_ok(settle: asyncio.Future[None]) -> bool:
    """A finished settle task succeeded: its batch was delivered and committed, or delivered with its
    commit left to the next batch (which may still fail: see `_recover`)."""
    return not settle.cancelled() and settle.exception() is None


def _servable(value: bytes | None) -> bool:
    """A resolved record the replica may serve: a JSON entry (or a tombstone); garbage is skipped."""
    if value is None:
        return True  # a tombstone: NearCache.learn forgets the IP
    try:
        data = json.loads(value)
        return (
            isinstance(data, dict) and isinstance(data.get("ip"), str) and isinstance(data.get("status"), str)
        )
    except (ValueError, RecursionError):
        log.warning("replica: ignoring a malformed resolved record %r", value[:200])
        return False
