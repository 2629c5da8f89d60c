"""The hot path's producer on confluent-kafka (librdkafka), behind the face of aiokafka's that the hot path
uses (`create_batch`, `send_batch`, `send`, `partitions_for`, `client.cluster.partitions_for_topic`,
`client.fetch_all_metadata`, `start`, `stop`): pipeline/hotpath/outputs.py and the hot path's loop run
unchanged on either client.

- Partitions: every record goes to the partition the caller names (the hot path computes murmur2 of the
  key itself, as Kafka's default partitioner does); a `send` without one uses the same murmur2 (librdkafka's
  default partitioner is not murmur2; `murmur2_random` is configured too, for a record without a key).
- Sending: a batch made with `batch_to` (pipeline/hotpath/outputs.py does) hands each record to librdkafka
  as it is appended, so librdkafka sends while the hot path still routes the rest of the input batch.
- Delivery: librdkafka reports failures only (`delivery.report.only.error`): a record costs one `produce`
  call and no Python callback. A sent batch's future resolves once a flush (in the client's thread, so the
  event loop never blocks) has seen every record queued before it delivered or failed; a failure in a
  (topic, partition) fails every future of that partition sent since, which at worst replays more (the
  hot path's input batch is replayed whole anyway). Records are retried by librdkafka in order
  (idempotence) until `message.timeout.ms`, then reported failed: the hot path replays its batch.
- Metadata: partition counts from the broker, cached for `METADATA_MAX_AGE` seconds like aiokafka's.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiokafka.errors import KafkaError, KafkaTimeoutError
from confluent_kafka import KafkaException, Message, Producer

from pipeline.kafka.confluent_errors import as_aiokafka_error
from pipeline.kafka.partitioner import key_hash

METADATA_MAX_AGE = 300.0  # seconds a topic's partition count is trusted (aiokafka's metadata_max_age_ms)
METADATA_TIMEOUT = 10.0  # seconds a metadata request may take before the batch is replayed
FLUSH_SLICE = 1.0  # a flush returns this often to see whether the producer is stopping
# librdkafka's flush polls in slices of up to 10 ms; with reports of failures only, no report ends a
# slice early, so a batch waited up to 10 ms past its last ack (inferred; flushing in short slices took a
# third off the delivery wait, measured). Short slices see the queue empty within this.
FLUSH_STEP = 0.001


class Rows:
    """An open "batch" of one (topic, partition): the rows, produced when it is sent (librdkafka batches
    records itself, so it never fills)."""

    __slots__ = ("rows",)

    def __init__(self) -> None:
        self.rows: list[tuple[bytes | None, bytes, int, Any]] = []

    def append(self, key: bytes | None, value: bytes, timestamp: int | None, headers: Any = None) -> bool:
        self.rows.append((key, value, timestamp or 0, headers))
        return True


class Sending:
    """An open "batch" bound to its (topic, partition) that hands each record to librdkafka as it is
    appended, so librdkafka sends while the hot path is still routing the input batch (the delivery wait
    after the last record is what is left of it); a record refused at once is remembered for `send_batch`."""

    __slots__ = ("error", "partition", "produce", "seq", "topic")

    def __init__(self, produce: Any, topic: str, partition: int, seq: int) -> None:
        self.produce, self.topic, self.partition = produce, topic, partition
        self.seq = seq  # taken before its first record: any failure of its records is reported after it
        self.error: KafkaError | None = None

    def append(self, key: bytes | None, value: bytes, timestamp: int | None, headers: Any = None) -> bool:
        try:
            if timestamp or headers:
                self.produce(self.topic, value, key, self.partition, timestamp=timestamp, headers=headers)
            else:  # keywords cost a third more per call; librdkafka stamps the record with its time
                self.produce(self.topic, value, key, self.partition)
        except KafkaException as exc:  # refused before sending (too large): the batch is salvaged
            self.error = self.error or as_aiokafka_error(exc.args[0])
        except BufferError as exc:  # the local queue is full: the broker is not taking records
            self.error = self.error or KafkaTimeoutError(f"producer queue full: {exc}")
        return True


class _Cluster:
    def __init__(self) -> None:
        # topic -> (partition count, when learnt); named as aiokafka names its own
        self._partitions: dict[str, tuple[int, float]] = {}

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        found = self._partitions.get(topic)
        if found is None or time.monotonic() - found[1] > METADATA_MAX_AGE:
            return None
        return set(range(found[0]))


class _Client:
    def __init__(self, owner: ConfluentProducer) -> None:
        self.cluster = _Cluster()
        self._owner = owner

    async def fetch_all_metadata(self) -> Any:
        return await self._owner._metadata(None)


class ConfluentProducer:
    """A librdkafka producer with the part of AIOKafkaProducer's interface the hot path uses."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = {
            **config,
            "delivery.report.only.error": True,
            "on_delivery": self._failed,
            "partitioner": "murmur2_random",
        }
        self._producer: Producer | None = None
        self.client = _Client(self)
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="ingest-producer")  # a flush; metadata
        # batches so far: a batch takes its number before its first record is produced, and a failure is
        # stamped with the count when librdkafka reports it, so a failure stamped n concerns batches < n
        self._sent = 0
        self._open: set[int] = set()  # numbers of `Sending` batches still being built
        self._waiting: list[tuple[asyncio.Future[None], str, int, int]] = []  # future, topic, partition, sent
        self._failures: list[tuple[int, str, int, Any]] = []  # (sent when reported, topic, partition, error)
        self._flushing: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._producer = Producer(self._config)

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, producer.flush, METADATA_TIMEOUT)
        self._pool.shutdown(wait=False)

    def create_batch(self) -> Rows:
        return Rows()

    def batch_to(self, topic: str, partition: int) -> Sending:
        """A batch that sends each record as it is appended (pipeline/hotpath/outputs.py uses it)."""
        assert self._producer is not None
        seq = self._number()
        self._open.add(seq)
        return Sending(self._producer.produce, topic, partition, seq)

    async def send_batch(self, builder: Rows | Sending, topic: str, partition: int) -> asyncio.Future[None]:
        """Queue the batch's records to `partition` (a `Sending` batch did as it was built); the future
        resolves once all are delivered."""
        assert self._producer is not None
        if isinstance(builder, Sending):
            self._open.discard(builder.seq)
            return (
                self._settled(builder.error) if builder.error else self._wait(topic, partition, builder.seq)
            )
        seq = self._number()
        produce = self._producer.produce
        try:
            for key, value, timestamp, headers in builder.rows:
                if timestamp or headers:
                    produce(topic, value, key, partition, timestamp=timestamp, headers=headers)
                else:  # keywords cost a third more per call; librdkafka stamps the record with its time
                    produce(topic, value, key, partition)
        except KafkaException as exc:  # refused before sending (too large): nothing is retried
            return self._settled(as_aiokafka_error(exc.args[0]))
        except BufferError as exc:  # the local queue is full: the broker is not taking records
            return self._settled(KafkaTimeoutError(f"producer queue full: {exc}"))
        return self._wait(topic, partition, seq)

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future[None]:
        """One record, to `partition` or its key's murmur2 partition; the future resolves on delivery."""
        if partition is None and key is not None:
            partition = key_hash(key) % len(await self.partitions_for(topic))
        builder = Rows()
        builder.append(key, value, None)
        return await self.send_batch(builder, topic, -1 if partition is None else partition)

    async def partitions_for(self, topic: str) -> set[int]:
        """The topic's partitions from the broker (cached); KafkaTimeoutError when it does not answer."""
        metadata = await self._metadata(topic)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise KafkaTimeoutError(f"no metadata for {topic}: {found.error if found else 'not found'}")
        self.client.cluster._partitions[topic] = (len(found.partitions), time.monotonic())
        return set(found.partitions)

    async def _metadata(self, topic: str | None) -> Any:
        assert self._producer is not None
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._pool,
                lambda: self._producer.list_topics(topic, timeout=METADATA_TIMEOUT),  # type: ignore[union-attr]
            )
        except KafkaException as exc:
            raise KafkaTimeoutError(f"metadata: {exc.args[0]}") from exc

    # -- delivery ---------------------------------------------------------------------------------------

    def _failed(self, error: Any, message: Message) -> None:
        """librdkafka's delivery report, failures only (called inside flush, in the pool's thread)."""
        partition = message.partition()
        where = (message.topic() or "", -1 if partition is None else partition)
        self._failures.append((self._sent, *where, error))

    def _settled(self, error: KafkaError) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_exception(error)
        return future

    def _number(self) -> int:
        self._sent += 1
        return self._sent - 1

    def _wait(self, topic: str, partition: int, seq: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((future, topic, partition, seq))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.ensure_future(self._flush())
        return future

    async def _flush(self) -> None:
        """Until nothing waits: flush what is queued, then settle the futures sent before the flush."""
        loop = asyncio.get_running_loop()
        while self._waiting:
            producer = self._producer
            waiting, self._waiting = self._waiting, []
            try:
                if producer is None:
                    raise KafkaError("producer stopped")
                while await loop.run_in_executor(self._pool, _flush_for, producer, FLUSH_SLICE):
                    if self._producer is None:
                        raise KafkaError("producer stopped")
            except KafkaError as exc:
                for future, *_ in waiting:
                    if not future.done():
                        future.set_exception(exc)
                continue
            failures = self._failures
            # a failure is reported after its record was sent: one reported before a send cannot be its
            later = min((*(sent for *_, sent in self._waiting), *self._open), default=self._sent)
            self._failures = [f for f in failures if f[0] > later]
            for future, topic, partition, sent in waiting:
                if future.done():
                    continue
                error = next(
                    (e for at, t, p, e in failures if at > sent and t == topic and p in (partition, -1)), None
                )
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(as_aiokafka_error(error))


def _flush_for(producer: Producer, seconds: float) -> int:
    """Flush in FLUSH_STEP slices for at most `seconds`; the records still queued (0: all settled)."""
    deadline = time.monotonic() + seconds
    left = producer.flush(FLUSH_STEP)
    while left and time.monotonic() < deadline:
        left = producer.flush(FLUSH_STEP)
    return int(left)
