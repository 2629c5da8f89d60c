"""Cache policy as pure functions: first sight, retries, folding results, back-off and the due-time index."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.addresses import AddressKind
from pipeline.cache.policy import (
    DUE_DIGITS,
    NO_ANSWER,
    REFRESH_LANE,
    RETRY_LANE,
    VERSION_LANE,
    Decision,
    RetryPolicy,
    apply_result,
    first_sight,
    is_index_key,
    lane_prefix,
    next_retry_at,
    on_reanswer,
    on_retry,
    on_seen,
    parse_schedule_key,
    schedule_key,
    version_key,
)
from pipeline.models import (
    EntryStatus,
    GeoData,
    GeoEntry,
    LookupResult,
    PermanentFailure,
    Resolved,
    TransientFailure,
)

S = EntryStatus
PURE = settings(database=None)
POLICY = RetryPolicy()
NOW = 1_700_000_000.0
IP = "8.8.8.8"
US = GeoData(country_code="US", country_name="United States", city="Mountain View")
OFFLINE_US = GeoData(country_code="US", country_name="United States")


def rng() -> random.Random:
    return random.Random(1234)


def pending(attempts: int = 0, now: float = NOW) -> GeoEntry:
    """An entry with attempt `attempts + 1` in flight and no answer yet, as first_sight leaves it."""
    return GeoEntry(
        IP,
        S.PENDING,
        attempts=attempts,
        first_seen=NOW,
        updated_at=now,
        next_retry_at=now + POLICY.pending_timeout,
    )


def resolved(attempts: int = 1, now: float = NOW) -> GeoEntry:
    return GeoEntry(
        IP,
        S.RESOLVED,
        geo=US,
        provider="ipapi",
        attempts=attempts,
        first_seen=NOW,
        updated_at=now,
        next_retry_at=now + POLICY.refresh_after,
    )


# --- first_sight and on_seen ---------------------------------------------------------------------------


def test_first_sight_of_global_ip_is_pending_with_the_offline_answer() -> None:
    """A global IP seen for the first time is PENDING with the offline country and names the offline data."""
    entry = first_sight(IP, AddressKind.GLOBAL, OFFLINE_US, "offline", NOW, POLICY)
    assert (entry.ip, entry.status, entry.attempts, entry.provider) == (IP, S.PENDING, 0, "offline")
    assert entry.geo == OFFLINE_US
    assert entry.first_seen == entry.updated_at == NOW
    assert entry.next_retry_at == NOW + POLICY.pending_timeout


@pytest.mark.parametrize("offline", [None, GeoData()], ids=["unknown", "empty"])
def test_first_sight_without_offline_data_is_pending_with_no_country_and_no_provider(
    offline: GeoData | None,
) -> None:
    """When the offline data knows nothing the pending entry has no country and no provider."""
    entry = first_sight(IP, AddressKind.GLOBAL, offline, "offline", NOW, POLICY)
    assert (entry.status, entry.country_code, entry.provider) == (S.PENDING, None, None)


@pytest.mark.parametrize("kind", [k for k in AddressKind if k is not AddressKind.GLOBAL])
def test_first_sight_non_global_kind_is_final_private(kind: AddressKind) -> None:
    """A non-global address becomes a final PRIVATE entry naming its kind, due only to be forgotten (in
    the refresh lane, after every retry)."""
    entry = first_sight("10.0.0.1", kind, OFFLINE_US, "offline", NOW, POLICY)
    assert entry.status is S.PRIVATE
    assert entry.last_error == kind.value
    assert entry.next_retry_at == NOW + POLICY.forget_after
    assert schedule_key(entry) is not None and schedule_key(entry).startswith(lane_prefix(REFRESH_LANE))  # type: ignore[union-attr]


def test_on_seen_first_sight_writes_publishes_and_starts_attempt_1() -> None:
    """The first seen record of a global IP writes its entry, publishes it and asks for attempt 1."""
    fresh = first_sight(IP, AddressKind.GLOBAL, OFFLINE_US, "offline", NOW, POLICY)
    assert on_seen(None, fresh) == Decision(fresh, resolve_attempt=1, publish=True)


def test_on_seen_first_sight_of_private_ip_publishes_and_asks_nothing() -> None:
    """A private IP's entry is written and published, and no provider is ever asked."""
    fresh = first_sight("10.0.0.1", AddressKind.PRIVATE, None, "offline", NOW, POLICY)
    assert on_seen(None, fresh) == Decision(fresh, resolve_attempt=None, publish=True)


def test_on_seen_of_a_pending_entry_asks_and_publishes_again_without_writing() -> None:
    """A seen record for an IP whose first answer is still pending (a replay after a crash, another
    worker) repeats the request for the same attempt and the publish; the table is not written."""
    assert on_seen(pending(), None) == Decision(None, resolve_attempt=1, publish=True)


