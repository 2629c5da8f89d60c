"""One input batch of the cache agent, as the table and the producer see it: its reads in one multi-get per
partition, its writes in one RocksDB write batch per partition, its records sent in order at the end.

Why this keeps Faust's guarantees (see the agent's docstring for the rules): every write is applied with
its input event current (`faustx.as_current`), and its changelog record goes through Faust's own
`Table.on_key_set`, which sends it to that event's partition, exactly as a single `table[key] = value`
would; only the store's half is gathered. A key written twice in a batch is read back as written (the
batch serves its own writes) and written to the store in order, and each write sends its changelog record.
Nothing in `apply` awaits: the changelog records (Faust's `send_soon` buffer) cannot leave before the
write batch is on disk, and a crash anywhere in the batch leaves no input committed (acks follow the batch),
so the whole batch is replayed, and every decision is idempotent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pipeline.models import GeoEntry

Send = Callable[[str, bytes, bytes | None, None, None, None], Awaitable[Any]]
_ABSENT = object()


class TableBatch:
    """The geo table seen through one batch: `get` serves the batch's own writes, `set` stages a write
    (changelog record at once, store write at `flush`), `delete` flushes, then deletes as Faust does."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.store = table.data  # pipeline.cache.table.IndexedStore
        # (partition, key) -> value read or written by this batch (None: no entry); by partition, as Faust
        # reads a key in the current event's partition only
        self._values: dict[tuple[int, bytes], bytes | None] = {}
        # partition -> (key, value, entry) staged for the store, in order
        self._writes: dict[int, list[tuple[bytes, bytes, GeoEntry]]] = defaultdict(list)

    def prefetch(self, keys_by_partition: dict[int, list[bytes]]) -> None:
        """Read the batch's keys: one multi-get per partition (a store I/O error propagates)."""
        for partition, keys in keys_by_partition.items():
            wanted = [key for key in dict.fromkeys(keys) if (partition, key) not in self._values]
            for key, value in zip(wanted, self.store.get_many(partition, wanted), strict=True):
                self._values[partition, key] = value

    def get(self, partition: int, key: bytes) -> bytes | None:
        """The entry of `key` as this batch leaves it so far (call with its event current: `partition`'s)."""
        found = self._values.get((partition, key), _ABSENT)
        if found is _ABSENT:  # not prefetched: Faust's own read, from the current event's partition
            found = self._values[partition, key] = self.table.get(key)
        return found  # type: ignore[return-value]  # bytes | None once _ABSENT is excluded

    def set(self, partition: int, key: bytes, entry: GeoEntry, value: bytes) -> None:
        """`table[key] = value` for the current event (its partition is `partition`; `value` is `entry`'s
        JSON), the store write staged until `flush`."""
        self.table.on_key_set(key, value)  # Faust: changelog record to the current event's partition
        self._writes[partition].append((key, value, entry))
        self._values[partition, key] = value

    def delete(self, key: bytes) -> None:
        """`del table[key]` for the current event: staged writes go first, so the store sees them in order;
        Faust's store deletes the key in every partition it has."""
        self.flush()
        del self.table[key]
        for known in [known for known in self._values if known[1] == key]:
            self._values[known] = None

    def flush(self) -> None:
        """Write the staged entries: one RocksDB write batch per partition."""
        for partition, items in self._writes.items():
            self.store.set_many(partition, items)
        self._writes.clear()


class Outbox:
    """The batch's records to send, in order; a record equal to the last one staged for its topic and key
    is dropped (a key seen twice in a batch: the compacted topic keeps one, the resolver asks once)."""

    def __init__(self) -> None:
        self._records: list[tuple[str, bytes, bytes | None]] = []
        self._last: dict[tuple[str, bytes], bytes | None] = {}

    def add(self, topic: str, key: bytes, value: bytes | None) -> bool:
        """Stage a record; False when it repeats the last one for (topic, key) and was dropped."""
        if self._last.get((topic, key), _ABSENT) == value:
            return False
        self._last[topic, key] = value
        self._records.append((topic, key, value))
        return True

    def __len__(self) -> int:
        return len(self._records)

    async def send(self, send: Send) -> None:
        """Hand every record to the producer, in order (each await only queues it: delivery is checked by
        the delivery guard before any commit)."""
        for topic, key, value in self._records:
            await send(topic, key, value, None, None, None)
        self._records.clear()


def by_partition(items: Iterable[tuple[int, bytes]]) -> dict[int, list[bytes]]:
    """Keys grouped by partition, in order."""
    grouped: dict[int, list[bytes]] = defaultdict(list)
    for partition, key in items:
        grouped[partition].append(key)
    return dict(grouped)
