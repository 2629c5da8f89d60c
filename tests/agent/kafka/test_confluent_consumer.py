"""The hot path's librdkafka consumer behind aiokafka's face, with librdkafka's consumer replaced by an
in-memory one: batches grouped by partition in offset order, commits of exactly what was handed out, and
a revocation (which librdkafka runs inside consume) waiting for the batch in hand."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from confluent_kafka import Message
from confluent_kafka import TopicPartition as CTopicPartition

from pipeline.kafka.confluent import ConfluentConsumer
from tests.support.kafka import wait_for


class FakeLibrdkafka:
    """Hands out `messages` (poll: one, consume: the rest); `revoke_in_poll` runs the revocation callback
    inside the next poll, as librdkafka does; remembers commits and seeks."""

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages
        self.commits: list[list[tuple[str, int, int]]] = []
        self.waited: list[bool] = []  # per commit: whether it waited for the broker (not asynchronous)
        self.seeks: list[tuple[str, int, int]] = []
        self.on_revoke: Any = None
        self.revoke_in_poll = False
        self.polling = threading.Event()

    def subscribe(self, topics: list[str], on_assign: Any, on_revoke: Any) -> None:
        self.on_revoke = on_revoke

    def poll(self, timeout: float) -> Message | None:
        self.polling.set()
        if self.revoke_in_poll:
            self.on_revoke(self, [CTopicPartition("in", 0)])
        return self.messages.pop(0) if self.messages else None

    def consume(self, count: int, timeout: float) -> list[Message]:
        taken, self.messages = self.messages[:count], self.messages[count:]
        return taken

    def commit(self, offsets: list[CTopicPartition], asynchronous: bool) -> None:
        self.commits.append(sorted((tp.topic, tp.partition, tp.offset) for tp in offsets))
        self.waited.append(not asynchronous)

    def seek(self, tp: CTopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def close(self) -> None:
        pass


class Lock(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, lock: asyncio.Lock) -> None:
        self.lock = lock

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self.lock:
            pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        pass


def message(partition: int, offset: int) -> Message:
    return Message(topic="in", partition=partition, offset=offset, key=None, value=b"v%d" % offset)


async def consumer(messages: list[Message], lock: asyncio.Lock) -> tuple[ConfluentConsumer, FakeLibrdkafka]:
    out = ConfluentConsumer({"group.id": "g"})
    out._loop = asyncio.get_running_loop()
    fake = FakeLibrdkafka(messages)
    out._consumer = fake  # type: ignore[assignment]
    out.subscribe(["in"], listener=Lock(lock))
    return out, fake


async def test_a_batch_is_grouped_by_partition_and_its_commit_is_what_was_handed_out() -> None:
    """Records come back per partition in offset order; the commit names the offset after each
    partition's last record, and a seek back drops that partition from the next commit."""
    out, fake = await consumer([message(0, 5), message(1, 7), message(0, 6), message(1, 8)], asyncio.Lock())
    batch = await out.getmany(timeout_ms=100, max_records=10)
    assert {tp.partition: [r.offset for r in records] for tp, records in batch.items()} == {
        0: [5, 6],
        1: [7, 8],
    }
    await out.commit()
    assert fake.commits == [[("in", 0, 7), ("in", 1, 9)]]
    out.seek(TopicPartition("in", 1), 7)
    await out.commit()
    assert fake.seeks == [("in", 1, 7)] and fake.commits[-1] == [("in", 0, 7)]


async def test_a_revocation_inside_consume_waits_for_the_batch_in_hand() -> None:
    """While the hot path holds its batch lock, a revocation that librdkafka runs inside the next fetch
    does not return (so the partitions are not handed over) until the lock is released."""
    lock = asyncio.Lock()
    out, fake = await consumer([message(0, 1)], lock)
    fake.revoke_in_poll = True
    await lock.acquire()
    fetch = asyncio.ensure_future(out.getmany(timeout_ms=100, max_records=10))
    await wait_for(fake.polling.is_set, 5, message="the fetch to reach librdkafka's poll")
    # asyncio.Lock keeps its waiters in `_waiters`: the revocation is now queued behind the batch in hand
    await wait_for(lambda: lock._waiters, 5, message="the revocation to wait on the batch lock")
    assert not fetch.done()
    lock.release()
    batch = await asyncio.wait_for(fetch, 5)
    assert [r.offset for records in batch.values() for r in records] == [1]


async def test_a_revocation_commits_what_was_delivered_and_waits_for_the_broker() -> None:
    """Commits after delivery do not wait for the broker; a revocation then commits the delivered offsets
    of the revoked partitions synchronously, so their next owner starts after them."""
    out, fake = await consumer([message(0, 5), message(1, 7)], asyncio.Lock())
    await out.getmany(timeout_ms=100, max_records=10)
    await out.commit()
    fake.revoke_in_poll = True
    await out.getmany(timeout_ms=100, max_records=10)
    assert fake.commits == [[("in", 0, 6), ("in", 1, 8)], [("in", 0, 6)]]
    assert fake.waited == [False, True]
