"""The geo table's RocksDB store: the due-time index is derived from the entries, on every write path.

These run against real RocksDB partition databases (rocksdict) through Faust's own store class, without a
broker: agent writes go through `_set` with a current event, recovery through `apply_changelog_batch`,
exactly the two paths Faust uses.
"""

from __future__ import annotations

import random
import weakref
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.streams import _current_event
from faust.types import TP

from pipeline import storage
from pipeline.cache.policy import REFRESH_LANE, RETRY_LANE, is_index_key, lane_prefix
from pipeline.cache.table import COUNT_PREFIX, COUNTS_MARKER, INDEX_MARKER, GeoTable, IndexedStore, index_key
from pipeline.cache.table import index_keys as derived_keys
from pipeline.hotpath.replica import Replica
from pipeline.models import EntryStatus, GeoData, GeoEntry

pytestmark = pytest.mark.integration

NOW = 1_800_000_000.0
TOPIC = "t-geo-cache-changelog"


@dataclass
class FakeMessage:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes | None

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass
class FakeEvent:
    message: FakeMessage


def make_store(tmp_path: Path, partitions: int = 2) -> IndexedStore:
    app = faust.App("t", store="rocksdb://", datadir=str(tmp_path))
    table = GeoTable(app, name="geo-cache", key_type=bytes, value_type=bytes, partitions=partitions)
    store: IndexedStore = table.data  # type: ignore[assignment]
    store._dbs_for_actives = lambda: iter(store._dbs.values())  # type: ignore[method-assign]  # all active
    return store


def entry(ip: str, status: EntryStatus, due: float | None) -> bytes:
    geo = GeoData(country_code="US") if status is EntryStatus.RESOLVED else GeoData()
    return GeoEntry(ip, status, geo=geo, next_retry_at=due).to_json()


def agent_write(store: IndexedStore, partition: int, key: bytes, value: bytes | None) -> None:
    """Write as the cache agent does: inside an event's iteration (the store reads the event's partition)."""
    event: Any = FakeEvent(FakeMessage(TOPIC, partition, 0, key, value))
    token = _current_event.set(weakref.ref(event))
    try:
        if value is None:
            store._del(key)
        else:
            store._set(key, value)
    finally:
        _current_event.reset(token)


def all_keys(store: IndexedStore, partition: int) -> set[bytes]:
    """Entry and index keys (not the markers, the status counts, nor the offset faust records after
    recovery)."""
    db = store._db_for_partition(partition)
    return {
        key
        for key in db.keys()  # noqa: SIM118 - an Rdict
        if key not in (INDEX_MARKER, COUNTS_MARKER, store.offset_key) and not key.startswith(COUNT_PREFIX)
    }


def derived_index(store: IndexedStore, partition: int) -> set[bytes]:
    """The index keys the partition's entries imply."""
    db = store._db_for_partition(partition)
    return {key for k, value in db.items() if not is_index_key(k) for key in derived_keys(value)}


def index_keys(store: IndexedStore, partition: int) -> set[bytes]:
    return {key for key in all_keys(store, partition) if is_index_key(key)}


def test_agent_writes_keep_exactly_one_index_key_per_scheduled_entry(tmp_path: Path) -> None:
    """Creating, rescheduling, finalising and deleting entries leaves the index equal to what the entries
    imply, with lane counts to match."""
    store = make_store(tmp_path)
    agent_write(store, 0, b"1.1.1.1", entry("1.1.1.1", EntryStatus.PENDING, NOW))
    agent_write(store, 0, b"2.2.2.2", entry("2.2.2.2", EntryStatus.RESOLVED, NOW + 99))
    agent_write(store, 0, b"1.1.1.1", entry("1.1.1.1", EntryStatus.UNRESOLVED, NOW + 60))
    agent_write(store, 0, b"3.3.3.3", entry("3.3.3.3", EntryStatus.PRIVATE, None))
    assert index_keys(store, 0) == derived_index(store, 0)
    assert len(index_keys(store, 0)) == 2
    assert (store.lane_counts[0][RETRY_LANE], store.lane_counts[0][REFRESH_LANE]) == (1, 1)
    agent_write(store, 0, b"1.1.1.1", None)
    assert (
        index_keys(store, 0)
        == derived_index(store, 0)
        == {index_key(entry("2.2.2.2", EntryStatus.RESOLVED, NOW + 99))}
    )
    assert store.lane_counts[0][RETRY_LANE] == 0


