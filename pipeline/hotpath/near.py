"""The near cache: the entries one worker's hot path serves hits from, without the hop to the table. Pure.

Apart from routing.py (which reads and fills it per event) because the replica's feeder and the web API
read it too.
"""

from __future__ import annotations

import json
from collections import OrderedDict

UNKNOWN_HASH = -1  # a near-cache entry learnt from the resolved topic has its key hash computed on first use


class NearCache:
    """IP -> (entry JSON, key hash, seen mark), at most `capacity` of them.

    The seen mark says when this worker last sent the IP to the table's owner: 0 never, `-t` at t with no
    answer from the owner since (our own provisional entry), `t` at t and the owner has published since.

    Why it exists: a hit served here costs a dict lookup, while the table's owner is another partition and
    another hop away. Entries come from the resolved topic (every change the table's owner publishes) and
    from this worker's own provisional entries. Least recently USED goes first, so a hot IP stays however
    long ago its answer changed. The key hash (murmur2 of the IP, which picks the output partition) is kept
    beside the entry because computing it in Python costs more than the rest of a hit.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[bytes, tuple[bytes, int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, ip: bytes) -> tuple[bytes, int, float] | None:
        """(entry JSON, key hash or UNKNOWN_HASH, seen-sent time or 0.0); marks the IP as just used."""
        found = self._entries.get(ip)
        if found is not None:
            self._entries.move_to_end(ip)
        return found

    def items(self) -> list[tuple[bytes, tuple[bytes, int, float]]]:
        """A snapshot of every (ip, (entry, key hash, seen mark)), least recently used first."""
        return list(self._entries.items())

    def entry(self, ip: bytes) -> bytes | None:
        """The entry JSON alone, without marking the IP as used (for views and tests)."""
        found = self._entries.get(ip)
        return found[0] if found else None

    def put(self, ip: bytes, entry: bytes, key_hash: int = UNKNOWN_HASH, seen_at: float = 0.0) -> None:
        if self.capacity <= 0:
            return
        self._entries[ip] = (entry, key_hash, seen_at)
        self._entries.move_to_end(ip)
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def refresh(self, ip: bytes, entry: bytes | None) -> None:
        """`learn`, for an IP this cache holds; others are left to the replica (the cache keeps what is
        used, not what was published last)."""
        if ip in self._entries:
            self.learn(ip, entry)

    def learn(self, ip: bytes, entry: bytes | None) -> None:
        """Take the table's latest entry for `ip` (None, a tombstone, forgets it); keeps a known key hash.

        Once the owner published the IP it has the entry, so this worker stops re-sending it as seen. An
        owner's entry older (`updated_at`) than the owner's entry held is ignored: records of one IP in two
        partitions (the resolved topic's count changed under running workers) arrive in either order. Our
        own provisional entry (a negative seen mark) always gives way to the owner's.
        """
        if entry is None:
            self._entries.pop(ip, None)
            return
        found = self._entries.get(ip)
        if found is not None and found[2] >= 0 and _updated_at(entry) < _updated_at(found[0]):
            return
        self.put(ip, entry, found[1] if found else UNKNOWN_HASH, abs(found[2]) if found else 0.0)


def _updated_at(entry: bytes) -> float:
    """An entry JSON's `updated_at` (0 when it has none or is not an entry: it never wins on age)."""
    try:
        value = json.loads(entry).get("updated_at", 0.0)
        return float(value) if isinstance(value, int | float) else 0.0
    except (ValueError, AttributeError, RecursionError):
        return 0.0
