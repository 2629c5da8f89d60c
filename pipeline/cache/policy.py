"""Cache policy: every decision about a geo cache entry, as pure functions of (entry, input, now).

The cache agent is the only writer of the table and stays thin: it asks these functions what the entry
becomes, whether to ask the resolver and whether to publish, then writes. Keeping them pure means
idempotency ("the same result applied twice leaves the same table") and the retry schedule are
unit-tested without Kafka.

Attempts are numbered: a resolve request carries the attempt it starts, and its result carries the same
number back. An entry's `attempts` counts the answers applied, so attempt `attempts + 1` is the one in
flight; a result for any other attempt is a duplicate or stale (at-least-once redelivery, a re-emission
that crossed an answer) and changes nothing, but the agent publishes the current entry again: after a
crash between the table write and the publish, the replayed input repairs the resolved topic.

Statuses: `pending` means the first remote answer is still to come; its `geo` already holds what the
offline data knows (`provider` says which). It never outlives the pending timeout: a due pending entry
turns `partial` (offline country kept) or `unresolved` and is asked again.

Forgetting: an entry remembers the last day its IP was seen (`last_seen`). Once an IP has not been seen for
`stale_after`, its entry is no longer refreshed or retried (no API spend on history); after `forget_after`
it is deleted (tombstones on the changelog and the resolved topic). Seen again in between, it is due at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pipeline.addresses import AddressKind
from pipeline.models import (
    FINAL_STATUSES,
    EntryStatus,
    GeoData,
    GeoEntry,
    LookupResult,
    PermanentFailure,
    Resolved,
    TransientFailure,
)

INDEX_PREFIX = "~"  # sorts after every IP spelling ([0-9a-f:]), so index keys never mix with entries
RETRY_LANE = "0"  # index lane of pending/unresolved/partial/invalid entries: always served first
REFRESH_LANE = "1"  # index lane of resolved entries waiting for their refresh: served after retries
VERSION_LANE = "2"  # index of offline-answered entries by data version: what a newer version re-answers
DUE_DIGITS = 13  # milliseconds since 1970 fit 13 digits until the year 2286: keys sort by due time
NO_ANSWER = "no answer within the pending timeout"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to look at an entry again; built from Settings."""

    base: float = 60.0  # first retry a minute after the first failure
    cap: float = 4 * 3600.0  # back-off stops doubling at a few hours
    slow_lane_after: int = 12  # after this many failed attempts an address is retried ...
    slow_lane_interval: float = 86400.0  # ... once a day
    pending_timeout: float = 600.0  # a request unanswered this long is assumed lost and re-emitted
    refresh_after: float = 30 * 86400.0  # resolved answers older than this are refreshed
    invalid_retry: float = 7 * 86400.0  # "invalid" is one provider's word: asked again after a week
    stale_after: float = 90 * 86400.0  # not seen this long: no more refreshes or retries
    forget_after: float = 180 * 86400.0  # not seen this long: the entry is deleted
    seen_every: float = 86400.0  # last_seen is kept to the day: at most one write per IP and day


@dataclass(frozen=True, slots=True)
class Decision:
    """What the cache agent does for one input.

    `entry` is what to write (None: nothing changes); `resolve_attempt` the attempt to ask the resolver
    for; `publish` whether to publish the entry (the new one, or the current one again) to the resolved
    topic.
    """

    entry: GeoEntry | None
    resolve_attempt: int | None = None
    publish: bool = False
    delete: bool = False  # forget the IP: delete the entry, publish a tombstone
    echo: bool = False  # publish the entry (as it is after this decision) for a worker that lacks it


def first_sight(
    ip: str,
    kind: AddressKind,
    offline: GeoData | None,
    provider: str | None,
    now: float,
    policy: RetryPolicy,
    version: str | None = None,
) -> GeoEntry:
    """The entry for an IP never seen before: final `private` for non-global addresses, else `pending` with
    what the offline data knows (the hot path serves it at once; the remote answer is still to come);
    `version` names that data."""
    if kind is not AddressKind.GLOBAL:  # never asked of anyone; it only wakes up to be forgotten
        return GeoEntry(
            ip,
            EntryStatus.PRIVATE,
            first_seen=now,
            updated_at=now,
            last_error=kind.value,
            last_seen=now,
            next_retry_at=now + policy.forget_after,
        )
    known = offline is not None and offline != GeoData()
    return GeoEntry(
        ip,
        EntryStatus.PENDING,
        geo=offline if offline is not None and known else GeoData(),
        provider=provider if known else None,
        attempts=0,
        first_seen=now,
        updated_at=now,
        next_retry_at=now + policy.pending_timeout,
        data_version=version if known else None,
        last_seen=now,
    )