def test_recovery_batches_derive_the_same_index_as_the_agent_writes(tmp_path: Path) -> None:
    """A store rebuilt from the changelog (many writes of one key in one batch, tombstones included) ends
    with the same keys, entries and index, as the store the agent wrote."""
    rng = random.Random(5)
    written = make_store(tmp_path / "agent")
    changelog: list[FakeMessage] = []
    for offset in range(2000):
        partition = rng.randrange(2)
        ip = f"10.0.{partition}.{rng.randrange(40)}"
        status = rng.choice(list(EntryStatus))
        value = None if rng.random() < 0.1 else entry(ip, status, NOW + rng.randrange(10_000))
        agent_write(written, partition, ip.encode(), value)
        changelog.append(FakeMessage(TOPIC, partition, offset, ip.encode(), value))
    rebuilt = make_store(tmp_path / "recovered")
    for start in range(0, len(changelog), 300):  # recovery applies the changelog in batches
        rebuilt.apply_changelog_batch([FakeEvent(m) for m in changelog[start : start + 300]], None, None)
    for partition in (0, 1):
        assert all_keys(rebuilt, partition) == all_keys(written, partition)
        assert index_keys(rebuilt, partition) == derived_index(rebuilt, partition)
        assert rebuilt.lane_counts[partition] == written.lane_counts[partition]


def test_a_partition_written_without_an_index_is_indexed_when_opened(tmp_path: Path) -> None:
    """Entries written by an older store (no index, no marker) get index keys when the partition opens."""
    store = make_store(tmp_path)
    db = store._db_for_partition(0)
    db.put(b"1.1.1.1", entry("1.1.1.1", EntryStatus.UNRESOLVED, NOW))
    db.delete(INDEX_MARKER)
    store._dbs.pop(0)
    db.close()
    reopened = make_store(tmp_path)
    assert index_keys(reopened, 0) == derived_index(reopened, 0) != set()
    assert reopened.lane_counts[0][RETRY_LANE] == 1


def test_due_reads_only_due_keys_oldest_first_and_table_reads_skip_the_index(tmp_path: Path) -> None:
    """`due` yields due entries of a lane oldest first, stops at the first not yet due and honours the
    limit; the table's own iteration and size see entries only."""
    store = make_store(tmp_path, partitions=1)
    for i, due in enumerate([NOW - 5, NOW - 50, NOW + 5, NOW - 1]):
        agent_write(store, 0, f"10.0.0.{i}".encode(), entry(f"10.0.0.{i}", EntryStatus.UNRESOLVED, due))
    assert list(store.due(RETRY_LANE, NOW, 10)) == [
        (NOW - 50, "10.0.0.1"),
        (NOW - 5, "10.0.0.0"),
        (NOW - 1, "10.0.0.3"),
    ]
    assert len(list(store.due(RETRY_LANE, NOW, 2))) == 2
    assert list(store.due(REFRESH_LANE, NOW, 10)) == []
    items: Iterator[tuple[bytes, bytes]] = store._visible_items(store._db_for_partition(0))
    assert sorted(key for key, _ in items) == [f"10.0.0.{i}".encode() for i in range(4)]
    assert store.lane_size(RETRY_LANE) == 4


def test_older_versions_finds_entries_answered_by_other_versions_of_the_data(tmp_path: Path) -> None:
    """The version index yields the IPs answered by any version of one offline data set but the current
    one, jumping over the current version's block, at most `limit` per partition; remote answers and
    other data sets are never in it."""
    store = make_store(tmp_path, partitions=1)

    def answered(ip: str, provider: str, version: str) -> bytes:
        entry = GeoEntry(ip, EntryStatus.PENDING, geo=GeoData(country_code="US"), provider=provider)
        return entry.evolve(data_version=version, next_retry_at=NOW).to_json()

    rows = [
        ("10.0.0.1", "offline", "iptocc:3.3.1"),
        ("10.0.0.2", "offline", "iptocc:3.3.2"),
        ("10.0.0.3", "offline", "iptocc:3.3.9"),
        ("10.0.0.4", "offline", "iptocc:3.3.2"),
        ("10.0.0.5", "mmdb", "mmdb:GeoLite2-City@1"),
        ("10.0.0.6", "ipapi", "ipapi"),
    ]
    for ip, provider, version in rows:
        agent_write(store, 0, ip.encode(), answered(ip, provider, version))
    assert sorted(store.older_versions("iptocc:", "iptocc:3.3.2", 10)) == ["10.0.0.1", "10.0.0.3"]
    assert list(store.older_versions("iptocc:", "iptocc:3.3.2", 1)) == ["10.0.0.1"]
    assert list(store.older_versions("mmdb:", "mmdb:GeoLite2-City@2", 10)) == ["10.0.0.5"]
    assert list(store.older_versions("mmdb:", "mmdb:GeoLite2-City@1", 10)) == []


def counted(store: IndexedStore, partition: int) -> dict[str, int]:
    """Entries per status, counted by reading every entry of the partition."""
    db = store._db_for_partition(partition)
    found: dict[str, int] = {}
    for key, value in db.items():
        if not is_index_key(key) and key != store.offset_key:
            status = GeoEntry.from_json(value).status.value
            found[status] = found.get(status, 0) + 1
    return found


