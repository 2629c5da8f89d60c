"""One input batch of the hot path: routed into output record batches (`build`), then delivered and
committed (`Built.settle`), two steps the loop in `service.py` overlaps across consecutive batches.

Why two steps: a batch's delivery and commit are mostly waiting for the broker, and routing the next
batch is mostly computing; doing them one after the other left over half of a drain's wall time idle
(docs/benchmarks.md). What keeps this at-least-once: a batch's offsets are committed only after every one
of its records is delivered and only after the batch before it settled (`settle` waits for its
predecessor first, so a failed batch fails every later one: none of them commits, all replay). A batch
whose successor was already handed out when it was delivered leaves its commit to that successor (one
commit for both); a failure then replays it too, since it is not committed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer, TopicPartition

from pipeline.config.settings import Settings
from pipeline.hotpath.outputs import Outputs
from pipeline.hotpath.routing import Route, Router
from pipeline.hotpath.shapes import FORMAT_HEADER
from pipeline.kafka.partitioner import key_hash
from pipeline.messages import encode_seen
from pipeline.stats import Stats

Batch = dict[TopicPartition, list[Any]]  # what AIOKafkaConsumer.getmany returns
# batches one commit may cover at most: with UNSETTLED_MAX (3) behind the batch being routed, a crash
# replays at most 5 x 2,000 records (one carried, three unsettled, the one being routed)
CARRY_MAX = 2


class Committer(Protocol):
    """The part of the ingest consumer a batch commits through."""

    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None: ...

    def assignment(self) -> set[TopicPartition]: ...


@dataclass
class Tally:
    """What routing one batch counted, added to the worker's stats once the batch is committed."""

    enriched: int = 0
    dead: int = 0
    hits: int = 0
    new: int = 0
    skipped: int = 0
    recalled: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    dead_by_reason: Counter[str] = field(default_factory=Counter)
    countries: Counter[str] = field(default_factory=Counter)
    salvaged: int = 0  # records dead-lettered because their topic refused them for good (set on delivery)

    def add_to(self, stats: Stats) -> None:
        salvaged = self.salvaged
        stats.consumed += self.enriched + self.dead
        stats.hits += self.hits
        stats.new += self.new
        stats.enriched += self.enriched
        stats.dead_lettered += self.dead + salvaged
        stats.fields_failed.update(self.failed)
        stats.ips_skipped += self.skipped
        stats.recalled += self.recalled
        stats.dead_by_reason.update(self.dead_by_reason)
        stats.countries.update(self.countries)
        if salvaged:
            stats.dead_by_reason["unwritable"] += salvaged


@dataclass
class Built:
    """A routed batch whose output batches are handed to the producer, not yet known delivered."""

    batch: Batch
    out: Outputs
    fresh: list[bytes]  # its first sights, forgotten again if it is not delivered (`Router.undo`)
    tally: Tally
    seconds: dict[str, float] = field(default_factory=dict)  # deliver and commit, once settled
    # the batch routed after it, when that was handed out before this one was delivered: it commits
    # for both (one commit instead of two; a commit is a broker round trip the loop waits for)
    successor: Built | None = None
    committed: bool = False  # its offsets are committed (by itself or, once that settles, a successor)
    # offsets and tallies of batches before it that left their commit to it
    carried: dict[TopicPartition, int] = field(default_factory=dict)
    carried_tallies: list[Tally] = field(default_factory=list)

    def next_offsets(self) -> dict[TopicPartition, int]:
        return {tp: records[-1].offset + 1 for tp, records in self.batch.items() if records}

    async def settle(
        self,
        consumer: Committer,
        stats: Stats,
        dlq_topic: str,
        before: asyncio.Future[None] | None = None,
    ) -> None:
        """Wait for the batch before it (its failure is this one's), deliver every output, then commit
        (or leave the commit to the successor, at most CARRY_MAX batches) and count it. A KafkaError
        means: replay every batch not committed."""
        if before is not None:
            await asyncio.shield(before)  # its own task: our cancellation must not cancel its commit
        started = time.perf_counter()
        self.tally.salvaged = await self.out.flush(dlq_topic, stats)
        delivered = time.perf_counter()
        offsets = {**self.carried, **self.next_offsets()}
        tallies = [*self.carried_tallies, self.tally]
        if self.successor is not None and len(tallies) < CARRY_MAX:
            self.successor.carried, self.successor.carried_tallies = offsets, tallies
            self.seconds = {"deliver": delivered - started}
            return
        assigned = consumer.assignment()
        # a revocation waits for every unsettled batch, so its partitions are still ours; the filter only
        # matters after a failure let a rebalance through, and then the new owner replays them anyway
        await consumer.commit({tp: n for tp, n in offsets.items() if tp in assigned})
        self.committed = True
        self.seconds = {"deliver": delivered - started, "commit": time.perf_counter() - delivered}
        for tally in tallies:
            tally.add_to(stats)


async def build(batch: Batch, router: Router, producer: AIOKafkaProducer, settings: Settings) -> Built:
    """Route every record of `batch` into per-partition output batches and hand them all to the
    producer (in order: the next batch's records queue behind them); its first sights travel with it."""
    s = settings
    out = Outputs(producer)
    enriched_n = await out.partitions(s.enriched_topic)
    seen_n = await out.partitions(s.seen_topic, s.partitions)  # co-partitioned with the table
    dlq_n = await out.partitions(s.dlq_topic)
    now = time.time()
    seen_value = encode_seen(now, s.worker_label)  # a first sight: this worker has no entry for it
    touch_value = encode_seen(now, s.worker_label, first=False)  # it has one; last_seen moves
    router.begin()
    route, add = router.route, out.add
    fmt = (FORMAT_HEADER, router.format_version.encode())
    only_fmt = [fmt]  # most inputs carry no headers: one shared list (never changed), none per event
    dead = enriched = 0
    for tp, records in batch.items():
        topic, partition = tp.topic, tp.partition
        for record in records:
            where = (topic, partition, record.offset)
            kind, key, value, h, owed = route(record.value, record.key, where, now)
            headers = list(record.headers) if record.headers else None
            if kind is Route.DEAD_LETTER:
                dead += 1
                p = key_hash(key) % dlq_n if key is not None else random.randrange(dlq_n)
                if not add(s.dlq_topic, p, key, value, record, headers):
                    await out.spill(s.dlq_topic, p, key, value, record, headers)
                continue
            enriched += 1
            # the input's headers (a traceparent) and time travel with the event; our format header
            # replaces any the input carried (an enriched record fed back in)
            headers = [*(x for x in headers if x[0] != FORMAT_HEADER), fmt] if headers else only_fmt
            stamp = record.timestamp if record.timestamp is not None and record.timestamp >= 0 else None
            p = h % enriched_n
            if not add(s.enriched_topic, p, key, value, record, headers, stamp):
                await out.spill(s.enriched_topic, p, key, value, record, headers, stamp)
            for ip, ip_hash, why in owed:
                seen = seen_value if why is Route.NEW else touch_value
                if not add(s.seen_topic, ip_hash % seen_n, ip, seen, record):
                    await out.spill(s.seen_topic, ip_hash % seen_n, ip, seen, record)
    await out.send_open()
    tally = Tally(
        enriched=enriched,
        dead=dead,
        hits=router.hits,
        new=router.new,
        skipped=router.skipped,
        recalled=router.recalled,
        failed=Counter(router.failed),
        dead_by_reason=Counter(router.dead),
        countries=router.countries(),
    )
    return Built(batch, out, router.take_fresh(), tally)
