"""The pure parts of `geo-pipeline retry` and `forget`: the agent's decisions, the records, the selection."""

from __future__ import annotations

from collections import Counter

import pytest

from pipeline.cache.operator import (
    in_retry_lane,
    on_forget,
    on_operator_retry,
    owned,
    parse_statuses,
    status_of,
)
from pipeline.cache.policy import RetryPolicy, on_retry, schedule_key
from pipeline.cli.repair import progress_line
from pipeline.kafka.partitioner import key_hash
from pipeline.messages import (
    ForgetMessage,
    OperatorRetry,
    decode_results_message,
    encode_forget,
    encode_operator_retry,
)
from pipeline.models import EntryStatus, GeoData, GeoEntry
from pipeline.web.ownership import admin_allowed

NOW = 1_000_000.0
POLICY = RetryPolicy()
ALL = ("partial", "unresolved", "invalid")


def partial(ip: str = "8.8.8.8", due: float = NOW + 3600, updated: float = NOW - 10) -> GeoEntry:
    return GeoEntry(
        ip,
        EntryStatus.PARTIAL,
        geo=GeoData("US"),
        attempts=1,
        updated_at=updated,
        next_retry_at=due,
        last_seen=NOW - 10,
        first_seen=NOW - 10,
    )


def test_an_operator_retry_makes_a_matching_entry_due_at_the_time_it_was_asked() -> None:
    """A partial entry due in an hour becomes due at the request's time, and nothing is asked yet."""
    decision = on_operator_retry(partial(), NOW, ALL)
    assert decision.entry is not None and decision.entry.next_retry_at == NOW
    assert decision.resolve_attempt is None and not decision.publish and not decision.delete


def test_then_the_timers_retry_starts_the_next_attempt() -> None:
    """The entry made due now is started by the usual retry decision (so the budget paces it)."""
    due = on_operator_retry(partial(), NOW, ALL).entry
    assert on_retry(due, NOW + 1, POLICY).resolve_attempt == 2


@pytest.mark.parametrize(
    ("entry", "statuses"),
    [
        (None, ALL),
        (partial(), ("unresolved",)),  # the status no longer matches
        (partial(updated=NOW + 1), ALL),  # changed since the request: a replay after the attempt started
        (partial(due=NOW - 5), ALL),  # already due
        (GeoEntry("10.0.0.1", EntryStatus.PRIVATE, next_retry_at=NOW + 9), ("private",)),
    ],
)
def test_an_operator_retry_leaves_alone_what_it_must_not_change(
    entry: GeoEntry | None, statuses: tuple[str, ...]
) -> None:
    """Missing, non-matching, changed-since, already-due and private entries stay as they are."""
    assert on_operator_retry(entry, NOW, statuses).entry is None


def test_an_operator_retry_applied_twice_changes_nothing_the_second_time() -> None:
    """Idempotent: the replayed request finds the entry already due and leaves it."""
    once = on_operator_retry(partial(), NOW, ALL).entry
    assert on_operator_retry(once, NOW, ALL).entry is None


def test_forget_deletes_whether_or_not_the_entry_exists() -> None:
    """A forget always deletes (a replay publishes the tombstone again)."""
    assert on_forget(partial()).delete and on_forget(None).delete


def test_the_operator_records_round_trip_and_bad_ones_decode_to_none() -> None:
    """Both records decode to what was encoded; statuses that are not strings make it None."""
    assert decode_results_message(encode_operator_retry(NOW, ALL)) == OperatorRetry(NOW, ALL)
    assert decode_results_message(encode_forget()) == ForgetMessage()
    assert decode_results_message(b'{"type":"operator-retry","at":1,"statuses":[1]}') is None
    assert decode_results_message(b'{"type":"operator-retry","statuses":[]}') is None


def test_statuses_are_checked_and_deduplicated() -> None:
    """A list keeps its order without repeats; an unknown or empty one is refused."""
    assert parse_statuses("partial, Invalid,partial") == ("partial", "invalid")
    with pytest.raises(ValueError, match="pending"):
        parse_statuses("partial,pending")
    with pytest.raises(ValueError):
        parse_statuses("")


def test_owned_keeps_the_ips_of_the_active_partitions() -> None:
    """An IP is kept exactly when its key hash lands in one of the active partitions."""
    ips = [f"8.8.{i}.1" for i in range(40)]
    mine = owned(ips, 4, [1, 3])
    assert mine == [ip for ip in ips if key_hash(ip.encode()) % 4 in (1, 3)] and 0 < len(mine) < 40


class Db(dict[bytes, bytes]):
    """A sorted key-value map with rocksdict's `keys(from_key=...)`, counting the entries it is asked for."""

    reads: Counter[bytes]

    def keys(self, from_key: bytes = b"") -> list[bytes]:  # type: ignore[override]
        return sorted(k for k in iter(self) if k >= from_key)

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        self.reads[key] += 1
        return super().get(key, default)


def test_the_retry_lane_walk_reads_only_retry_lane_entries_and_keeps_the_statuses_asked() -> None:
    """Resolved entries (refresh lane) are never read; of the retry lane, only the asked statuses match."""
    db = Db()
    entries = [
        partial("1.1.1.1"),
        GeoEntry("2.2.2.2", EntryStatus.UNRESOLVED, next_retry_at=NOW),
        GeoEntry("3.3.3.3", EntryStatus.INVALID, next_retry_at=NOW),
        GeoEntry("4.4.4.4", EntryStatus.RESOLVED, geo=GeoData("US"), next_retry_at=NOW),
    ]
    for e in entries:
        db[e.ip.encode()] = e.to_json()
        db[str(schedule_key(e)).encode()] = b""
    db.reads = Counter()
    walked = list(in_retry_lane([(0, db)], ("partial", "unresolved")))
    assert sorted(walked) == [("1.1.1.1", True), ("2.2.2.2", True), ("3.3.3.3", False)]
    assert b"4.4.4.4" not in db.reads and db.reads.total() == 3
    assert status_of(b"not json") is None and status_of(None) is None


def test_admin_routes_take_loopback_only() -> None:
    """Loopback (v4 and v6) only; another address, an unknown or a garbled peer never."""
    assert admin_allowed("127.0.0.1") and admin_allowed("127.9.9.9") and admin_allowed("::1")
    assert not admin_allowed("10.1.2.3") and not admin_allowed(None) and not admin_allowed("garbage")


def test_the_progress_line_counts_resolved_and_waiting() -> None:
    """Resolved apart, every other status summed as waiting and listed."""
    line = progress_line(1000, Counter(resolved=640, partial=360), 4.0)
    assert line == "retry: 1,000 matched, 640 resolved, 360 waiting (partial 360) after 4.0s"