def lanes_counted(store: IndexedStore, partition: int) -> dict[str, int]:
    """Index keys per lane, counted from the keys themselves."""
    return dict(Counter(chr(key[1]) for key in index_keys(store, partition)))


def nonzero(counts: Any) -> dict[str, int]:
    return {status: n for status, n in counts.items() if n}


def test_status_and_lane_counts_follow_agent_writes_recovery_and_reopening(tmp_path: Path) -> None:
    """Entries per status and index keys per lane are kept exact by agent writes and changelog recovery,
    persisted with the entries (a reopened store reads them, never scans), and summed over active
    partitions."""
    rng = random.Random(9)
    written = make_store(tmp_path / "agent")
    changelog: list[FakeMessage] = []
    for offset in range(1500):
        partition = rng.randrange(2)
        ip = f"10.1.{partition}.{rng.randrange(50)}"
        status = rng.choice(list(EntryStatus))
        value = None if rng.random() < 0.1 else entry(ip, status, NOW + rng.randrange(10_000))
        agent_write(written, partition, ip.encode(), value)
        changelog.append(FakeMessage(TOPIC, partition, offset, ip.encode(), value))
    rebuilt = make_store(tmp_path / "recovered")
    for start in range(0, len(changelog), 250):
        rebuilt.apply_changelog_batch([FakeEvent(m) for m in changelog[start : start + 250]], None, None)
    for partition in (0, 1):
        assert nonzero(written.status_counts[partition]) == counted(written, partition) != {}
        assert nonzero(rebuilt.status_counts[partition]) == counted(written, partition)
        assert nonzero(written.lane_counts[partition]) == lanes_counted(written, partition) != {}
        assert nonzero(rebuilt.lane_counts[partition]) == lanes_counted(written, partition)
    total = sum((written.status_counts[p] for p in (0, 1)), start=Counter[str]())
    assert written.entries_by_status() == nonzero(total)
    stray = lane_prefix(RETRY_LANE).encode() + b"0000000000000|10.9.9.9"  # behind the store's back:
    written._db_for_partition(0).put(stray, b"")  # a scan at the next open would count it
    for db in written._dbs.values():
        db.close()
    written._dbs.clear()
    reopened = make_store(tmp_path / "agent")
    reopened._db_for_partition(0)  # partitions open on assignment
    assert nonzero(reopened.status_counts[0]) == counted(reopened, 0)
    assert reopened.lane_counts[0][RETRY_LANE] == lanes_counted(reopened, 0)[RETRY_LANE] - 1


def test_a_partition_written_without_status_counts_is_counted_once_when_opened(tmp_path: Path) -> None:
    """Entries written by an older store (no counts, no marker) are counted when the partition opens."""
    store = make_store(tmp_path)
    db = store._db_for_partition(0)
    db.put(b"1.1.1.1", entry("1.1.1.1", EntryStatus.UNRESOLVED, NOW))
    db.put(b"2.2.2.2", entry("2.2.2.2", EntryStatus.PRIVATE, None))
    db.delete(COUNTS_MARKER)
    store._dbs.pop(0)
    db.close()
    reopened = make_store(tmp_path)
    reopened._db_for_partition(0)  # partitions open on assignment
    assert reopened.entries_by_status() == {"unresolved": 1, "private": 1}
    assert reopened._db_for_partition(0).get(COUNTS_MARKER) is not None  # counted once: next opens read


def test_every_partition_database_and_the_replica_share_one_memory_budget(tmp_path: Path) -> None:
    """Blocks, index and filter blocks and memtables of every database a worker opens land in one cache."""
    store = make_store(tmp_path)
    for partition in (0, 1):
        for n in range(2_000):
            ip = f"10.{partition}.{n // 256}.{n % 256}".encode()
            agent_write(store, partition, ip, entry(ip.decode(), EntryStatus.RESOLVED, NOW + n))
        store._db_for_partition(partition).flush()
    replica = Replica(tmp_path / "replica")
    replica.open(NOW)
    replica.apply([(b"1.1.1.1", b"a")], {0: 1}, NOW)
    assert store[b"10.0.0.1"] and store[b"10.1.7.207"] and replica.get(b"1.1.1.1") == b"a"  # blocks read
    dbs = [store._db_for_partition(0), store._db_for_partition(1), replica._db]
    capacities = {db.property_int_value("rocksdb.block-cache-capacity") for db in dbs if db is not None}
    usages = {db.property_int_value("rocksdb.block-cache-usage") for db in dbs if db is not None}
    assert capacities == {storage.MEMORY}
    assert usages == {storage.usage()} and storage.usage() > 0  # one cache, seen from every database
    replica.close()