@pytest.mark.parametrize(
    "entry",
    [
        resolved(),
        GeoEntry(IP, S.UNRESOLVED, attempts=3, next_retry_at=NOW + 100),
        GeoEntry(IP, S.PARTIAL, geo=OFFLINE_US, attempts=1, next_retry_at=NOW + 100),
        GeoEntry(IP, S.PRIVATE),
        GeoEntry(IP, S.INVALID, attempts=1, next_retry_at=NOW + 100),
    ],
    ids=lambda e: e.status.value,
)
def test_on_seen_of_an_answered_entry_does_nothing(entry: GeoEntry) -> None:
    """A seen record for an IP whose entry has an answer changes nothing and sends nothing."""
    assert on_seen(entry, None) == Decision(None)


@pytest.mark.parametrize("entry", [resolved(), GeoEntry(IP, S.PRIVATE)], ids=lambda e: e.status.value)
def test_on_seen_first_sight_of_a_known_ip_echoes_the_entry_without_writing_it(entry: GeoEntry) -> None:
    """A worker that saw a known IP as new gets the entry published again (an echo), and nothing else."""
    assert on_seen(entry, None, NOW, POLICY, first=True) == Decision(None, echo=True)


def test_on_seen_first_sight_of_a_known_ip_seen_a_day_later_echoes_the_touched_entry() -> None:
    """An echo that comes with the daily last_seen write publishes the entry as written."""
    entry = resolved().evolve(last_seen=NOW - 2 * 86400)
    decision = on_seen(entry, None, NOW, POLICY, first=True)
    assert decision.echo and decision.entry is not None and decision.entry.last_seen == NOW


def test_on_seen_without_an_entry_needs_the_first_sight_entry() -> None:
    """Calling on_seen for an unknown IP without its first-sight entry is a programming error."""
    with pytest.raises(ValueError):
        on_seen(None, None)


# --- on_retry -------------------------------------------------------------------------------------------


def test_on_retry_due_unresolved_entry_starts_the_next_attempt_and_keeps_its_status() -> None:
    """A due UNRESOLVED entry starts attempt n+1 with a fresh pending timeout, stays UNRESOLVED (its
    country is still unknown) and is published."""
    entry = GeoEntry(IP, S.UNRESOLVED, attempts=3, next_retry_at=NOW - 1, last_error="timeout")
    decision = on_retry(entry, NOW, POLICY)
    assert decision.resolve_attempt == 4 and decision.publish
    assert decision.entry is not None
    assert decision.entry.status is S.UNRESOLVED
    assert decision.entry.attempts == 3  # attempts counts answered attempts only
    assert decision.entry.next_retry_at == NOW + POLICY.pending_timeout
    assert decision.entry.updated_at == NOW


def test_on_retry_exactly_due_entry_is_retried() -> None:
    """An entry whose due time equals now is due."""
    entry = GeoEntry(IP, S.UNRESOLVED, attempts=1, next_retry_at=NOW)
    assert on_retry(entry, NOW, POLICY).resolve_attempt == 2


@pytest.mark.parametrize("status", [S.PARTIAL, S.RESOLVED, S.INVALID])
def test_on_retry_due_partial_resolved_or_invalid_keeps_its_status(status: EntryStatus) -> None:
    """A due PARTIAL, RESOLVED (refresh) or INVALID (expired) entry keeps status and geo while re-asked."""
    entry = GeoEntry(IP, status, geo=US, attempts=2, next_retry_at=NOW - 5)
    decision = on_retry(entry, NOW, POLICY)
    assert decision.resolve_attempt == 3
    assert decision.entry is not None
    assert decision.entry.status is status
    assert decision.entry.geo == entry.geo


@pytest.mark.parametrize(("geo", "status"), [(OFFLINE_US, S.PARTIAL), (GeoData(), S.UNRESOLVED)])
def test_on_retry_of_a_timed_out_pending_entry_never_stays_pending(geo: GeoData, status: EntryStatus) -> None:
    """A pending entry whose answer never came is no longer pending once due: PARTIAL when it has the
    offline country, else UNRESOLVED, saying why; the same attempt is asked again."""
    entry = pending().evolve(geo=geo)
    decision = on_retry(entry, NOW + POLICY.pending_timeout, POLICY)
    assert decision.entry is not None and decision.resolve_attempt == 1
    assert decision.entry.status is status and decision.entry.geo == geo
    assert decision.entry.last_error == NO_ANSWER


def test_on_retry_not_yet_due_republishes_and_starts_nothing() -> None:
    """A retry for an entry not yet due (re-emitted already, or answered since) writes nothing, asks
    nothing, and publishes the current entry again (a replay repairs the resolved topic)."""
    entry = GeoEntry(IP, S.UNRESOLVED, attempts=2, next_retry_at=NOW + 1)
    assert on_retry(entry, NOW, POLICY) == Decision(None, publish=True)


