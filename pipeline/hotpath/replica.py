"""Every worker's own copy of the resolved topic, on disk: what an event carries never depends on memory.

Why: the near cache is an LRU in memory, sized for the hot IPs. Security traffic is mostly distinct IPs
(scanners, botnets), so an IP the table resolved long ago is often no longer in it (evicted, or a restart
while the resolved topic holds more IPs than fit). Without this copy such an IP would be enriched with a
provisional offline entry again and again. With it, a near-cache miss reads this RocksDB copy (a few
microseconds; a bloom filter answers most misses of new IPs without touching a data block), and only an
IP that is in neither is a first sight. Kafka Streams calls this a global table; Faust's GlobalTable would
replay its changelog into every worker on each start, where this copy keeps its own offsets beside the
entries (in the same write batch), so a restart reads only what was published while it was down.

Tombstones delete, so an IP the table forgot leaves the copy too. A compacted topic drops tombstones
after `delete.retention.ms` (Kafka's default: 24 h): a copy that has been offline longer may have missed
one, so it is rebuilt from the beginning instead of caught up (REBUILD_AFTER).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import rocksdict

from pipeline import storage

log = logging.getLogger(__name__)

OFFSET_PREFIX = b"\x00offset:"  # + partition: the next offset to read; never an IP (IP keys are ASCII text)
WRITTEN_KEY = b"\x00written"  # Unix seconds of the last write, to tell a short restart from a long absence
REBUILD_AFTER = 20 * 3600.0  # s offline before rebuilding: under Kafka's default delete.retention.ms (24 h)
WRITE_BUFFER = 4 * 1024 * 1024  # bytes per memtable: bursts of new IPs flush in few, larger files
BLOOM_BITS = 10  # bits per key: ~1% false positives, so a new IP's miss rarely reads a data block


def _options() -> rocksdict.Options:
    return storage.options(WRITE_BUFFER, BLOOM_BITS)  # in the worker's one RocksDB budget, with the table's


class Replica:
    """IP -> the latest entry JSON on the resolved topic, with the offsets it was read up to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: rocksdict.Rdict | None = None
        self.rebuilt = False  # this start read the topic from its beginning (new, stale or reset copy)

    def open(self, now: float) -> None:
        """Open the copy; one last written more than REBUILD_AFTER ago is wiped first."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = rocksdict.Rdict(str(self.path), options=_options())
        written = db.get(WRITTEN_KEY)
        if written is None or now - float(written) > REBUILD_AFTER:
            if written is not None:
                log.info("replica: last written %.0f h ago, rebuilding it", (now - float(written)) / 3600)
            db.close()
            self._wipe()
            db = rocksdict.Rdict(str(self.path), options=_options())
            self.rebuilt = True
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def reset(self) -> None:
        """Forget everything (a stored offset the topic no longer has: it was recreated or truncated)."""
        self.close()
        self._wipe()
        self._db = rocksdict.Rdict(str(self.path), options=_options())
        self.rebuilt = True

    def get(self, ip: bytes) -> bytes | None:
        """The latest entry JSON of `ip`, or None when the resolved topic has none (as far as read)."""
        db = self._db
        if db is None:
            return None
        value = db.get(ip)
        return value if isinstance(value, bytes) else None

    def offsets(self) -> dict[int, int]:
        """partition -> the next offset to read, for every partition this copy has read from."""
        assert self._db is not None
        found: dict[int, int] = {}
        for key, value in self._db.items(from_key=OFFSET_PREFIX):
            if not isinstance(key, bytes) or not key.startswith(OFFSET_PREFIX):
                break
            found[int(key[len(OFFSET_PREFIX) :])] = int(value)
        return found

    def apply(
        self, updates: Iterable[tuple[bytes, bytes | None]], ends: Mapping[int, int], now: float
    ) -> None:
        """Write (key, entry JSON) pairs (None deletes) and `ends` (partition -> the next offset to read) in
        one batch: the entries and the offsets they were read up to land together or not at all."""
        assert self._db is not None
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in updates:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        for partition, end in ends.items():
            batch.put(OFFSET_PREFIX + str(partition).encode(), str(end).encode())
        batch.put(WRITTEN_KEY, repr(now).encode())
        self._db.write(batch)

    def disk_bytes(self) -> int:
        """Bytes the copy takes on disk (its files, WAL included)."""
        if not self.path.exists():
            return 0
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    def _wipe(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
