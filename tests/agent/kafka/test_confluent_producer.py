"""The hot path's librdkafka producer behind aiokafka's face, with librdkafka's producer replaced by an
in-memory one: sent batches resolve once flushed, failures reach exactly the futures they concern, and
records land on the partitions the caller names (murmur2 of the key when it names none)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from confluent_kafka import KafkaError as CKafkaError
from confluent_kafka import KafkaException

from pipeline.kafka.confluent_producer import ConfluentProducer
from pipeline.kafka.partitioner import key_hash


class Message:
    def __init__(self, topic: str, partition: int) -> None:
        self._where = (topic, partition)

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]


class FakeLibrdkafka:
    """Queues produced records; `flush` delivers them, reporting failures (only) as librdkafka does with
    delivery.report.only.error; `fail(topic, partition)` says which fail and how."""

    def __init__(self, report: Callable[[Any, Any], None], fail: Callable[[str, int], int | None]) -> None:
        self.report, self.fail = report, fail
        self.queued: list[tuple[str, int, bytes | None, bytes]] = []
        self.delivered: list[tuple[str, int, bytes | None, bytes]] = []

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        partition: int,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None:
        if len(value) > 100:
            raise KafkaException(CKafkaError(CKafkaError.MSG_SIZE_TOO_LARGE))
        self.queued.append((topic, partition, key, value))

    def flush(self, timeout: float) -> int:
        queued, self.queued = self.queued, []
        for topic, partition, key, value in queued:
            code = self.fail(topic, partition)
            if code is None:
                self.delivered.append((topic, partition, key, value))
            else:
                self.report(CKafkaError(code), Message(topic, partition))
        return 0

    def list_topics(self, topic: str | None, timeout: float) -> Any:
        meta = type("T", (), {"partitions": {p: None for p in range(4)}, "error": None})()
        return type("M", (), {"topics": {topic: meta}})()


def producer(fail: Callable[[str, int], int | None] = lambda t, p: None) -> tuple[ConfluentProducer, Any]:
    out = ConfluentProducer({"bootstrap.servers": "unused:9092"})
    fake = FakeLibrdkafka(out._config["on_delivery"], fail)
    out._producer = fake  # type: ignore[assignment]
    return out, fake


async def send(out: ConfluentProducer, topic: str, partition: int, values: list[bytes]) -> Any:
    batch = out.create_batch()
    for value in values:
        assert batch.append(key=b"k", value=value, timestamp=None)
    return await out.send_batch(batch, topic, partition=partition)


async def test_batches_resolve_once_flushed_on_the_partitions_named() -> None:
    """Every record of a sent batch is delivered to the partition named before its future resolves."""
    out, fake = producer()
    futures = [await send(out, "t", p, [b"a", b"b"]) for p in (0, 3)]
    for future in futures:
        await future
    assert sorted((t, p, v) for t, p, _, v in fake.delivered) == [
        ("t", 0, b"a"),
        ("t", 0, b"b"),
        ("t", 3, b"a"),
        ("t", 3, b"b"),
    ]


async def test_a_failure_fails_the_futures_of_its_partition_only() -> None:
    """A partition whose records fail fails its batch's future with aiokafka's class for the error; the
    other partitions' batches are delivered."""
    out, _ = producer(lambda t, p: CKafkaError.TOPIC_AUTHORIZATION_FAILED if p == 1 else None)
    ok, bad = await send(out, "t", 0, [b"a"]), await send(out, "t", 1, [b"b"])
    await ok
    with pytest.raises(TopicAuthorizationFailedError):
        await bad


async def test_a_retriable_failure_is_a_plain_kafka_error() -> None:
    """A delivery timed out (the broker gone past message.timeout.ms) is a KafkaError the hot path replays."""
    out, _ = producer(lambda t, p: CKafkaError._MSG_TIMED_OUT)
    with pytest.raises(KafkaError) as caught:
        await (await send(out, "t", 2, [b"a"]))
    assert type(caught.value) is KafkaError


async def test_a_record_refused_at_produce_fails_its_batch_at_once() -> None:
    """A record librdkafka refuses before sending (too large) fails its batch with the permanent class."""
    out, _ = producer()
    from aiokafka.errors import MessageSizeTooLargeError

    with pytest.raises(MessageSizeTooLargeError):
        await (await send(out, "t", 0, [b"x" * 200]))


async def test_a_send_without_a_partition_goes_to_murmur2_of_its_key() -> None:
    """`send` with a key and no partition picks Kafka's default partitioner's partition (murmur2), never
    librdkafka's own default."""
    out, fake = producer()
    for key in (b"1.1.1.1", b"8.8.8.8", b"9.9.9.9"):
        await (await out.send("t", b"v", key=key))
    assert [(k, p) for _, p, k, _ in fake.delivered] == [
        (k, key_hash(k) % 4) for k in (b"1.1.1.1", b"8.8.8.8", b"9.9.9.9")
    ]


async def test_a_failure_reported_while_its_batch_is_still_built_still_fails_that_batch() -> None:
    """A batch that sends as it is built (batch_to) can have a record fail during another batch's flush,
    before it is sent itself: the failure is kept for it, never lost."""
    out, _ = producer(lambda t, p: CKafkaError._MSG_TIMED_OUT if p == 1 else None)
    building = out.batch_to("t", 1)
    building.append(key=b"k", value=b"early", timestamp=None)
    await (await send(out, "t", 0, [b"other"]))  # its flush reports the failure of "early"
    with pytest.raises(KafkaError):
        await (await out.send_batch(building, "t", partition=1))