def test_on_retry_missing_entry_deletes_it_again() -> None:
    """A retry for an IP without an entry (it was forgotten; a replay after a crash between the store's
    delete and the tombstones) deletes it again, so both tombstones go out again."""
    assert on_retry(None, NOW, POLICY) == Decision(None, delete=True)


def test_on_retry_of_a_due_private_entry_seen_lately_only_moves_its_wake_up() -> None:
    """A private entry is never asked of anyone: when due it only sleeps until it would be forgotten."""
    entry = GeoEntry("10.0.0.1", S.PRIVATE, last_seen=NOW - 10, next_retry_at=NOW - 1)
    decision = on_retry(entry, NOW, POLICY)
    assert decision.resolve_attempt is None and not decision.publish and not decision.delete
    assert decision.entry is not None and decision.entry.next_retry_at == NOW - 10 + POLICY.forget_after


def test_on_retry_undated_entry_is_never_retried() -> None:
    """An entry with no due time is not retried."""
    decision = on_retry(GeoEntry(IP, S.UNRESOLVED, next_retry_at=None), NOW, POLICY)
    assert decision.entry is None and decision.resolve_attempt is None


def test_on_retry_same_retry_applied_twice_second_does_nothing() -> None:
    """Applying the same retry request twice starts one attempt: the second sees a future due time."""
    entry = GeoEntry(IP, S.UNRESOLVED, attempts=1, next_retry_at=NOW - 1)
    first = on_retry(entry, NOW, POLICY)
    assert first.entry is not None and first.resolve_attempt == 2
    second = on_retry(first.entry, NOW, POLICY)
    assert second.entry is None and second.resolve_attempt is None


# --- apply_result ---------------------------------------------------------------------------------------


def test_apply_result_resolved_sets_geo_and_schedules_refresh() -> None:
    """A Resolved answer makes the entry RESOLVED with its geo, due again at now + refresh_after."""
    after = apply_result(pending(), 1, Resolved(US, "ipapi"), NOW + 2, POLICY, rng())
    assert after is not None
    assert after.status is S.RESOLVED
    assert after.geo == US and after.provider == "ipapi"
    assert after.attempts == 1
    assert after.last_error is None
    assert after.updated_at == NOW + 2
    assert after.next_retry_at == NOW + 2 + POLICY.refresh_after
    assert schedule_key(after) is not None and schedule_key(after).startswith(lane_prefix(REFRESH_LANE))  # type: ignore[union-attr]


def test_apply_result_permanent_is_invalid_with_reason_and_asked_again_after_a_long_wait() -> None:
    """A PermanentFailure makes the entry INVALID with its reason and no geo; it is not final: it expires
    after `invalid_retry` (one wrong answer cannot blind the cache for an IP)."""
    after = apply_result(pending(), 1, PermanentFailure("reserved range", "ipapi"), NOW, POLICY, rng())
    assert after is not None
    assert after.status is S.INVALID
    assert after.last_error == "reserved range"
    assert after.provider == "ipapi"
    assert after.geo == GeoData()
    assert after.next_retry_at == NOW + POLICY.invalid_retry
    assert schedule_key(after) is not None and schedule_key(after).startswith(lane_prefix(RETRY_LANE))  # type: ignore[union-attr]


def test_apply_result_transient_without_geo_is_unresolved_with_next_retry() -> None:
    """A TransientFailure without geo makes a countryless entry UNRESOLVED and due at the back-off time."""
    after = apply_result(pending(), 1, TransientFailure("HTTP 503", "ipapi"), NOW, POLICY, rng())
    assert after is not None
    assert after.status is S.UNRESOLVED
    assert after.last_error == "HTTP 503"
    assert after.attempts == 1
    assert after.provider is None
    assert after.next_retry_at == next_retry_at(1, NOW, POLICY, rng())
    assert NOW + POLICY.base / 2 <= after.next_retry_at <= NOW + POLICY.base
    assert schedule_key(after) is not None and schedule_key(after).startswith(lane_prefix(RETRY_LANE))  # type: ignore[union-attr]


def test_apply_result_transient_on_a_pending_entry_with_offline_country_keeps_it_as_partial() -> None:
    """A pending entry that already carries the offline country stays PARTIAL (never pending) with that
    country when the remote fails without a fallback."""
    entry = pending().evolve(geo=OFFLINE_US, provider="offline")
    after = apply_result(entry, 1, TransientFailure("HTTP 503", "ipapi"), NOW, POLICY, rng())
    assert after is not None
    assert (after.status, after.geo, after.provider) == (S.PARTIAL, OFFLINE_US, "offline")


