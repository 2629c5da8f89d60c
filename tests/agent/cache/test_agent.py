"""The cache agent's writes with an in-memory table and producer: forgetting is idempotent and replay-safe,
and store I/O errors stop the agent instead of being acked (no broker: faults injected where they matter)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.cache.agent import CacheAgent
from pipeline.cache.batch import Outbox, TableBatch
from pipeline.cache.policy import Decision, RetryPolicy
from pipeline.config.settings import Settings
from pipeline.messages import encode_retry
from pipeline.models import EntryStatus, GeoEntry
from pipeline.stats import Stats

SETTINGS = Settings.from_env({}, app_id="a", partitions=1)
IP = "81.2.69.142"
KEY = IP.encode()


class Crash(Exception):
    """The process dies here (kill -9, OOM): nothing after this point happens."""


class FakeTable:
    """Faust's table over a RocksDB store, as the agent sees it: a write reaches the store at once and the
    changelog later (`flush`); deleting an absent key still sends the changelog tombstone. `data` is the
    store (`IndexedStore`'s batch reads and writes)."""

    def __init__(self) -> None:
        self.store: dict[bytes, bytes] = {}
        self.pending: list[tuple[bytes, bytes | None]] = []  # changelog records not yet sent
        self.changelog: list[tuple[bytes, bytes | None]] = []
        self.fail_writes: Exception | None = None
        self.data = self

    def get(self, key: bytes) -> bytes | None:
        return self.store.get(key)

    def get_many(self, partition: int, keys: list[bytes]) -> list[bytes | None]:
        return [self.store.get(key) for key in keys]

    def on_key_set(self, key: bytes, value: bytes) -> None:
        self.pending.append((key, value))  # Table.on_key_set: the changelog record, before the store write

    def set_many(self, partition: int, items: list[tuple[bytes, bytes, GeoEntry]]) -> None:
        if self.fail_writes is not None:
            raise self.fail_writes
        self.store.update((key, value) for key, value, _ in items)

    def __delitem__(self, key: bytes) -> None:
        self.pending.append((key, None))  # Table.on_key_del: the tombstone is sent whether or not it exists
        self.store.pop(key, None)  # IndexedStore._del: an absent key is no change

    def flush(self) -> None:
        self.changelog += self.pending
        self.pending.clear()


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.crash_on: str | None = None  # a topic whose send never happens: the process died first

    async def send(self, topic: str, key: bytes, value: bytes | None, *_: Any) -> None:
        if topic == self.crash_on:
            raise Crash(topic)
        self.sent.append((topic, key, value))


def agent(table: FakeTable, producer: FakeProducer, fatal: list[str] | None = None) -> CacheAgent:
    app = SimpleNamespace(topic=lambda *a, **k: None, producer=producer, consumer=SimpleNamespace())

    def sight(ip: str, now: float) -> GeoEntry:
        return GeoEntry(ip, EntryStatus.PENDING)

    def stop(exc: BaseException, where: str) -> None:
        (fatal if fatal is not None else []).append(where)

    return CacheAgent(app, SETTINGS, table, RetryPolicy(), Stats(), sight, fatal=stop)  # type: ignore[arg-type]


def forgettable() -> bytes:
    """A resolved entry whose IP was last seen in 1970: the next retry forgets it."""
    return GeoEntry(IP, EntryStatus.RESOLVED, attempts=1, last_seen=1.0, next_retry_at=2.0).to_json()


RETRY = (SETTINGS.results_topic, 0, 7)


async def test_a_forget_interrupted_by_a_crash_is_completed_by_the_replay() -> None:
    """A crash after the store's delete but before either tombstone went out is repaired by the replayed
    retry: the changelog and the resolved topic each get the tombstone although the entry is gone."""
    table, producer = FakeTable(), FakeProducer()
    table.store[KEY] = forgettable()
    producer.crash_on = SETTINGS.resolved_topic
    with pytest.raises(Crash):
        await agent(table, producer).handle(RETRY, KEY, encode_retry(2.0))
    table.pending.clear()  # the changelog record died with the process
    assert KEY not in table.store and table.changelog == [] and producer.sent == []

    replayed = FakeProducer()
    cache = agent(table, replayed)
    await cache.handle(RETRY, KEY, encode_retry(2.0))
    table.flush()
    assert table.changelog == [(KEY, None)]
    assert replayed.sent == [(SETTINGS.resolved_topic, KEY, None)]
    assert cache.stats.forgotten == 0  # counted by the run that deleted it


async def test_deleting_an_absent_entry_sends_both_tombstones_every_time() -> None:
    """`Decision(delete=True)` on an IP without an entry (the operator's forget, a duplicate) still sends
    the changelog and the resolved-topic tombstones, and doing it twice changes nothing else."""
    table, producer = FakeTable(), FakeProducer()
    cache = agent(table, producer)
    for _ in range(2):
        batch, outbox = TableBatch(table), Outbox()
        cache._carry_out(batch, outbox, 0, KEY, Decision(None, delete=True), None)
        await outbox.send(producer.send)  # type: ignore[arg-type]  # the fake's send
    table.flush()
    assert table.changelog == [(KEY, None), (KEY, None)]
    assert producer.sent == [(SETTINGS.resolved_topic, KEY, None)] * 2
    assert table.store == {} and cache.stats.forgotten == 0


class Event:
    def __init__(self, key: bytes, value: bytes) -> None:
        self.key, self.value = key, value
        self.message = SimpleNamespace(topic=RETRY[0], partition=0, offset=RETRY[2], tp=RETRY[:2])


class Stream:
    def __init__(self, *events: Event) -> None:
        self._events = events

    async def take_events(self, most: int, within: float) -> AsyncIterator[list[Event]]:
        for start in range(0, len(self._events), most):
            await asyncio.sleep(0)
            yield list(self._events[start : start + most])


async def test_a_store_write_that_fails_stops_the_agent_instead_of_acking_the_event() -> None:
    """An I/O error from the store (disk full) escapes the agent, so the worker crashes and replays the
    event, instead of logging it, acking it and staying ready with the write lost."""
    table, producer = FakeTable(), FakeProducer()
    table.store[KEY] = GeoEntry(
        IP, EntryStatus.UNRESOLVED, attempts=1, last_seen=9e9, next_retry_at=2.0
    ).to_json()
    table.fail_writes = OSError(28, "No space left on device")
    stopped: list[str] = []
    cache = agent(table, producer, stopped)
    with pytest.raises(OSError):
        await cache._run(Stream(Event(KEY, encode_retry(2.0))))
    assert stopped == [f"the write batch ending at {RETRY[0]}[0]@{RETRY[2]}"]  # commits refused, it stops
    assert cache.stats.errors == 0
    assert cache.app.consumer._geo_floors == {RETRY[:2]: RETRY[2]}  # no commit past it, whatever is acked


async def test_a_decode_or_policy_bug_is_logged_counted_and_skipped() -> None:
    """A bug in decoding or deciding (a ValueError, a KeyError) is logged and counted and the agent goes on
    with the next event: replaying it would fail the same way forever."""
    table, producer = FakeTable(), FakeProducer()
    cache = agent(table, producer)

    def broken(*args: Any) -> None:
        raise ValueError("a policy bug")

    cache._apply = broken  # type: ignore[method-assign]
    await cache._run(Stream(Event(KEY, b"x"), Event(KEY, b"y")))
    assert cache.stats.errors == 2
