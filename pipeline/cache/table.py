"""The geo table: one changelog-backed RocksDB table holding every entry and, beside it, its due-time index.

Why the index lives inside the entries' own store: the retry timer must find due entries without reading
the table (a million rows take seconds to scan), so it reads keys sorted by due time. Kept as a second
table, the index had its own changelog written apart from the entries', and a crash between the two writes
left an entry with no index key (never retried) or a key with no entry (re-emitted forever). Here the index
is derived data: the store computes an entry's index key from the entry itself and writes both in one
RocksDB write batch, for the agent's writes and for changelog recovery alike, and the changelog carries
entries only. Entry and index cannot disagree, whatever crashes when.

Layout of each partition's RocksDB (keys sort bytewise):
    <ip>                      -> entry JSON (models.GeoEntry)
    ~0<due ms, 13 digits>|<ip> -> b""   retry lane (pending, unresolved, partial, invalid)
    ~1<due ms, 13 digits>|<ip> -> b""   refresh lane (resolved; private, due only to be forgotten)
    ~2<data version>|<ip>     -> b""   offline-answered entries by the version of the data that answered
    ~~index-v2                -> b""   this partition's index was built (older stores are indexed once)
    ~~n|<status>              -> b"<count>"  entries per status, written with the entries (metrics)
    ~~n|lane:<lane>           -> b"<count>"  index keys per lane, likewise (the timer's `unresolved`)
    ~~counts-v2               -> b""   this partition's counts were built (older stores: counted once)

Faust internals relied on (faust-streaming 0.15.x, `faust/stores/rocksdb.py`): `Store._set`, `_del` and
`apply_changelog_batch` are the only paths that write a partition database (besides `set_many` below);
`_open_for_partition` opens one; `_dbs_for_actives` yields the databases of this worker's active partitions
(standbys excluded); `_visible_keys`/`_visible_items` serve `table.keys()/items()/len()`;
`Collection._new_store_by_url` builds the store. `pipeline/kafka/hooks.py` checks at start that each is
still on its call path. The cache agent's batches read with `get_many` and write with `set_many` (one
multi-get and one write batch per partition), each entry's changelog record sent by Faust's
`Table.on_key_set`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import faust
import rocksdict
from faust.stores.rocksdb import RocksDBOptions, Store
from faust.streams import current_event

from pipeline import storage
from pipeline.cache.policy import (
    INDEX_PREFIX,
    REFRESH_LANE,
    RETRY_LANE,
    VERSION_LANE,
    lane_prefix,
    parse_schedule_key,
    schedule_key,
    version_key,
)
from pipeline.models import GeoEntry

log = logging.getLogger(__name__)

INDEX_MARKER = (INDEX_PREFIX + INDEX_PREFIX + "index-v2").encode()  # v2: the version lane was added
COUNTS_MARKER = (INDEX_PREFIX + INDEX_PREFIX + "counts-v2").encode()  # v2: lane counts too (v1: statuses)
COUNT_PREFIX = (INDEX_PREFIX + INDEX_PREFIX + "n|").encode()  # + status, or LANE_TAG + lane: its count
LANE_TAG = "lane:"  # a count key for a lane's index keys, not a status's entries
_INDEX_START = INDEX_PREFIX.encode()
LANES = (RETRY_LANE, REFRESH_LANE, VERSION_LANE)
_NONE: frozenset[bytes] = frozenset()


def entry_facts(value: bytes | None) -> tuple[frozenset[bytes], str | None]:
    """(index keys, status) an entry value implies, from one parse; (none, None) for tombstones and garbage
    (a value that is not an entry is served as it is, but never scheduled nor counted)."""
    if not value:
        return _NONE, None
    try:
        entry = GeoEntry.from_json(value)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return _NONE, None
    return facts_of(entry)


def facts_of(entry: GeoEntry) -> tuple[frozenset[bytes], str]:
    """(index keys, status) of an entry already parsed: what `entry_facts` gives for its JSON."""
    keys = frozenset(key.encode() for key in (schedule_key(entry), version_key(entry)) if key)
    return keys, entry.status.value


def index_keys(value: bytes | None) -> frozenset[bytes]:
    """The index keys (due time, data version) an entry value implies."""
    return entry_facts(value)[0]


def index_key(value: bytes | None) -> bytes | None:
    """The due-time index key an entry value implies, or None."""
    due = [key for key in index_keys(value) if _lane(key) != VERSION_LANE]
    return due[0] if due else None


def _lane(key: bytes) -> str:
    return chr(key[len(_INDEX_START)])


class SharedBudgetOptions(RocksDBOptions):
    """Faust's options for a partition database, opened in the worker's one RocksDB budget (`storage`):
    Faust's own sized a block cache per partition and left index and filter blocks outside it."""

    def as_options(self) -> rocksdict.Options:
        return storage.options(self.write_buffer_size, self.bloom_filter_size)


