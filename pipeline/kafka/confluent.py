"""The hot path's consumer on confluent-kafka (librdkafka), behind the face of aiokafka's that the hot path
uses (`getmany`, `commit`, `seek`, `assignment`, `highwater`, `position`, `subscribe`, `start`, `stop`), so
its routing loop (pipeline/hotpath/service.py) is the same for both clients and they differ only in I/O.

Why: librdkafka fetches and decodes records in C, in its own threads, at about 2-3x the records/s of
aiokafka's consumer on one core (docs/benchmarks.md). Faust keeps aiokafka; this serves the hot path only.

How it maps:
- every blocking call (consume, commit, close) runs in the client's own thread pool, so the event loop
  (and Faust's agents on it) never waits on the broker;
- a fetch waits for the first record only (`poll`), then takes what is already fetched (`consume` with
  no wait): a quiet topic answers at once, as aiokafka's getmany does, instead of after the whole wait;
- offsets are never stored or committed automatically: `commit` (called once the batch's outputs are
  delivered) commits the offsets after the last batch `getmany` returned, what aiokafka's `commit()`
  commits. Without waiting for the broker's answer: measured, a synchronous commit cost 12 ms a batch,
  a fifth of a backlog's drain. That is safe because a later commit supersedes one that failed, and the
  offsets delivered so far are committed synchronously before a partition is revoked and before close:
  only a crash can leave a commit unsent, and the batch is then replayed (at-least-once);
- rebalance callbacks run inside `consume` (librdkafka calls them there), and `getmany` is only ever
  called between batches: a revocation cannot arrive while a batch is in hand. The listener's
  `on_partitions_revoked` is still waited for (it takes the hot path's batch lock), so a `stop` that
  closes the consumer while the loop is elsewhere waits for the batch in hand too;
- librdkafka errors become aiokafka's exception classes (`errors`), so the loop's handling is one.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException
from confluent_kafka import TopicPartition as CTopicPartition

from pipeline.kafka.confluent_errors import as_aiokafka_error

log = logging.getLogger(__name__)

REVOKE_WAIT = 120.0  # seconds a revocation waits for the batch in hand (a batch's delivery takes far less)
# one thread: consume, commit and close never overlap (librdkafka's close must not race a consume); a
# stop's close waits behind a fetch in progress, at most its wait
THREADS = 1


class Consumed(NamedTuple):
    """The fields of an aiokafka ConsumerRecord that the hot path reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class ConfluentConsumer:
    """A librdkafka consumer with the part of AIOKafkaConsumer's interface the hot path uses."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = dict(config)
        self._consumer: Consumer | None = None
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="ingest-consumer")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: ConsumerRebalanceListener | None = None
        self._next: dict[TopicPartition, int] = {}  # after the last batch handed out: what commit commits
        self._delivered: dict[TopicPartition, int] = {}  # what commit was called for: the revocation's

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._consumer = Consumer(self._config)

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await self._run(self._commit_now, consumer, dict(self._delivered))
            await self._run(consumer.close)  # leaves the group; the revocation callback runs in there
        self._pool.shutdown(wait=False)

    def subscribe(self, topics: list[str], listener: ConsumerRebalanceListener | None = None) -> None:
        assert self._consumer is not None
        self._listener = listener
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)

    # -- called by librdkafka inside consume/close, in the pool's thread ---------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[CTopicPartition]) -> None:
        self._call_listener("on_partitions_assigned", partitions, wait=False)

    def _on_revoke(self, consumer: Consumer, partitions: list[CTopicPartition]) -> None:
        self._call_listener("on_partitions_revoked", partitions, wait=True)  # the batch in hand is done
        revoked = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        self._commit_now(consumer, {tp: self._delivered[tp] for tp in revoked if tp in self._delivered})
        for tp in revoked:
            self._next.pop(tp, None)
            self._delivered.pop(tp, None)

    def _commit_now(self, consumer: Consumer, offsets: dict[TopicPartition, int]) -> None:
        """Commit `offsets` and wait for the broker (before a revocation or close: the next owner starts
        there); a refusal is logged: that owner replays from the last commit that landed."""
        if not offsets:
            return
        try:
            consumer.commit(
                offsets=[CTopicPartition(tp.topic, tp.partition, o) for tp, o in offsets.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            log.warning(
                "ingest: committing %d partitions before handing them over failed: %s", len(offsets), exc
            )

    def _call_listener(self, name: str, partitions: list[CTopicPartition], *, wait: bool) -> None:
        if self._listener is None or self._loop is None:
            return
        tps = {TopicPartition(tp.topic, tp.partition) for tp in partitions}
        future = asyncio.run_coroutine_threadsafe(getattr(self._listener, name)(tps), self._loop)
        if wait:
            future.result(REVOKE_WAIT)

    # -- the hot path's loop ------------------------------------------------------------------------------

    async def getmany(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Consumed]]:
        """Up to `max_records` records, grouped by partition in offset order; waits at most `timeout_ms`
        for the first one."""
        consumer = self._consumer
        if consumer is None:
            raise ConsumerStoppedError()
        messages = await self._run(_fetch, consumer, max_records or 500, timeout_ms / 1000)
        batch: dict[TopicPartition, list[Consumed]] = {}
        last: tuple[str, int] | None = None
        records: list[Consumed] = []
        for m in messages:
            error = m.error()
            if error is not None:  # informational (a broker down, a partition end): the client recovers
                log.warning("ingest: consumer: %s", error)
                continue
            topic, partition = m.topic(), m.partition()
            if (topic, partition) != last:
                last = (topic, partition)
                records = batch.setdefault(TopicPartition(topic, partition), [])
            records.append(Consumed(topic, partition, m.offset(), m.key(), m.value()))
        for tp, records in batch.items():
            self._next[tp] = records[-1].offset + 1
        return batch

    async def commit(self) -> None:
        """Commit the offsets after the last batch handed out (its outputs are delivered), not waiting for
        the broker's answer (see the module's docstring)."""
        assert self._consumer is not None
        offsets = [CTopicPartition(tp.topic, tp.partition, offset) for tp, offset in self._next.items()]
        if not offsets:
            return
        self._delivered.update(self._next)
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            raise as_aiokafka_error(exc.args[0]) from exc

    def seek(self, tp: TopicPartition, offset: int) -> None:
        assert self._consumer is not None
        try:
            self._consumer.seek(CTopicPartition(tp.topic, tp.partition, offset))
        except KafkaException as exc:
            raise as_aiokafka_error(exc.args[0]) from exc
        self._next.pop(tp, None)

    def assignment(self) -> set[TopicPartition]:
        if self._consumer is None:
            return set()
        return {TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def highwater(self, tp: TopicPartition) -> int | None:
        """The partition's high watermark from the last fetch (None before the first)."""
        if self._consumer is None:
            return None
        try:
            where = CTopicPartition(tp.topic, tp.partition)
            _, high = self._consumer.get_watermark_offsets(where, cached=True)
        except KafkaException:
            return None
        return int(high) if high is not None and high >= 0 else None

    async def position(self, tp: TopicPartition) -> int:
        """The offset of the next record this consumer hands out for `tp`; KafkaError when it has none."""
        if self._consumer is None:
            raise KafkaError("consumer stopped")
        found = self._consumer.position([CTopicPartition(tp.topic, tp.partition)])
        if not found or found[0].offset == OFFSET_INVALID or found[0].offset < 0:
            raise KafkaError(f"no position for {tp.topic}[{tp.partition}] yet")
        return int(found[0].offset)

    async def _run(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: call(*args, **kwargs))


def _fetch(consumer: Consumer, count: int, timeout: float) -> list[Any]:
    """Wait up to `timeout` for one record, then take up to `count - 1` more already fetched, no waiting."""
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(count - 1, 0)] if count > 1 else [first]
