"""The hot path: input events -> enriched (near-cache hit), events-by-ip (miss) or the dead-letter topic.

Why not a Faust agent: Faust's per-event stream machinery (event objects, acks, offset tracking) costs
about 100 µs an event, more than everything this step does. So ingest is a plain aiokafka
consume-produce loop running inside the Faust worker as a service: its own consumer group
(`<app>-ingest`, the input partitions are shared among workers like any group), one `route` call per
record, sends without waiting, and a commit once the whole batch is delivered (at-least-once: a crash
replays the batch, never loses it). A rebalance waits for the batch in hand before it revokes.

Hits are served from a near cache fed by the compacted resolved topic (every partition, every worker),
so an event for a known IP never takes the second hop; misses go to the table's owner through the
repartition topic, where the cache agent (the only writer of the table) decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError
from mode import Service

from .routing import NearCache, Route, dead_letter, route

log = logging.getLogger(__name__)

MAX_BATCH = 2000  # records per getmany: bounds the replay after a crash and the wait of a rebalance
FETCH_WAIT_MS = 500  # an idle poll returns this often, so a stop is noticed quickly
LINGER_MS = 5  # the producer batches sends for this long: throughput over a few ms of latency
RETRY_DELAY = 1.0  # seconds before a failed batch (or near-cache fetch) is tried again
NEAR_WARM_WAIT = 30.0  # at start, ingest waits this long at most for the near cache to catch up


class _WaitForBatch(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Revocation waits until the batch in hand is delivered and committed, so nobody replays it."""

    def __init__(self, lock: asyncio.Lock) -> None:
        self.lock = lock

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self.lock:
            pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("ingest: assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


def register(geo: Any) -> None:
    """Start the hot path with geo.app (after table recovery), stop it before the app's own clients."""

    class BoundHotPath(HotPath):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(geo, **kwargs)

    geo.app.service(BoundHotPath)


class HotPath(Service):
    """Ingest loop and near-cache feeder of one worker; started with the app, after table recovery."""

    def __init__(self, geo: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.geo = geo
        geo.hotpath = self
        self.near: NearCache = geo.near
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._feeder: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._ends: dict[TopicPartition, int] = {}  # the resolved topic's end offsets at start
        self.caught_up = asyncio.Event()  # the near cache holds what was on the resolved topic at start

    async def on_start(self) -> None:
        s = self.geo.settings
        self._producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap, linger_ms=LINGER_MS, acks="all"
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            group_id=f"{s.app_id}-ingest",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=max(1024 * 1024, s.max_event_bytes + 1024),
        )
        self._feeder = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, auto_offset_reset="earliest")
        await asyncio.gather(self._producer.start(), self._consumer.start(), self._feeder.start())
        self._consumer.subscribe([s.events_topic], listener=_WaitForBatch(self._lock))
        parts = await self._producer.partitions_for(s.resolved_topic)  # waits for the topic's metadata
        tps = [TopicPartition(s.resolved_topic, p) for p in sorted(parts)]
        self._feeder.assign(tps)
        self._ends = {tp: end for tp, end in (await self._feeder.end_offsets(tps)).items() if end > 0}
        log.info("near cache: following %s, %d partitions", s.resolved_topic, len(parts))
        if not self._ends:
            self.caught_up.set()
        self.add_future(self._feed())
        self.add_future(self._ingest())

    async def on_stop(self) -> None:
        # the batch in hand is delivered and committed before the clients close
        async with self._lock:
            clients = [c for c in (self._consumer, self._feeder, self._producer) if c is not None]
            await asyncio.gather(*(c.stop() for c in clients), return_exceptions=True)

    async def _feed(self) -> None:
        """Follow the resolved topic from its beginning: the latest entry per IP is what hits are served."""
        assert self._feeder is not None
        started = time.monotonic()
        while not self.should_stop:
            try:
                batch = await self._feeder.getmany(timeout_ms=FETCH_WAIT_MS, max_records=MAX_BATCH)
            except ConsumerStoppedError:
                return  # on_stop closed it
            except KafkaError as exc:  # a stale near cache serves old answers: keep trying, loudly
                log.warning(
                    "near cache: reading %s failed (%r); retrying", self.geo.settings.resolved_topic, exc
                )
                await asyncio.sleep(RETRY_DELAY)  # back-off before the next fetch, not synchronisation
                continue
            for records in batch.values():
                for record in records:
                    if record.key is not None and _servable(record.value):
                        self.near.put(record.key, record.value)
            if not self.caught_up.is_set():
                await self._check_caught_up(started)

    async def _check_caught_up(self, started: float) -> None:
        """Log once when the start-up backlog of the resolved topic is read (a restart rebuilds it)."""
        assert self._feeder is not None
        for tp, end in self._ends.items():
            if await self._feeder.position(tp) < end:
                return
        self.caught_up.set()
        log.info(
            "near cache: caught up with %s in %.1fs, %d entries",
            self.geo.settings.resolved_topic,
            time.monotonic() - started,
            len(self.near),
        )

    async def _ingest(self) -> None:
        """Any Kafka error rewinds the batch and retries it; anything else crashes the worker (loudly)."""
        assert self._consumer is not None
        # hits served from the start: misses would all take the second hop while the near cache fills
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.caught_up.wait(), NEAR_WARM_WAIT)
        while not self.should_stop:
            try:
                batch = await self._consumer.getmany(timeout_ms=FETCH_WAIT_MS, max_records=MAX_BATCH)
            except ConsumerStoppedError:
                return  # on_stop closed it
            if not batch or self.should_stop:
                continue  # stopping: the batch is not processed, its offsets are not committed
            async with self._lock:
                try:
                    counts = await self._process(batch)
                except KafkaError as exc:
                    self.geo.stats.errors += 1
                    size = sum(len(records) for records in batch.values())
                    log.warning(
                        "ingest: batch of %d not delivered or committed (%r); replaying it", size, exc
                    )
                    self._rewind(batch)
                    counts = None
            if counts is None:
                await asyncio.sleep(RETRY_DELAY)  # back-off before the replay, not synchronisation
                continue
            stats = self.geo.stats
            stats.consumed += counts.total()
            stats.hits += counts[Route.ENRICHED]
            stats.enriched += counts[Route.ENRICHED]
            stats.dead_lettered += counts[Route.DEAD_LETTER]

    def _rewind(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """Seek back to the batch's first offsets, so the next fetch replays it (never skips it)."""
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        for tp, records in batch.items():
            if records and tp in assigned:  # a revoked partition is replayed by its new owner
                self._consumer.seek(tp, records[0].offset)

    async def _process(self, batch: dict[TopicPartition, list[Any]]) -> Counter[Route]:
        """Route and send every record, wait until all are delivered, then commit the batch."""
        assert self._consumer is not None and self._producer is not None
        s = self.geo.settings
        topics = {
            Route.ENRICHED: s.enriched_topic,
            Route.BY_IP: s.by_ip_topic,
            Route.DEAD_LETTER: s.dlq_topic,
        }
        send, near, max_bytes = self._producer.send, self.near, s.max_event_bytes
        counts: Counter[Route] = Counter()
        deliveries = []
        for tp, records in batch.items():
            for r in records:
                where = (tp.topic, tp.partition, r.offset)
                try:
                    kind, key, value = route(r.value, r.key, where, max_bytes, near)
                except Exception as exc:  # never lose an event: anything unexpected becomes a DLQ reason
                    log.exception("ingest failed on %s[%d]@%d", *where)
                    self.geo.stats.errors += 1
                    reason = f"internal error: {type(exc).__name__}"
                    kind, key, value = Route.DEAD_LETTER, r.key, dead_letter(r.value, reason, *where)
                deliveries.append(await send(topics[kind], value, key=key))
                counts[kind] += 1
        await asyncio.gather(*deliveries)
        await self._consumer.commit()
        return counts


def _servable(value: bytes | None) -> bool:
    """Only final answers and recorded failures are published; anything else (or garbage) is not served."""
    if value is None:
        return True  # a tombstone: NearCache.put forgets the IP
    try:
        return bool(json.loads(value).get("status") not in (None, "pending"))
    except (ValueError, AttributeError):
        log.warning("near cache: ignoring a malformed resolved record %r", value[:200])
        return False
