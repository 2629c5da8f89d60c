"""The cache agent's batches with an in-memory table that records the current event's partition as Faust's
does: each write goes to the changelog partition of the record it came from, in order, a key repeated in a
batch reads its own earlier write, and a malformed record is skipped alone."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from faust.streams import current_event

from pipeline.cache.agent import CacheAgent
from pipeline.cache.policy import RetryPolicy
from pipeline.config.settings import Settings
from pipeline.messages import encode_seen
from pipeline.models import EntryStatus, GeoEntry
from pipeline.stats import Stats

SETTINGS = Settings.from_env({}, app_id="a", partitions=2)
SEEN = SETTINGS.seen_topic
A, B = "81.2.69.142", "81.2.69.160"  # A's records come on partition 0, B's on 1 (co-partitioned inputs)


class PartitionedTable:
    """Faust's table as the batch uses it: `on_key_set` sends the changelog record to the current event's
    partition (`Table.partition_for_key`); the store's `get_many`/`set_many` work per partition."""

    def __init__(self) -> None:
        self.stores: dict[int, dict[bytes, bytes]] = {0: {}, 1: {}}
        self.changelog: list[tuple[int, bytes, bytes]] = []
        self.store_writes: list[int] = []  # items per set_many call
        self.data = self

    def get(self, key: bytes) -> bytes | None:
        event = current_event()
        assert event is not None, "a table read outside of an event"
        return self.stores[event.message.partition].get(key)

    def get_many(self, partition: int, keys: list[bytes]) -> list[bytes | None]:
        return [self.stores[partition].get(key) for key in keys]

    def on_key_set(self, key: bytes, value: bytes) -> None:
        event = current_event()
        assert event is not None, "a table write outside of an event"
        self.changelog.append((event.message.partition, key, value))

    def set_many(self, partition: int, items: list[tuple[bytes, bytes, GeoEntry]]) -> None:
        assert all(entry.to_json() == value for _, value, entry in items)
        self.stores[partition].update((key, value) for key, value, _ in items)
        self.store_writes.append(len(items))


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    async def send(self, topic: str, key: bytes, value: bytes | None, *_: Any) -> None:
        self.sent.append((topic, key, value))


class Event:
    def __init__(self, partition: int, offset: int, key: bytes, value: bytes) -> None:
        self.key, self.value = key, value
        self.message = SimpleNamespace(topic=SEEN, partition=partition, offset=offset)


def agent(table: PartitionedTable, producer: Producer) -> CacheAgent:
    app = SimpleNamespace(topic=lambda *a, **k: None, producer=producer)

    def sight(ip: str, now: float) -> GeoEntry:
        return GeoEntry(ip, EntryStatus.PENDING)

    return CacheAgent(app, SETTINGS, table, RetryPolicy(), Stats(), sight)  # type: ignore[arg-type]


def seen(first: bool = True) -> bytes:
    return encode_seen(1e9, "w", first=first)


async def test_a_batch_writes_each_entry_to_the_changelog_partition_of_its_record() -> None:
    """One batch: A three times on partition 0, a malformed seen record in the middle, B on partition 1:
    one entry each, created once, every changelog record on its record's partition, the malformed one
    counted and skipped, one multi-get and one write batch per partition."""
    table, producer = PartitionedTable(), Producer()
    cache = agent(table, producer)
    events = [
        Event(0, 10, A.encode(), seen()),
        Event(0, 11, A.encode(), seen()),
        Event(1, 20, B.encode(), b"not a seen record"),
        Event(1, 21, B.encode(), seen()),
        Event(0, 12, A.encode(), seen(first=False)),
    ]
    await cache.handle_batch(events)
    assert cache.stats.malformed == 1 and cache.stats.errors == 0
    assert cache.stats.entries_created == 2 and cache.stats.seen_applied == 4
    assert {(p, k) for p, k, _ in table.changelog} == {(0, A.encode()), (1, B.encode())}
    assert set(table.stores[0]) == {A.encode()} and set(table.stores[1]) == {B.encode()}
    assert sorted(table.store_writes) == [1, 3]  # A written three times (pending: re-sent), B once
    assert GeoEntry.from_json(table.stores[0][A.encode()]).status is EntryStatus.PENDING
    # the repeats of A re-send the same entry and request: the batch sends each once
    resolved = [k for t, k, _ in producer.sent if t == SETTINGS.resolved_topic]
    requests = [k for t, k, _ in producer.sent if t == SETTINGS.resolve_topic]
    assert sorted(resolved) == sorted(requests) == [A.encode(), B.encode()]
    assert cache.stats.resolved_published == 2 and cache.stats.resolve_sent == 2


async def test_a_bug_on_one_record_skips_that_record_only() -> None:
    """A policy bug on the second of three records is logged and counted; the first and third records of
    the batch are written and sent as usual."""
    table, producer = PartitionedTable(), Producer()
    cache = agent(table, producer)
    original = cache._apply

    def flaky(batch: Any, outbox: Any, where: tuple[str, int, int], *record: Any) -> None:
        if where[2] == 11:
            raise KeyError("a policy bug")
        original(batch, outbox, where, *record)

    cache._apply = flaky  # type: ignore[method-assign]
    await cache.handle_batch(
        [Event(0, 10, A.encode(), seen()), Event(0, 11, A.encode(), seen()), Event(1, 21, B.encode(), seen())]
    )
    assert cache.stats.errors == 1 and cache.stats.entries_created == 2
    assert set(table.stores[0]) == {A.encode()} and set(table.stores[1]) == {B.encode()}


async def test_a_failed_store_write_stops_the_worker_and_sends_nothing() -> None:
    """The batch's write batch failing (disk full) refuses commits via `fatal` and raises, and none of the
    batch's records goes out: the whole batch is replayed after the restart."""
    table, producer = PartitionedTable(), Producer()
    stopped: list[str] = []

    def full(partition: int, items: Any) -> None:
        raise OSError(28, "No space left on device")

    table.set_many = full  # type: ignore[method-assign]
    cache = agent(table, producer)
    cache._fatal = lambda exc, where: stopped.append(where)
    with pytest.raises(OSError):
        await cache.handle_batch([Event(0, 10, A.encode(), seen()), Event(1, 21, B.encode(), seen())])
    assert stopped == [f"the write batch ending at {SEEN}[1]@21"] and producer.sent == []