def test_apply_result_transient_with_fallback_geo_is_partial_and_still_due() -> None:
    """A TransientFailure carrying a fallback country makes the entry PARTIAL, still in the retry lane."""
    result = TransientFailure("HTTP 429", "ipapi", OFFLINE_US)
    after = apply_result(pending(), 1, result, NOW, POLICY, rng())
    assert after is not None
    assert after.status is S.PARTIAL
    assert after.geo == OFFLINE_US
    assert after.country_code == "US"
    assert after.provider == "ipapi"
    assert after.next_retry_at is not None and after.next_retry_at > NOW
    assert schedule_key(after).startswith(lane_prefix(RETRY_LANE))  # type: ignore[union-attr]


def test_apply_result_transient_with_empty_fallback_geo_is_unresolved() -> None:
    """A fallback geo without a country code does not make the entry PARTIAL."""
    result = TransientFailure("HTTP 429", "ipapi", GeoData(city="Somewhere"))
    after = apply_result(pending(), 1, result, NOW, POLICY, rng())
    assert after is not None and after.status is S.UNRESOLVED


def test_apply_result_partial_entry_keeps_its_country_when_retry_has_no_fallback() -> None:
    """A PARTIAL entry whose retry fails with no fallback geo keeps the country it already had."""
    entry = GeoEntry(IP, S.PARTIAL, geo=OFFLINE_US, provider="ipapi", attempts=1, next_retry_at=NOW + 600)
    after = apply_result(entry, 2, TransientFailure("timeout", "ipapi"), NOW, POLICY, rng())
    assert after is not None
    assert after.status is S.PARTIAL and after.geo == OFFLINE_US and after.attempts == 2


def test_apply_result_failed_refresh_keeps_resolved_geo_and_moves_retry() -> None:
    """A failed refresh of a RESOLVED entry keeps status, geo and provider; only the retry time moves."""
    entry = resolved(attempts=1).evolve(next_retry_at=NOW + POLICY.pending_timeout)
    result = TransientFailure("HTTP 503", "ipapi", OFFLINE_US)  # even a fallback must not replace the answer
    after = apply_result(entry, 2, result, NOW, POLICY, rng())
    assert after is not None
    assert after.status is S.RESOLVED
    assert after.geo == US and after.provider == "ipapi"
    assert after.attempts == 2
    assert after.last_error == "HTTP 503"
    assert after.next_retry_at is not None and NOW < after.next_retry_at <= NOW + POLICY.cap


@pytest.mark.parametrize("attempt", [0, 1, 3, 99])
def test_apply_result_stale_or_duplicate_attempt_returns_none(attempt: int) -> None:
    """A result whose attempt is not the one in flight (attempts + 1) changes nothing."""
    entry = pending(attempts=1)  # attempt 2 in flight
    assert apply_result(entry, attempt, Resolved(US, "ipapi"), NOW, POLICY, rng()) is None


def test_apply_result_on_missing_or_final_entry_returns_none() -> None:
    """Results for an unknown IP or a final (private) entry change nothing."""
    assert apply_result(None, 1, Resolved(US, "ipapi"), NOW, POLICY, rng()) is None
    assert apply_result(GeoEntry(IP, S.PRIVATE), 1, Resolved(US, "ipapi"), NOW, POLICY, rng()) is None


def test_apply_result_on_an_expired_invalid_entry_can_resolve_it() -> None:
    """An INVALID entry asked again (its retry expired) takes a Resolved answer."""
    entry = GeoEntry(IP, S.INVALID, provider="ipapi", attempts=1, next_retry_at=NOW - 1)
    after = apply_result(entry, 2, Resolved(US, "ipapi"), NOW, POLICY, rng())
    assert after is not None and after.status is S.RESOLVED


@pytest.mark.parametrize(
    "result",
    [
        Resolved(US, "ipapi"),
        PermanentFailure("invalid query", "ipapi"),
        TransientFailure("timeout", "ipapi"),
        TransientFailure("timeout", "ipapi", OFFLINE_US),
    ],
    ids=["resolved", "permanent", "transient", "partial"],
)
def test_apply_result_same_result_twice_changes_nothing_the_second_time(result: LookupResult) -> None:
    """Redelivery of a result already folded in is a no-op (the attempt is no longer in flight)."""
    once = apply_result(pending(), 1, result, NOW, POLICY, rng())
    assert once is not None
    assert apply_result(once, 1, result, NOW + 5, POLICY, rng()) is None


def test_full_cycle_transient_retry_then_resolved() -> None:
    """seen -> transient -> retry when due -> resolved walks the attempts 1, 2 and ends RESOLVED."""
    first = on_seen(None, first_sight(IP, AddressKind.GLOBAL, None, "offline", NOW, POLICY))
    assert first.entry is not None and first.resolve_attempt == 1
    failed = apply_result(first.entry, 1, TransientFailure("timeout", "ipapi"), NOW + 1, POLICY, rng())
    assert failed is not None and failed.next_retry_at is not None
    retry = on_retry(failed, failed.next_retry_at, POLICY)
    assert retry.entry is not None and retry.resolve_attempt == 2
    done = apply_result(retry.entry, 2, Resolved(US, "ipapi"), failed.next_retry_at + 1, POLICY, rng())
    assert done is not None and done.status is S.RESOLVED and done.attempts == 2


