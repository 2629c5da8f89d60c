"""`geo-pipeline retry` and `forget` in the cache wing: what a worker selects (the entries of its active
partitions an operator asked for, read through the due-time index of pipeline/cache/table.py, never a
table scan) and what the cache agent decides for the records they send (pure).

Cost of a `--status` selection: every status an operator may retry (partial, unresolved, invalid) lives in
the retry lane of the index, which has no per-status lane; so the selection walks the retry lane's keys of
each active partition and reads each one's entry to check its status: O(entries in the retry lane) key
reads and entry reads, the same set the retry timer serves; resolved and private entries (most of a
healthy table) are never read. An IP list costs one read per IP.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from pipeline.cache.policy import RETRY_LANE, Decision, lane_prefix, parse_schedule_key
from pipeline.kafka.partitioner import key_hash
from pipeline.models import FINAL_STATUSES, GeoEntry

RETRYABLE = ("partial", "unresolved", "invalid")  # pending is in flight already; private is never asked
# an IP named on the command line may also be refreshed: a resolved answer asked again
RETRYABLE_BY_IP = (*RETRYABLE, "resolved")


def parse_statuses(text: str | Iterable[str], allowed: tuple[str, ...] = RETRYABLE) -> tuple[str, ...]:
    """The statuses of a `--status a,b` option (or a list of them), checked; ValueError names a bad one."""
    words = text.split(",") if isinstance(text, str) else list(text)
    found = tuple(dict.fromkeys(w.strip().lower() for w in words if w.strip()))
    bad = [w for w in found if w not in allowed]
    if bad or not found:
        raise ValueError(f"statuses must be among {', '.join(allowed)}; got {', '.join(bad) or 'none'}")
    return found


def owned(ips: Iterable[str], partitions: int, active: Iterable[int]) -> list[str]:
    """The IPs (normalised) whose geo table partition is one of `active`: the ones this worker answers for."""
    mine = set(active)
    return [ip for ip in ips if key_hash(ip.encode()) % partitions in mine]


def status_of(raw: bytes | None) -> str | None:
    """An entry value's status, or None (no entry, or not an entry)."""
    if not raw:
        return None
    try:
        status = json.loads(raw).get("status")
    except (ValueError, AttributeError, RecursionError):
        return None
    return status if isinstance(status, str) else None


def in_retry_lane(dbs: Iterable[tuple[int, Any]], statuses: tuple[str, ...]) -> Iterator[tuple[str, bool]]:
    """(ip, whether its entry has one of `statuses`) for every key of the retry lane, partition by
    partition (see the module's note for the cost; every key is yielded, so a caller can pace a long walk
    that matches little); `dbs` are (partition, database) of the active partitions."""
    prefix = lane_prefix(RETRY_LANE).encode()
    for _, db in dbs:
        for key in db.keys(from_key=prefix):
            if not key.startswith(prefix):
                break
            ip = parse_schedule_key(key.decode())[2]
            yield ip, status_of(db.get(ip.encode())) in statuses


def on_operator_retry(entry: GeoEntry | None, at: float, statuses: tuple[str, ...]) -> Decision:
    """An operator asked at `at` for entries of `statuses` to be due now: the entry's due time moves to
    `at`, so the retry timer asks for it next, within the budget as usual (nothing is asked here).

    Idempotent: an entry already due by `at`, or changed since `at` (an attempt started, an answer came:
    a replayed request must not ask twice) is left alone; so is one whose status no longer matches.
    """
    if entry is None or entry.status.value not in statuses or entry.status in FINAL_STATUSES:
        return Decision(None)
    if entry.updated_at > at or (entry.next_retry_at is not None and entry.next_retry_at <= at):
        return Decision(None)
    return Decision(entry.evolve(next_retry_at=at))


def on_forget(entry: GeoEntry | None) -> Decision:
    """An operator asked for the IP to be forgotten: delete it (tombstones on the changelog and the resolved
    topic, as the lifecycle does); a replay finds nothing and publishes the tombstone again."""
    return Decision(None, delete=True)
