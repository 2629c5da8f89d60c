"""In-memory stand-ins for the aiokafka clients, for agent tests of the hot path and the resolver.

They model what those services rely on and nothing else: a consumer whose `getmany` hands out prepared
batches and remembers seeks and commits; a producer whose record batches are real aiokafka BatchBuilders
and whose deliveries succeed or fail as a test says. Integration tests use the real broker instead.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError
from aiokafka.producer.message_accumulator import BatchBuilder


@dataclass
class Record:
    """The fields of an aiokafka ConsumerRecord the services read."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None = None  # ms, as the producer or the broker stamped it
    headers: tuple[tuple[str, bytes], ...] = ()


def records(
    topic: str, partition: int, values: list[bytes | None], start: int = 0
) -> dict[TopicPartition, list[Record]]:
    """One batch of `values` on one partition, offsets from `start`."""
    tp = TopicPartition(topic, partition)
    return {tp: [Record(topic, partition, start + i, None, v) for i, v in enumerate(values)]}


@dataclass
class FakeConsumer:
    """Hands out `batches` one per `getmany`, then nothing; a seek back puts that batch in front again.
    `stale` makes every commit fail as the group coordinator answers a member of an old generation."""

    batches: list[dict[TopicPartition, list[Record]]]
    commits: int = 0
    committed: list[dict[TopicPartition, int]] = field(default_factory=list)  # explicit offsets, in order
    stale: bool = False
    seeks: list[tuple[TopicPartition, int]] = field(default_factory=list)
    _given: list[dict[TopicPartition, list[Record]]] = field(default_factory=list)

    async def getmany(self, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None) -> Any:
        await asyncio.sleep(0)
        if not self.batches:
            return {}
        batch = self.batches.pop(0)
        if not any(batch is given for given in self._given):
            self._given.append(batch)
        return batch

    def assignment(self) -> set[TopicPartition]:
        return {tp for batch in self._given + self.batches for tp in batch}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Seeking back replays, in order, every batch given out on `tp` from `offset` on (as the broker
        would), unless it is queued already."""
        self.seeks.append((tp, offset))
        again = [
            batch
            for batch in self._given
            if tp in batch
            and batch[tp]
            and batch[tp][0].offset >= offset
            and not any(batch is queued for queued in self.batches)
        ]
        self.batches[0:0] = again

    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        if self.stale:
            raise CommitFailedError("the group has already rebalanced")
        self.commits += 1
        if offsets is not None:
            self.committed.append(dict(offsets))


class FakeCluster:
    def __init__(self, partitions: dict[str, int]) -> None:
        self.counts = partitions
        self.forgotten: set[str] = set()  # topics aiokafka dropped from its metadata (a topic-level error)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return None if topic in self.forgotten else set(range(self.counts.get(topic, 1)))


class FakeProducer:
    """Counts delivered records per topic; `fail(topic)` decides per delivery whether it fails, and how."""

    def __init__(
        self, partitions: dict[str, int], fail: Callable[[str], Exception | None] = lambda topic: None
    ) -> None:
        self.client = type("Client", (), {"cluster": FakeCluster(partitions)})()
        self.fail = fail
        # held: deliveries wait (outcome decided when sent) until `release`, as a slow broker's would
        self.held = False
        self._waiting: list[tuple[asyncio.Future[Any], Exception | None, str, int]] = []
        self.delivered: Counter[str] = Counter()  # records per topic whose delivery succeeded
        self.singles: list[tuple[str, bytes | None, bytes]] = []  # records sent one by one, delivered
        self.partitions_sent: Counter[tuple[str, int]] = Counter()  # records sent in batches per partition
        # the broker's clock minus ours when it stamps records (LogAppendTime); None: it keeps the writer's
        self.broker_ahead: float | None = None

    async def partitions_for(self, topic: str) -> set[int]:
        """aiokafka waits for the broker's metadata of `topic` (here: it answers at once)."""
        cluster = self.client.cluster
        cluster.forgotten.discard(topic)
        return set(cluster.partitions_for_topic(topic))

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(512 * 1024, 0)

    def _deliver(self, topic: str, count: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.held:
            self._waiting.append((future, self.fail(topic), topic, count))
        else:
            self._settle(future, self.fail(topic), topic, count)
        return future

    def _settle(self, future: asyncio.Future[Any], error: Exception | None, topic: str, count: int) -> None:
        if error is None:
            self.delivered[topic] += count
            future.set_result(None)
        else:
            future.set_exception(error)

    def release(self) -> None:
        """Answer every held delivery, and the ones after it at once."""
        self.held = False
        waiting, self._waiting = self._waiting, []
        for future, error, topic, count in waiting:
            self._settle(future, error, topic, count)

    @property
    def waiting(self) -> int:
        """Held deliveries (record batches) not answered yet."""
        return len(self._waiting)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[Any]:
        self.partitions_sent[topic, partition] += batch.record_count()
        return self._deliver(topic, batch.record_count())

    async def send_and_wait(
        self, topic: str, value: bytes | None, key: bytes | None = None, partition: int | None = None
    ) -> Any:
        """Delivered at once; the metadata carries the broker's stamp when `broker_ahead` is set."""
        await self._deliver(topic, 1)
        now = time.time()
        if self.broker_ahead is None:
            return SimpleNamespace(timestamp=int(now * 1000), timestamp_type=0)
        return SimpleNamespace(timestamp=int((now + self.broker_ahead) * 1000), timestamp_type=1)

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> Any:
        future = self._deliver(topic, 1)
        if future.exception() is None:
            self.singles.append((topic, key, value))
        return future
