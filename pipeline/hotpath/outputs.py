"""The output of one input batch: record batches per output partition, delivered together, and what
happens to records a topic refuses for good.

Why batches: appending to one aiokafka record batch per (topic, partition) costs no per-record future and
no partitioner call, which is most of what sending a record costs. Why salvage: a batch refused for a
reason that retrying cannot fix (a record too large, a topic not authorised) would otherwise make the hot
path replay its input forever; its records are tried one by one and each refused one is dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    CorruptRecordException,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    PolicyViolationError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
)

from pipeline.messages import dead_letter
from pipeline.stats import Stats

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]] | None  # aiokafka's record builder takes a list (None: no headers)
# (key, value, the input record it came from, headers, timestamp in ms or None: the producer's clock)
Row = tuple[bytes | None, bytes, Any, Headers, int | None]

# what the broker or the client says of a record or a topic that no retry can fix; anything else (a
# timeout, a leader moving, the broker down) may pass, and the batch is replayed
PERMANENT_ERRORS = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
    InvalidTopicError,
    TopicAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    PolicyViolationError,
)


class PartitionCountChanged(RuntimeError):
    """A topic co-partitioned with the table no longer has the partition count checked at start."""


async def partition_count(producer: AIOKafkaProducer, topic: str, expected: int | None = None) -> int:
    """Partitions of `topic`: the producer's cached metadata, or, when it has none (aiokafka drops a topic
    after a topic-level error: an ACL change, a broker still loading), the broker's answer waited for
    (KafkaTimeoutError: the input batch is replayed). Never guessed: a record routed by key to a guessed
    partition lands where nothing looks for it. `expected` is the count the topic contract checked at
    start (topics co-partitioned with the table): any other count stops the worker with the reason."""
    found = producer.client.cluster.partitions_for_topic(topic)
    if not found:
        found = await producer.partitions_for(topic)
    if expected is not None and len(found) != expected:
        raise PartitionCountChanged(
            f"{topic} has {len(found)} partitions, the table {expected}: records routed by key would "
            "land where the table's owner never looks; restore the count (pipeline/kafka/topics.py)"
        )
    return len(found)


class Outputs:
    """The output of one input batch: one open record batch per (topic, partition), sent when full or at
    the end; each sent batch keeps its rows, so a batch refused for good can be salvaged record by record."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._open: dict[tuple[str, int], tuple[Any, list[Row]]] = {}
        self._sent: list[tuple[asyncio.Future[Any], str, list[Row]]] = []

    async def partitions(self, topic: str, expected: int | None = None) -> int:
        return await partition_count(self._producer, topic, expected)

    def add(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes,
        record: Any,
        headers: Headers = None,
        timestamp: int | None = None,
    ) -> bool:
        """Append to the open batch of (topic, partition); False when it is full (call `spill`).
        `timestamp` in ms (the input record's, for enriched records), None for the producer's clock."""
        found = self._open.get((topic, partition))
        if found is None:
            found = self._open[topic, partition] = (self._producer.create_batch(), [])
        if found[0].append(key=key, value=value, timestamp=timestamp, headers=headers) is None:
            return False
        found[1].append((key, value, record, headers, timestamp))
        return True

    async def spill(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes,
        record: Any,
        headers: Headers = None,
        timestamp: int | None = None,
    ) -> None:
        """Send the full batch of (topic, partition) and start a new one with this record."""
        builder, rows = self._open.pop((topic, partition))
        self._sent.append((await self._producer.send_batch(builder, topic, partition=partition), topic, rows))
        if not self.add(topic, partition, key, value, record, headers, timestamp):
            raise AssertionError("a record did not fit an empty batch")  # an empty batch takes any record

    async def send_open(self) -> None:
        """Hand every open batch to the producer, now: a later input batch's records for the same
        partition must queue behind these (the order per key)."""
        for (topic, partition), (builder, rows) in self._open.items():
            self._sent.append(
                (await self._producer.send_batch(builder, topic, partition=partition), topic, rows)
            )
        self._open.clear()

    def abandon(self) -> None:
        """The input batch will be replayed: nobody waits for these deliveries any more (their failures
        are read here, so none is reported as never retrieved)."""
        self._open.clear()
        for future, _, _ in self._sent:
            future.add_done_callback(_retrieve)

    async def flush(self, dlq_topic: str, stats: Stats) -> int:
        """Send every open batch and wait for all deliveries; retriable failures raise (replay the input
        batch), permanent ones are salvaged record by record. Returns how many records were dead-lettered."""
        await self.send_open()
        outcomes = await asyncio.gather(*(future for future, _, _ in self._sent), return_exceptions=True)
        failed = [
            (sent, exc) for sent, exc in zip(self._sent, outcomes, strict=True) if isinstance(exc, Exception)
        ]
        for _, exc in failed:
            if not isinstance(exc, PERMANENT_ERRORS):
                raise exc if isinstance(exc, KafkaError) else KafkaError(repr(exc))  # replay the input batch
        dead = 0
        for (_, topic, rows), exc in failed:
            dead += await salvage(self._producer, dlq_topic, topic, rows, exc, stats)
        return dead


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def salvage(
    producer: AIOKafkaProducer, dlq_topic: str, topic: str, rows: list[Row], exc: Exception, stats: Stats
) -> int:
    """A batch to `topic` was refused for good: send its records one by one, dead-letter the ones that
    are refused again, log loudly what even the dead-letter topic refuses. Returns dead letters sent."""
    log.error("ingest: %d records to %s refused (%r): sending them one by one", len(rows), topic, exc)
    sent = 0
    for key, value, record, headers, timestamp in rows:
        try:
            await (await producer.send(topic, value, key=key, headers=headers, timestamp_ms=timestamp))
            continue
        except PERMANENT_ERRORS as again:
            reason = f"could not write to {topic}: {type(again).__name__}"
        where = (record.topic, record.partition, record.offset)
        letter = dead_letter(record.value, reason, *where, key=record.key)
        try:
            await (await producer.send(dlq_topic, letter, key=None))
            sent += 1
        except PERMANENT_ERRORS as dlq_exc:
            stats.errors += 1
            log.error(
                "ingest: LOST %s[%d]@%d: %s; the dead-letter topic refused it too (%r)",
                *where,
                reason,
                dlq_exc,
            )
    return sent
