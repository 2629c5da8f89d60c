"""Cache policy: every decision about a geo cache entry, as pure functions of (entry, input, now).

The cache agent is the only writer of the table and stays thin: it asks these functions what the entry
becomes and whether to ask the resolver, then writes. Keeping them pure means idempotency ("the same
result applied twice leaves the same table") and the retry schedule are unit-tested without Kafka.

Attempts are numbered: a resolve request carries the attempt it starts, and its result carries the same
number back. A result whose attempt is not the one in flight is a duplicate or stale (at-least-once
redelivery, a timer re-emission that crossed an answer) and changes nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .addresses import AddressKind
from .models import (
    FINAL_STATUSES,
    EntryStatus,
    GeoData,
    GeoEntry,
    LookupResult,
    PermanentFailure,
    Resolved,
    TransientFailure,
)

RETRY_LANE = "0"  # index lane of pending/unresolved/partial entries: always served first
REFRESH_LANE = "1"  # index lane of resolved entries waiting for their refresh: served after retries
DUE_DIGITS = 13  # milliseconds since 1970 fit 13 digits until the year 2286: keys sort by due time


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to look at an entry again; built from Settings."""

    base: float = 60.0  # first retry a minute after the first failure
    cap: float = 4 * 3600.0  # back-off stops doubling at a few hours
    slow_lane_after: int = 12  # after this many failed attempts an address is retried ...
    slow_lane_interval: float = 86400.0  # ... once a day
    pending_timeout: float = 600.0  # a request unanswered this long is assumed lost and re-emitted
    refresh_after: float = 30 * 86400.0  # resolved answers older than this are refreshed


@dataclass(frozen=True, slots=True)
class Decision:
    """What the cache agent does for one input: the entry to write (None: unchanged), whether to resolve."""

    entry: GeoEntry | None
    resolve_attempt: int | None = None  # attempt number to send to the resolver, or None


def next_retry_at(attempts: int, now: float, policy: RetryPolicy, rng: random.Random) -> float:
    """Exponential back-off with jitter from the first failure, then a slow daily lane."""
    if attempts >= policy.slow_lane_after:
        delay = policy.slow_lane_interval
    else:
        exponent = min(max(0, attempts - 1), 62)  # 2**62 minutes exceeds any cap; avoids float overflow
        delay = min(policy.cap, policy.base * 2.0**exponent)
    # equal jitter: at least half the delay, so retries never bunch up earlier than planned
    return now + delay / 2 + rng.uniform(0, delay / 2)


def on_event(entry: GeoEntry | None, ip: str, kind: AddressKind, now: float, policy: RetryPolicy) -> Decision:
    """A valid event for `ip` arrived: create the entry on first sight and ask the resolver once."""
    if entry is not None:
        return Decision(None)  # known (hit, pending, or waiting for its retry): nothing to write or send
    if kind is not AddressKind.GLOBAL:
        final = GeoEntry(ip, EntryStatus.PRIVATE, first_seen=now, updated_at=now, last_error=kind.value)
        return Decision(final)
    pending = GeoEntry(
        ip,
        EntryStatus.PENDING,
        attempts=0,
        first_seen=now,
        updated_at=now,
        next_retry_at=now + policy.pending_timeout,
    )
    return Decision(pending, resolve_attempt=1)


def on_retry(entry: GeoEntry | None, now: float, policy: RetryPolicy) -> Decision:
    """The timer says `entry` is due: start its next attempt, unless that already happened (idempotent)."""
    if entry is None or entry.status in FINAL_STATUSES:
        return Decision(None)
    if entry.next_retry_at is None or entry.next_retry_at > now:
        return Decision(None)  # already re-emitted by an earlier request, or answered since
    attempt = entry.attempts + 1
    pending = entry.evolve(
        status=EntryStatus.PENDING if entry.status is EntryStatus.UNRESOLVED else entry.status,
        next_retry_at=now + policy.pending_timeout,
        updated_at=now,
    )
    return Decision(pending, resolve_attempt=attempt)


def apply_result(
    entry: GeoEntry | None,
    attempt: int,
    result: LookupResult,
    now: float,
    policy: RetryPolicy,
    rng: random.Random,
) -> GeoEntry | None:
    """Fold a lookup result into the entry; None when it changes nothing (duplicate or stale)."""
    if entry is None or attempt != entry.attempts + 1 or entry.status in FINAL_STATUSES:
        return None
    if isinstance(result, Resolved):
        return entry.evolve(
            status=EntryStatus.RESOLVED,
            geo=result.geo,
            provider=result.provider,
            attempts=attempt,
            updated_at=now,
            last_error=None,
            next_retry_at=now + policy.refresh_after,
        )
    if isinstance(result, PermanentFailure):
        return entry.evolve(
            status=EntryStatus.INVALID,
            geo=GeoData(),
            provider=result.provider,
            attempts=attempt,
            updated_at=now,
            last_error=result.reason,
            next_retry_at=None,
        )
    return _transient(entry, attempt, result, now, policy, rng)


def _transient(
    entry: GeoEntry,
    attempt: int,
    result: TransientFailure,
    now: float,
    policy: RetryPolicy,
    rng: random.Random,
) -> GeoEntry:
    retry = next_retry_at(attempt, now, policy, rng)
    if entry.status is EntryStatus.RESOLVED or (entry.geo.country_code and result.geo is None):
        # a failed refresh keeps the answer we had; only the retry time moves
        return entry.evolve(attempts=attempt, updated_at=now, last_error=result.reason, next_retry_at=retry)
    status = EntryStatus.PARTIAL if result.geo and result.geo.country_code else EntryStatus.UNRESOLVED
    return entry.evolve(
        status=status,
        geo=result.geo or GeoData(),
        provider=result.provider if result.geo else None,
        attempts=attempt,
        updated_at=now,
        last_error=result.reason,
        next_retry_at=retry,
    )


def schedule_key(entry: GeoEntry) -> str | None:
    """The entry's key in the due-time index, or None when nothing is ever due (final entries).

    Keys sort by lane then due time, so the timer reads due entries oldest-first and stops at the first
    one not yet due: a tick costs O(due entries), never O(table).
    """
    if entry.next_retry_at is None or entry.status in FINAL_STATUSES:
        return None
    lane = REFRESH_LANE if entry.status is EntryStatus.RESOLVED else RETRY_LANE
    return f"{lane}{int(entry.next_retry_at * 1000):0{DUE_DIGITS}d}|{entry.ip}"


def parse_schedule_key(key: str) -> tuple[str, float, str]:
    """(lane, due time, ip) from an index key."""
    lane, rest = key[0], key[1:]
    due, _, ip = rest.partition("|")
    return lane, int(due) / 1000, ip