# --- next_retry_at --------------------------------------------------------------------------------------


@pytest.mark.parametrize("attempts", range(0, 12))
def test_next_retry_at_within_equal_jitter_bounds(attempts: int) -> None:
    """The delay lies in [d/2, d] with d = min(cap, base * 2**(attempts-1)) below the slow lane."""
    delay = min(POLICY.cap, POLICY.base * 2 ** max(0, attempts - 1))
    r = random.Random(attempts)
    for _ in range(200):
        due = next_retry_at(attempts, NOW, POLICY, r)
        assert NOW + delay / 2 <= due <= NOW + delay


def test_next_retry_at_grows_exponentially_then_caps() -> None:
    """The upper bound of the delay doubles each attempt from `base` until it reaches `cap`."""
    low = random.Random(0)
    low.uniform = lambda a, b: b  # type: ignore[method-assign]  # always the longest jitter
    delays = [next_retry_at(n, 0.0, POLICY, low) for n in range(1, 12)]
    assert delays[:5] == [60.0, 120.0, 240.0, 480.0, 960.0]
    assert all(b == min(POLICY.cap, 2 * a) for a, b in itertools.pairwise(delays))
    assert delays[-1] == POLICY.cap


def test_next_retry_at_slow_lane_after_n_attempts() -> None:
    """From `slow_lane_after` failed attempts on, the delay is the slow-lane interval (daily), jittered."""
    policy = RetryPolicy(slow_lane_after=5, slow_lane_interval=86400.0, cap=3600.0)
    r = random.Random(7)
    for attempts in (5, 6, 50):
        due = next_retry_at(attempts, NOW, policy, r)
        assert NOW + 43200.0 <= due <= NOW + 86400.0
    assert next_retry_at(4, NOW, policy, r) <= NOW + 3600.0


@PURE
@given(
    attempts=st.integers(min_value=0, max_value=200),
    now=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    seed=st.integers(min_value=0, max_value=2**32),
    base=st.floats(min_value=1.0, max_value=3600.0),
    cap=st.floats(min_value=1.0, max_value=86400.0),
    slow_after=st.integers(min_value=1, max_value=30),
    slow_interval=st.floats(min_value=1.0, max_value=7 * 86400.0),
)
def test_next_retry_at_always_after_now_and_within_longest_delay(
    attempts: int, now: float, seed: int, base: float, cap: float, slow_after: int, slow_interval: float
) -> None:
    """next_retry_at is always > now and <= now + max(cap, slow_lane_interval)."""
    policy = RetryPolicy(base=base, cap=cap, slow_lane_after=slow_after, slow_lane_interval=slow_interval)
    due = next_retry_at(attempts, now, policy, random.Random(seed))
    assert now < due <= now + max(cap, slow_interval)


# --- schedule_key ---------------------------------------------------------------------------------------


def test_schedule_key_retry_lane_sorts_before_refresh_lane() -> None:
    """An overdue-later retry still sorts before an earlier refresh: retries are served first."""
    retry = GeoEntry("9.9.9.9", S.UNRESOLVED, next_retry_at=NOW + 1000)
    refresh = GeoEntry("1.1.1.1", S.RESOLVED, geo=US, next_retry_at=NOW)
    retry_key, refresh_key = schedule_key(retry), schedule_key(refresh)
    assert retry_key is not None and refresh_key is not None
    assert retry_key.startswith(lane_prefix(RETRY_LANE)) and refresh_key.startswith(lane_prefix(REFRESH_LANE))
    assert retry_key < refresh_key


@pytest.mark.parametrize("status", [S.PENDING, S.UNRESOLVED, S.PARTIAL, S.INVALID])
def test_schedule_key_non_resolved_statuses_use_retry_lane(status: EntryStatus) -> None:
    """PENDING, UNRESOLVED, PARTIAL and INVALID entries are indexed in the retry lane."""
    key = schedule_key(GeoEntry(IP, status, next_retry_at=NOW))
    assert key is not None and key.startswith(lane_prefix(RETRY_LANE))


def test_index_keys_sort_after_every_ip_spelling() -> None:
    """Index keys never mix with entry keys: they sort after any IPv4 or IPv6 text (and the store's
    offset key), so the entries of a partition are a prefix of its key order."""
    key = schedule_key(GeoEntry(IP, S.UNRESOLVED, next_retry_at=NOW))
    assert key is not None and is_index_key(key.encode())
    for ip in ("255.255.255.255", "ffff:ffff::", "::", "__faust\x00offset__"):
        assert ip < key and not is_index_key(ip.encode())