def on_seen(
    entry: GeoEntry | None,
    fresh: GeoEntry | None,
    now: float = 0.0,
    policy: RetryPolicy | None = None,
    first: bool = False,
) -> Decision:
    """A worker saw the IP: create its entry (`fresh`, from `first_sight`: needed only when `entry` is None)
    on first sight and ask once.

    A known entry changes nothing, except: a pending one (a worker whose own near cache lost the IP, or a
    replay after a crash between the table write and the request) sends the request and the entry again
    (the resolver drops what it already asked; the resolved topic is compacted); its `last_seen` moves
    to today, once a day, making a stale entry (no longer refreshed) due at once; and a `first` sight (the
    worker that sent it has no entry: its copy of the resolved topic lags, or lost it) is answered with an
    echo of the entry, so no worker keeps serving a provisional entry for a known IP.
    """
    if entry is None:
        if fresh is None:
            raise ValueError("on_seen needs the first-sight entry of an IP it does not know")
        is_final = fresh.status in FINAL_STATUSES
        return Decision(fresh, resolve_attempt=None if is_final else 1, publish=True)
    if entry.status is EntryStatus.PENDING:
        return Decision(None, resolve_attempt=entry.attempts + 1, publish=True)
    if policy is None or _unseen(entry, now) < policy.seen_every:
        return Decision(None, echo=first)
    seen = entry.evolve(last_seen=now)
    if _unseen(entry, now) >= policy.stale_after and entry.status not in FINAL_STATUSES:
        seen = seen.evolve(next_retry_at=now)  # it was left alone while unseen: look at it again now
    return Decision(seen, echo=first)