class IndexedStore(Store):
    """Faust's RocksDB store, keeping each entry's index key in the same partition database, atomically."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rocksdb_options = SharedBudgetOptions(**(self.options or {}), use_rocksdict=True)
        self.lane_counts: dict[int, Counter[str]] = {}  # partition -> index keys per lane (persisted)
        self.status_counts: dict[int, Counter[str]] = {}  # partition -> entries per status (persisted)
        self._counts_changed: set[int] = set()  # partitions whose counts the next write must carry

    # -- writes: every path that changes a partition database -----------------------------------------

    def _set(self, key: bytes, value: bytes | None) -> None:
        event = current_event()
        assert event is not None  # faust's own contract: tables are written inside stream iteration
        partition = event.message.partition
        db = self._db_for_partition(partition)
        self._key_index[key] = partition
        batch = rocksdict.WriteBatch(raw_mode=True)
        self._reindex(partition, batch, key, db.get(key), value)
        batch.put(key, value)
        self._write_counts(partition, batch)
        db.write(batch)

    def _del(self, key: bytes) -> None:
        for partition, db in list(self._dbs.items()):
            old = db.get(key)
            if old is None:
                continue
            batch = rocksdict.WriteBatch(raw_mode=True)
            self._reindex(partition, batch, key, old, None)
            batch.delete(key)
            self._write_counts(partition, batch)
            db.write(batch)

    def apply_changelog_batch(self, batch: Iterable[Any], to_key: Any, to_value: Any) -> None:
        """Recovery: apply changelog records and derive their index keys in the same write batches."""
        batches: dict[int, Any] = {}
        latest: dict[tuple[int, bytes], bytes | None] = {}  # values written earlier in this batch
        offsets: dict[Any, int] = {}
        for event in batch:
            msg = event.message
            offsets[msg.tp] = max(msg.offset, offsets.get(msg.tp, -1))
            partition, key, value = msg.partition, msg.key, msg.value
            db = self._db_for_partition(partition)
            write = batches.setdefault(partition, rocksdict.WriteBatch(raw_mode=True))
            old = latest[partition, key] if (partition, key) in latest else db.get(key)
            self._reindex(partition, write, key, old, value)
            if value is None:
                write.delete(key)
            else:
                write.put(key, value)
            latest[partition, key] = value
        for partition, write in batches.items():
            self._write_counts(partition, write)
            self._db_for_partition(partition).write(write)
        for tp, offset in offsets.items():
            self.set_persisted_offset(tp, offset)

    def get_many(self, partition: int, keys: Sequence[bytes]) -> list[bytes | None]:
        """The values of `keys` in one partition's database, in one multi-get (a cache-agent batch)."""
        if not keys:
            return []
        return list(self._db_for_partition(partition).get(list(keys)))

    def set_many(self, partition: int, items: Sequence[tuple[bytes, bytes, GeoEntry]]) -> None:
        """Write entries (in order; a key may repeat) into one partition's database with their index keys
        and the partition's counts, in one RocksDB write batch: a cache-agent batch. Each item is (key,
        value, entry), the value being the entry's JSON (`GeoEntry.to_json`), so its index keys come from
        the entry, not parsed back. Their changelog records are the table's to send (`Table.on_key_set`),
        as for a single write."""
        if not items:
            return
        db = self._db_for_partition(partition)
        batch = rocksdict.WriteBatch(raw_mode=True)
        latest: dict[bytes, tuple[frozenset[bytes], str | None]] = {}  # facts written earlier in this batch
        for (key, value, entry), old in zip(items, db.get([key for key, _, _ in items]), strict=True):
            facts = facts_of(entry)
            before = latest[key] if key in latest else entry_facts(old)
            self._refacts(partition, batch, before, facts)
            batch.put(key, value)
            latest[key] = facts
            self._key_index[key] = partition
        self._write_counts(partition, batch)
        db.write(batch)

    def load_local(self, partition: int, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Write entries (and their index keys) into one partition's database WITHOUT the changelog: only
        for benchmarks that need a large table in seconds; a restart from the changelog would not see them."""
        db = self._db_for_partition(partition)
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in items:
            self._reindex(partition, batch, key, db.get(key), value)
            batch.put(key, value)
        self._write_counts(partition, batch)
        db.write(batch)

    def _reindex(self, partition: int, batch: Any, key: bytes, old: bytes | None, new: bytes | None) -> None:
        self._refacts(partition, batch, entry_facts(old), entry_facts(new))

    def _refacts(
        self,
        partition: int,
        batch: Any,
        old: tuple[frozenset[bytes], str | None],
        new: tuple[frozenset[bytes], str | None],
    ) -> None:
        """Move the index keys and counts from what the old value implied to what the new one does."""
        (before, was), (after, now) = old, new
        if was != now:
            statuses = self.status_counts.setdefault(partition, Counter())
            if was is not None:
                statuses[was] -= 1
            if now is not None:
                statuses[now] += 1
            self._counts_changed.add(partition)
        if before == after:
            return
        counts = self.lane_counts.setdefault(partition, Counter())
        for gone in before - after:
            batch.delete(gone)
            counts[_lane(gone)] -= 1
        for added in after - before:
            batch.put(added, b"")
            counts[_lane(added)] += 1
        if sorted(map(_lane, before)) != sorted(map(_lane, after)):  # not a mere move within its lanes
            self._counts_changed.add(partition)

    def _open_for_partition(self, partition: int) -> Any:
        """Open a partition database and read its counts; an older one is indexed and counted once, here
        (after that, opening it reads a few keys, whatever the partition's size)."""
        db = super()._open_for_partition(partition)
        indexed = db.get(INDEX_MARKER) is not None
        if not indexed:
            self._build_index(partition, db)
        if indexed and db.get(COUNTS_MARKER) is not None:
            self.status_counts[partition], self.lane_counts[partition] = _read_counts(db)
        else:
            self._count(partition, db)
        return db

    def _write_counts(self, partition: int, batch: Any) -> None:
        """Put the partition's counts into `batch`: they change in the same write as the entries."""
        if partition not in self._counts_changed:
            return
        self._counts_changed.discard(partition)
        for status, count in self.status_counts.get(partition, Counter()).items():
            batch.put(COUNT_PREFIX + status.encode(), str(count).encode())
        for lane, count in self.lane_counts.get(partition, Counter()).items():
            batch.put(COUNT_PREFIX + (LANE_TAG + lane).encode(), str(count).encode())

    def _count(self, partition: int, db: Any) -> None:
        """Count a partition written before its counts were kept (or re-indexed): once, then persisted."""
        statuses = Counter[str]()
        for _, value in self._visible_items(db):
            status = entry_facts(value)[1]
            if status is not None:
                statuses[status] += 1
        lanes = Counter(
            {lane: sum(1 for _ in _keys_with_prefix(db, lane_prefix(lane).encode())) for lane in LANES}
        )
        self.status_counts[partition], self.lane_counts[partition] = statuses, lanes
        self._counts_changed.add(partition)
        batch = rocksdict.WriteBatch(raw_mode=True)
        self._write_counts(partition, batch)
        batch.put(COUNTS_MARKER, b"")
        db.write(batch)
        if statuses:
            log.info("geo table partition %d: counted %d entries by status", partition, statuses.total())

    def _build_index(self, partition: int, db: Any) -> None:
        """Index a partition written before the index existed (or by a store without it): once, at open."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        indexed = 0
        for _, value in self._visible_items(db):
            for derived in index_keys(value):
                batch.put(derived, b"")
            indexed += 1
        batch.put(INDEX_MARKER, b"")
        db.write(batch)
        if indexed:
            log.info("geo table partition %d: built the due-time index for %d entries", partition, indexed)

    # -- reads: entries for the table API, index keys for the timer -----------------------------------

    def _visible_keys(self, db: Any) -> Iterator[bytes]:
        for key, _ in self._visible_items(db):
            yield key

    def _visible_items(self, db: Any) -> Iterator[tuple[bytes, bytes]]:
        for key, value in db.items():
            if key.startswith(_INDEX_START):
                return  # index keys sort after every entry
            if key != self.offset_key:
                yield key, value

    def active_partitions(self) -> list[tuple[int, Any]]:
        """(partition, database) of this worker's active partitions: standbys are another worker's job."""
        actives = {id(db) for db in self._dbs_for_actives()}
        return [(p, db) for p, db in sorted(self._dbs.items()) if id(db) in actives]

    def due(self, lane: str, now: float, limit: int) -> Iterator[tuple[float, str]]:
        """(due time, ip) of entries in `lane` due at `now`, oldest first, at most `limit` per partition;
        reads only the keys it returns plus one per partition (the first not yet due)."""
        prefix = lane_prefix(lane).encode()
        for _, db in self.active_partitions():
            for taken, key in enumerate(_keys_with_prefix(db, prefix)):
                _, due_at, ip = parse_schedule_key(key.decode())
                if due_at > now or taken >= limit:
                    break
                yield due_at, ip

    def older_versions(self, prefix: str, current: str, limit: int) -> Iterator[str]:
        """IPs whose entry was answered by a version of the data named `prefix` ("iptocc:", "mmdb:") other
        than `current`, at most `limit` per active partition; reads only those keys (plus one per skip)."""
        start = (lane_prefix(VERSION_LANE) + prefix).encode()
        skip_from = (lane_prefix(VERSION_LANE) + current + "|").encode()
        skip_to = (lane_prefix(VERSION_LANE) + current + "}").encode()  # "}" sorts after any IP character
        for _, db in self.active_partitions():
            yield from _older(db, start, skip_from, skip_to, limit)

    def entries_by_status(self) -> Counter[str]:
        """Entries per status across this worker's active partitions (kept as counts, never scanned)."""
        actives = {p for p, _ in self.active_partitions()}
        total = Counter[str]()
        for partition, counts in self.status_counts.items():
            if partition in actives:
                total.update({status: n for status, n in counts.items() if n})
        return total

    def lane_size(self, lane: str) -> int:
        """Index keys in `lane` across this worker's active partitions (kept as counts, never scanned)."""
        actives = {p for p, _ in self.active_partitions()}
        return sum(counts[lane] for p, counts in self.lane_counts.items() if p in actives)


def _older(db: Any, start: bytes, skip_from: bytes, skip_to: bytes, limit: int) -> Iterator[str]:
    """IPs under `start` outside [skip_from, skip_to), at most `limit`, jumping over the skipped block."""
    taken, key_from = 0, start
    while True:
        for key in _keys_with_prefix(db, start, key_from):
            if key.startswith(skip_from):  # the current version's block: jump over it with a new seek
                key_from = skip_to
                break
            yield key.decode().rpartition("|")[2]
            taken += 1
            if taken >= limit:
                return
        else:
            return


def _read_counts(db: Any) -> tuple[Counter[str], Counter[str]]:
    """(entries per status, index keys per lane) as persisted beside the entries."""
    statuses, lanes = Counter[str](), Counter[str]()
    for key in _keys_with_prefix(db, COUNT_PREFIX):
        name, count = key[len(COUNT_PREFIX) :].decode(), int(db.get(key))
        if name.startswith(LANE_TAG):
            lanes[name[len(LANE_TAG) :]] = count
        else:
            statuses[name] = count
    return statuses, lanes


def _keys_with_prefix(db: Any, prefix: bytes, start: bytes | None = None) -> Iterator[bytes]:
    for key in db.keys(from_key=start or prefix):
        if not key.startswith(prefix):
            return
        yield key


class GeoTable(faust.Table[bytes, bytes]):
    """A faust Table whose store is the `IndexedStore` (RocksDB); bytes keys and values, JSON by us."""

    def _new_store_by_url(self, url: Any) -> IndexedStore:
        return IndexedStore(
            url,
            self.app,
            self,
            table_name=self.name,
            key_type=self.key_type,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
            value_type=self.value_type,
            loop=self.loop,
            options=self.options,
        )