def test_schedule_key_earlier_due_sorts_first_within_a_lane() -> None:
    """Within a lane, keys sort by due time regardless of IP text (fixed-width milliseconds)."""
    dues = [5.0, 999.999, 1_000.0, NOW, NOW + 0.001, 9_999_999_999.0]
    ips = ["9.9.9.9", "1.1.1.1", "ffff::1", "2001:4860::1", "0.0.0.1", "8.8.8.8"]
    pairs = zip(ips, dues, strict=True)
    keys = [schedule_key(GeoEntry(ip, S.UNRESOLVED, next_retry_at=d)) for ip, d in pairs]
    assert all(
        k is not None and len(k.partition("|")[0]) == len(lane_prefix(RETRY_LANE)) + DUE_DIGITS for k in keys
    )
    assert keys == sorted(keys)  # type: ignore[type-var]


def test_schedule_key_private_entries_wait_in_the_refresh_lane() -> None:
    """Private entries are indexed in the refresh lane: only ever due to be forgotten, after any retry."""
    key = schedule_key(GeoEntry(IP, S.PRIVATE, next_retry_at=NOW))
    assert key is not None and key.startswith(lane_prefix(REFRESH_LANE))


def test_schedule_key_entry_without_due_time_has_no_key() -> None:
    """An entry with no due time has no index key."""
    assert schedule_key(GeoEntry(IP, S.UNRESOLVED, next_retry_at=None)) is None


@PURE
@given(
    ms=st.integers(min_value=0, max_value=10**DUE_DIGITS - 1),
    ip=st.sampled_from(["8.8.8.8", "2001:4860:4860::8888", "1.1.1.1", "::1"]),
    status=st.sampled_from([S.PENDING, S.UNRESOLVED, S.PARTIAL, S.RESOLVED]),
)
def test_parse_schedule_key_round_trips(ms: int, ip: str, status: EntryStatus) -> None:
    """parse_schedule_key(schedule_key(e)) gives back the lane, the due time (to the ms) and the IP."""
    due = ms / 1000
    key = schedule_key(GeoEntry(ip, status, next_retry_at=due))
    assert key is not None
    lane, parsed_due, parsed_ip = parse_schedule_key(key)
    assert lane == (REFRESH_LANE if status is S.RESOLVED else RETRY_LANE)
    assert parsed_ip == ip
    # The key truncates to whole ms (int(due * 1000)), and due * 1000 can land one float step below the
    # integer (128.29 * 1000 == 128289.99999999999), so the key may say 1 ms early but never late.
    assert parsed_due <= due
    assert due - parsed_due < 0.0011


@pytest.mark.parametrize("due", [0.0, 1.0, NOW, NOW + 0.5, 9_999_999_999.0])
def test_parse_schedule_key_round_trips_exactly_for_binary_exact_due_times(due: float) -> None:
    """Due times whose ms value is exact in binary (whole or half seconds) round-trip exactly."""
    key = schedule_key(GeoEntry(IP, S.UNRESOLVED, next_retry_at=due))
    assert key is not None
    assert parse_schedule_key(key) == (RETRY_LANE, due, IP)


# --- properties -----------------------------------------------------------------------------------------

geo_strategy = st.builds(
    GeoData,
    country_code=st.one_of(st.none(), st.sampled_from(["US", "AU", "DE"])),
    city=st.one_of(st.none(), st.text(max_size=5)),
)
results = st.one_of(
    st.builds(Resolved, geo=geo_strategy, provider=st.sampled_from(["ipapi", "offline"])),
    st.builds(PermanentFailure, reason=st.text(max_size=10), provider=st.just("ipapi")),
    st.builds(
        TransientFailure,
        reason=st.text(max_size=10),
        provider=st.just("ipapi"),
        geo=st.one_of(st.none(), geo_strategy),
    ),
)
live_entries = st.builds(
    GeoEntry,
    ip=st.just(IP),
    status=st.sampled_from([S.PENDING, S.UNRESOLVED, S.PARTIAL, S.RESOLVED]),
    geo=geo_strategy,
    provider=st.one_of(st.none(), st.just("ipapi")),
    attempts=st.integers(min_value=0, max_value=40),
    next_retry_at=st.one_of(st.none(), st.floats(min_value=0, max_value=4e9)),
)


@PURE
@given(
    entry=live_entries,
    result=results,
    seed=st.integers(min_value=0, max_value=2**16),
    later=st.floats(min_value=0, max_value=1e6),
)
def test_property_folding_same_result_twice_equals_folding_once(
    entry: GeoEntry, result: LookupResult, seed: int, later: float
) -> None:
    """Folding the in-flight result changes the entry; folding it again (any time later) changes nothing."""
    attempt = entry.attempts + 1
    once = apply_result(entry, attempt, result, NOW, POLICY, random.Random(seed))
    assert once is not None
    assert once.attempts == attempt
    assert apply_result(once, attempt, result, NOW + later, POLICY, random.Random(seed + 1)) is None