def on_retry(entry: GeoEntry | None, now: float, policy: RetryPolicy) -> Decision:
    """The timer says `entry` is due: start its next attempt, unless that already happened (idempotent).

    A retry that finds nothing due (a duplicate, or one that crossed an answer) still publishes the current
    entry, so a replay repairs the resolved topic. A retry for an absent entry deletes it again: the timer
    only asks about entries it found, so the entry was forgotten, and a crash after the store's delete but
    before the tombstones went out is repaired by the replay (deleting an absent entry sends both again).
    """
    if entry is None:
        return Decision(None, delete=True)
    unseen = _unseen(entry, now)
    if unseen >= policy.forget_after:
        return Decision(None, delete=True)
    if entry.next_retry_at is None or entry.next_retry_at > now:
        return Decision(None, publish=entry.status not in FINAL_STATUSES)
    if entry.status in FINAL_STATUSES or unseen >= policy.stale_after:
        # private entries, and IPs nobody sees any more, cost nothing: they only wake up to be forgotten
        return Decision(entry.evolve(next_retry_at=entry.last_seen + policy.forget_after))
    status = entry.status
    last_error = entry.last_error
    if status is EntryStatus.PENDING:  # the first answer never came: say so, never stay pending
        status = EntryStatus.PARTIAL if entry.geo.country_code else EntryStatus.UNRESOLVED
        last_error = NO_ANSWER
    retried = entry.evolve(
        status=status, last_error=last_error, next_retry_at=now + policy.pending_timeout, updated_at=now
    )
    return Decision(retried, resolve_attempt=entry.attempts + 1, publish=True)


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
            failures=0,
            updated_at=now,
            last_error=None,
            next_retry_at=now + policy.refresh_after,
            data_version=result.version or result.provider,
        )
    if isinstance(result, PermanentFailure):
        # a provider's "invalid query" may be wrong or change: asked again after a long wait, never forever
        return entry.evolve(
            status=EntryStatus.INVALID,
            geo=GeoData(),
            provider=result.provider,
            attempts=attempt,
            failures=0,
            updated_at=now,
            last_error=result.reason,
            next_retry_at=now + policy.invalid_retry,
            data_version=None,
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
    # a provider that was not asked (breaker open) learnt nothing about this address: the back-off does not
    # grow and the failure is not counted towards the slow lane, so the entry is due again soon and the
    # timer serves it within the budget once the provider is back (counted, a long outage sent addresses
    # to the daily lane)
    failures = entry.failures + 1 if result.asked else entry.failures
    retry = next_retry_at(failures if result.asked else 1, now, policy, rng)
    if entry.status is EntryStatus.RESOLVED:  # a failed refresh keeps the answer we had
        return entry.evolve(
            attempts=attempt, failures=failures, updated_at=now, last_error=result.reason, next_retry_at=retry
        )
    fallback = result.geo if result.geo is not None and result.geo != GeoData() else None
    if fallback is None and entry.geo.country_code:  # keep the offline answer the entry already has
        geo, provider, version = entry.geo, entry.provider, entry.data_version
    else:
        geo, provider = fallback or GeoData(), result.provider if fallback else None
        version = result.version if fallback else None
    return entry.evolve(
        status=EntryStatus.PARTIAL if geo.country_code else EntryStatus.UNRESOLVED,
        geo=geo,
        provider=provider,
        attempts=attempt,
        failures=failures,
        updated_at=now,
        last_error=result.reason,
        next_retry_at=retry,
        data_version=version,
    )


def on_reanswer(entry: GeoEntry | None, fresh: GeoEntry, now: float) -> Decision:
    """Newer offline data is in use: an entry whose geography came from an older version of it takes the
    new answer (`fresh`, the first-sight entry the data gives now); its status follows the country (a
    remote answer is never replaced: only offline-answered entries are swept)."""
    if entry is None or entry_source(entry) is None:
        return Decision(None)
    if (fresh.geo, fresh.provider, fresh.data_version) == (entry.geo, entry.provider, entry.data_version):
        # already re-answered (a replay after a crash between the store's write and the changelog's, or a
        # duplicate): publish it again so the changelog and the resolved topic get it too
        return Decision(None, publish=True)
    status, due = entry.status, entry.next_retry_at
    if status is EntryStatus.PARTIAL and not fresh.geo.country_code:
        status = EntryStatus.UNRESOLVED
    elif status is EntryStatus.RESOLVED and not fresh.geo.country_code:
        status, due = EntryStatus.UNRESOLVED, now  # the country is gone: ask again at once
    reanswered = entry.evolve(
        status=status,
        geo=fresh.geo,
        provider=fresh.provider,
        data_version=fresh.data_version,
        updated_at=now,
        next_retry_at=due,
    )
    return Decision(reanswered, publish=True)


OFFLINE_PROVIDERS = {"offline": "iptocc:", "mmdb": "mmdb:"}  # provider name -> its data versions' prefix


def entry_source(entry: GeoEntry) -> str | None:
    """The offline provider whose data answered the entry's geography, or None (a remote, or nothing)."""
    for name, prefix in OFFLINE_PROVIDERS.items():
        if entry.provider == name and (entry.data_version or "").startswith(prefix):
            return name
    return None


def version_key(entry: GeoEntry) -> str | None:
    """The entry's key in the data-version index (offline-answered entries only), or None: a sweep finds
    the entries answered by an older version of some offline data without reading the table."""
    if entry_source(entry) is None or entry.status in FINAL_STATUSES:
        return None
    return f"{INDEX_PREFIX}{VERSION_LANE}{entry.data_version}|{entry.ip}"


def _unseen(entry: GeoEntry, now: float) -> float:
    """Seconds since the IP was last seen; 0 when unknown (an entry without last_seen is never forgotten)."""
    return now - entry.last_seen if entry.last_seen > 0 else 0.0


def next_retry_at(failures: int, now: float, policy: RetryPolicy, rng: random.Random) -> float:
    """Exponential back-off with jitter from the first failure, then a slow daily lane; `failures` counts
    the failed asks in a row (GeoEntry.failures)."""
    if failures >= policy.slow_lane_after:
        delay = policy.slow_lane_interval
    else:
        exponent = min(max(0, failures - 1), 62)  # 2**62 minutes exceeds any cap; avoids float overflow
        delay = min(policy.cap, policy.base * 2.0**exponent)
    # equal jitter: at least half the delay, so retries never bunch up earlier than planned
    return now + delay / 2 + rng.uniform(0, delay / 2)


def schedule_key(entry: GeoEntry) -> str | None:
    """The entry's key in the due-time index, or None when nothing is ever due (no due time).

    Keys sort by lane then due time, so the timer reads due entries oldest-first and stops at the first
    one not yet due: a tick costs O(due entries), never O(table).
    """
    if entry.next_retry_at is None:
        return None
    # private entries are only ever due to be forgotten: the refresh lane, served after every retry
    lane = REFRESH_LANE if entry.status in (EntryStatus.RESOLVED, EntryStatus.PRIVATE) else RETRY_LANE
    return f"{INDEX_PREFIX}{lane}{int(entry.next_retry_at * 1000):0{DUE_DIGITS}d}|{entry.ip}"


def lane_prefix(lane: str) -> str:
    """The first bytes every index key of `lane` shares: where a scan of that lane starts."""
    return INDEX_PREFIX + lane


def parse_schedule_key(key: str) -> tuple[str, float, str]:
    """(lane, due time, ip) from an index key."""
    lane, rest = key[len(INDEX_PREFIX)], key[len(INDEX_PREFIX) + 1 :]
    due, _, ip = rest.partition("|")
    return lane, int(due) / 1000, ip


def is_index_key(key: bytes) -> bool:
    """Whether a table key belongs to the due-time index rather than to an entry."""
    return key[:1] == INDEX_PREFIX.encode()