@PURE
@given(entry=live_entries, reason=st.text(max_size=20), seed=st.integers(min_value=0, max_value=2**16))
def test_property_permanent_failure_is_asked_again_only_after_the_invalid_wait(
    entry: GeoEntry, reason: str, seed: int
) -> None:
    """Whatever the entry was, a permanent failure leaves it INVALID in the retry lane, not due again before
    `invalid_retry` has passed, and due after it."""
    after = apply_result(
        entry, entry.attempts + 1, PermanentFailure(reason, "ipapi"), NOW, POLICY, random.Random(seed)
    )
    assert after is not None
    assert after.status is S.INVALID
    assert after.next_retry_at == NOW + POLICY.invalid_retry
    assert on_retry(after, NOW + POLICY.invalid_retry - 1, POLICY).resolve_attempt is None
    assert on_retry(after, NOW + POLICY.invalid_retry, POLICY).resolve_attempt == entry.attempts + 2


def test_next_retry_at_is_capped_even_for_huge_attempt_counts() -> None:
    """With the slow lane pushed far out, a very high attempt count still gives the capped delay."""
    policy = RetryPolicy(slow_lane_after=10_000)
    due = next_retry_at(1100, NOW, policy, random.Random(0))
    assert NOW + policy.cap / 2 <= due <= NOW + policy.cap


def test_apply_result_not_asked_does_not_grow_the_back_off() -> None:
    """A failure where the remote was never asked (breaker open) schedules the retry at the first back-off
    step whatever the attempt number: the entry is served soon after the remote is back."""
    entry = GeoEntry(IP, S.UNRESOLVED, attempts=6, next_retry_at=NOW)
    result = TransientFailure("ipapi not asked: circuit breaker open", "ipapi", OFFLINE_US, asked=False)
    after = apply_result(entry, 7, result, NOW, POLICY, rng())
    assert after is not None and after.next_retry_at is not None
    assert NOW + POLICY.base / 2 <= after.next_retry_at <= NOW + POLICY.base
    assert after.status is S.PARTIAL and after.attempts == 7


BREAKER_OPEN = TransientFailure("ipapi not asked: circuit breaker open", "ipapi", None, asked=False)
HTTP_503 = TransientFailure("ipapi: HTTP 503", "ipapi", None)


def fold(entry: GeoEntry, results: list[TransientFailure], now: float = NOW) -> GeoEntry:
    """`entry` after each of `results` applied in turn, each as the next attempt."""
    for result in results:
        after = apply_result(entry, entry.attempts + 1, result, now, POLICY, rng())
        assert after is not None
        entry = after
    return entry


def test_a_long_outage_behind_the_breaker_does_not_send_an_address_to_the_daily_lane() -> None:
    """Retries the provider never saw (breaker open) are not failures: after 30 of them and one asked
    failure the address is retried within the first back-off step, not a day later."""
    entry = fold(pending(), [HTTP_503, *[BREAKER_OPEN] * 30, HTTP_503])
    assert (entry.attempts, entry.failures) == (32, 2)
    assert entry.next_retry_at is not None and entry.next_retry_at <= NOW + 2 * POLICY.base


def test_asked_failures_in_a_row_still_reach_the_slow_lane() -> None:
    """`slow_lane_after` failed asks in a row, breaker-open retries between them or not, move the address
    to the daily lane."""
    asked = [HTTP_503, BREAKER_OPEN] * (POLICY.slow_lane_after - 1) + [HTTP_503]
    entry = fold(pending(), asked)
    assert entry.failures == POLICY.slow_lane_after
    assert entry.next_retry_at is not None and entry.next_retry_at >= NOW + POLICY.slow_lane_interval / 2


def test_an_answer_ends_the_run_of_failures() -> None:
    """A resolved address has no failures, however many answers it had: its first failed refresh after a
    year of monthly refreshes is retried at the first back-off step, not in the slow lane."""
    retrying = GeoEntry(IP, S.UNRESOLVED, attempts=2 * POLICY.slow_lane_after, failures=3, next_retry_at=NOW)
    answered = apply_result(retrying, retrying.attempts + 1, Resolved(US, "ipapi"), NOW, POLICY, rng())
    assert answered is not None and answered.failures == 0
    failed = fold(answered, [HTTP_503])
    assert failed.status is S.RESOLVED and failed.failures == 1
    assert failed.next_retry_at is not None and failed.next_retry_at <= NOW + POLICY.base


# --- last seen, staleness, forgetting -------------------------------------------------------------------


def test_on_seen_moves_last_seen_at_most_once_a_day() -> None:
    """A seen record for a known IP writes today's date into last_seen, but not twice the same day."""
    entry = resolved().evolve(last_seen=NOW - 2 * POLICY.seen_every)
    decision = on_seen(entry, None, NOW, POLICY)
    assert decision.entry is not None and decision.entry.last_seen == NOW and not decision.publish
    assert on_seen(decision.entry, None, NOW + 60, POLICY) == Decision(None)


def test_a_stale_entry_is_not_refreshed_and_wakes_up_to_be_forgotten() -> None:
    """A resolved entry due for refresh whose IP was not seen for `stale_after` costs no API request: it
    sleeps until `forget_after` past its last sighting."""
    last = NOW - POLICY.stale_after - 1
    entry = resolved().evolve(last_seen=last, next_retry_at=NOW - 1)
    decision = on_retry(entry, NOW, POLICY)
    assert decision.resolve_attempt is None and not decision.delete
    assert decision.entry is not None and decision.entry.next_retry_at == last + POLICY.forget_after


def test_a_forgotten_entry_is_deleted() -> None:
    """Past `forget_after` without a sighting, the entry is deleted (a tombstone goes out)."""
    entry = resolved().evolve(last_seen=NOW - POLICY.forget_after, next_retry_at=NOW - 1)
    assert on_retry(entry, NOW, POLICY) == Decision(None, delete=True)


def test_a_stale_entry_seen_again_is_due_at_once() -> None:
    """An IP seen again after going stale gets today's last_seen and is due now, so it is refreshed."""
    entry = resolved().evolve(last_seen=NOW - POLICY.stale_after - 5, next_retry_at=NOW + 10**6)
    decision = on_seen(entry, None, NOW, POLICY)
    assert (
        decision.entry is not None and decision.entry.next_retry_at == NOW and decision.entry.last_seen == NOW
    )


def test_an_entry_without_last_seen_is_never_forgotten() -> None:
    """Entries written before last_seen existed (0: unknown) are retried as usual, never deleted."""
    entry = GeoEntry(IP, S.UNRESOLVED, attempts=1, next_retry_at=NOW - 1)
    assert on_retry(entry, NOW, POLICY).resolve_attempt == 2


# --- data versions --------------------------------------------------------------------------------------

V1, V2 = "iptocc:3.3.1", "iptocc:3.3.2"


def offline_pending(geo: GeoData = OFFLINE_US, version: str = V1) -> GeoEntry:
    return first_sight(IP, AddressKind.GLOBAL, geo, "offline", NOW, POLICY, version)


def test_first_sight_records_the_data_version_that_answered() -> None:
    """A first-sight entry names the offline data and its version; one the data did not know names none."""
    assert offline_pending().data_version == V1
    assert first_sight(IP, AddressKind.GLOBAL, None, "offline", NOW, POLICY, V1).data_version is None


def test_version_key_indexes_offline_answers_only() -> None:
    """Offline-answered entries are in the version index under their version; remote answers are not."""
    key = version_key(offline_pending())
    assert key is not None and key.startswith(lane_prefix(VERSION_LANE) + V1)
    remote = apply_result(offline_pending(), 1, Resolved(US, "ipapi"), NOW, POLICY, rng())
    assert remote is not None and remote.data_version == "ipapi" and version_key(remote) is None


def test_on_reanswer_takes_the_newer_data_and_publishes() -> None:
    """An entry answered by an older version of the offline data takes the new version's answer."""
    old = offline_pending()
    fresh = offline_pending(GeoData(country_code="CA", country_name="Canada"), V2)
    decision = on_reanswer(old, fresh, NOW + 5)
    assert decision.publish and decision.entry is not None
    assert (decision.entry.geo.country_code, decision.entry.data_version) == ("CA", V2)
    assert decision.entry.status is S.PENDING


def test_on_reanswer_never_replaces_a_remote_answer_and_is_idempotent() -> None:
    """A remote-answered entry is left alone; an entry already on the new version changes nothing but is
    published again (a replayed re-answer repairs the changelog and the resolved topic)."""
    remote = resolved().evolve(data_version="ipapi")
    assert on_reanswer(remote, offline_pending(version=V2), NOW) == Decision(None)
    current = offline_pending(version=V2)
    assert on_reanswer(current, offline_pending(version=V2), NOW) == Decision(None, publish=True)


def test_on_reanswer_of_a_partial_entry_the_new_data_does_not_know_becomes_unresolved() -> None:
    """A partial entry whose country the new data no longer knows turns unresolved (still retried)."""
    partial = offline_pending().evolve(status=S.PARTIAL, attempts=1, next_retry_at=NOW + 60)
    fresh = first_sight(IP, AddressKind.GLOBAL, None, "offline", NOW, POLICY, V2)
    decision = on_reanswer(partial, fresh.evolve(provider="offline", data_version=V2), NOW)
    assert decision.entry is not None and decision.entry.status is S.UNRESOLVED
