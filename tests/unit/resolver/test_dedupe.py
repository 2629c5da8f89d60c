"""The resolver's dedupe by (ip, attempt): pure decisions with plain numbers for time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.kafka.topics import asked_keep
from pipeline.messages import Asked, decode_asked, encode_asked
from pipeline.resolver.dedupe import AskedLog, ahead, asked_horizon, broker_clock, request_times

HORIZON = 15.0
KEEP = 90.0


def log_with(*asks: tuple[str, int, float]) -> AskedLog:
    log = AskedLog(HORIZON, KEEP)
    for ip, attempt, at in asks:
        log.record(ip, attempt, at)
    return log


def test_an_ip_never_asked_is_asked() -> None:
    """A request with no earlier ask goes to the API."""
    assert AskedLog(HORIZON, KEEP).should_ask("8.8.8.8", 1, now=100.0)


@pytest.mark.parametrize(
    ("attempt", "now", "expected"),
    [
        (3, 100.0, True),  # a new attempt right after the last one was asked
        (2, 100.0, False),  # same attempt, asked a moment ago: in flight
        (2, 114.9, False),  # same attempt, just inside the horizon
        (2, 115.0, True),  # same attempt, horizon passed: its answer got lost, ask again
        (1, 100.0, False),  # an older attempt: stale
        (1, 10_000.0, False),  # an older attempt stays stale however long ago
    ],
)
def test_should_ask_by_attempt_and_age(attempt: int, now: float, expected: bool) -> None:
    """Lower attempts are dropped, the same attempt only inside the horizon, higher ones always asked."""
    log = log_with(("8.8.8.8", 2, 100.0))
    assert log.should_ask("8.8.8.8", attempt, now) is expected


def test_an_answered_attempt_is_never_asked_again() -> None:
    """Once the answer to an attempt is on the results topic, a repeat of it is dropped however late."""
    log = log_with(("8.8.8.8", 2, 100.0))
    log.record("8.8.8.8", 2, 101.0, answered=True)
    assert not log.should_ask("8.8.8.8", 2, now=101.0 + 10 * HORIZON)
    assert log.should_ask("8.8.8.8", 3, now=102.0)


def test_an_ask_read_after_its_answer_keeps_it_answered() -> None:
    """Records read back out of order never turn an answered attempt back into an unanswered one."""
    log = AskedLog(HORIZON, KEEP)
    log.record("8.8.8.8", 2, 101.0, answered=True)
    log.record("8.8.8.8", 2, 100.0)
    assert log.get("8.8.8.8") == Asked(2, 101.0, answered=True)


def test_select_keeps_only_the_requests_to_ask() -> None:
    """A batch loses the requests an ask still covers and keeps new IPs and new attempts."""
    log = log_with(("1.1.1.1", 1, 100.0), ("8.8.8.8", 1, 100.0))
    wanted = {"1.1.1.1": 1, "8.8.8.8": 2, "9.9.9.9": 1}
    assert log.select(wanted, now=101.0) == {"8.8.8.8": 2, "9.9.9.9": 1}


def test_records_read_back_in_any_order_keep_the_highest_attempt_and_latest_time() -> None:
    """Loading the log out of order ends with the same view as reading it in order."""
    log = log_with(("8.8.8.8", 2, 50.0), ("8.8.8.8", 1, 60.0), ("8.8.8.8", 2, 40.0))
    assert log.get("8.8.8.8") == Asked(2, 50.0)


def test_replace_starts_over_from_the_records() -> None:
    """An assignment change replaces the whole view with what the topic holds."""
    log = log_with(("1.1.1.1", 1, 100.0))
    log.replace([("8.8.8.8", Asked(1, 100.0))])
    assert log.get("1.1.1.1") is None and log.get("8.8.8.8") == Asked(1, 100.0)


def test_prune_forgets_asks_older_than_keep() -> None:
    """Memory stays bounded: asks older than `keep` are forgotten, younger ones stay."""
    log = log_with(("1.1.1.1", 1, 0.0), ("8.8.8.8", 1, 50.0))
    assert log.prune(now=95.0) == 1
    assert log.get("1.1.1.1") is None and len(log) == 1


def test_keep_shorter_than_horizon_is_refused() -> None:
    """A log that would forget an ask while it is still in flight cannot be built."""
    with pytest.raises(ValueError):
        AskedLog(horizon=10.0, keep=5.0)


def test_horizon_and_keep_follow_the_pending_timeout() -> None:
    """The horizon is half a pending timeout; asks are kept three pending timeouts."""
    assert asked_horizon(600.0) == 300.0 and asked_keep(600.0) == 1800.0


@pytest.mark.parametrize("raw", [None, b"", b"not json", b"{}", b'{"attempt": "x", "at": 1}', b"[1]"])
def test_malformed_asked_records_are_skipped(raw: bytes | None) -> None:
    """Tombstones and malformed records decode to None instead of failing the load."""
    assert decode_asked(raw) is None


@given(st.integers(1, 1000), st.floats(0, 2e9, allow_nan=False), st.booleans())
def test_encode_decode_round_trip(attempt: int, at: float, answered: bool) -> None:
    """An asked record decodes to the attempt, (millisecond-rounded) time and answered flag it was written
    with."""
    decoded = decode_asked(encode_asked(attempt, at, "w1", answered=answered))
    assert decoded is not None and (decoded.attempt, decoded.answered) == (attempt, answered)
    assert abs(decoded.at - at) <= 0.001


@given(st.lists(st.tuples(st.integers(1, 5), st.floats(0, 1000, allow_nan=False)), min_size=1), st.data())
def test_a_request_never_starves(asks: list[tuple[int, float]], data: st.DataObject) -> None:
    """Whatever was asked before, the latest attempt is asked again once the horizon has passed."""
    log = AskedLog(HORIZON, KEEP)
    for attempt, at in asks:
        log.record("8.8.8.8", attempt, at)  # asked, never answered: every call was lost
    last = log.get("8.8.8.8")
    assert last is not None
    later = data.draw(st.floats(last.at + HORIZON + 1e-6, last.at + KEEP, allow_nan=False))  # float slack
    assert log.should_ask("8.8.8.8", last.attempt, later)
    assert not log.should_ask("8.8.8.8", last.attempt, last.at + HORIZON / 2)


def test_request_times_are_the_distinct_ask_times_since_a_moment() -> None:
    """One request's asks and answers share its time: the distinct times since `since` are the requests
    sent; an answer does not count twice and older asks are not counted."""
    records = [
        ("1.1.1.1", Asked(1, 100.0)),
        ("2.2.2.2", Asked(1, 100.0)),
        ("3.3.3.3", Asked(2, 130.0)),
        ("1.1.1.1", Asked(1, 100.0, answered=True)),
        ("4.4.4.4", Asked(1, 40.0)),
    ]
    assert request_times(records, since=60.0, now=140.0) == [100.0, 130.0]


def test_request_times_survive_compaction_down_to_the_answers() -> None:
    """A compacted asked log keeps only each IP's latest record, its answer: the requests still count."""
    compacted = [
        ("1.1.1.1", Asked(1, 100.0, answered=True)),
        ("2.2.2.2", Asked(1, 100.0, answered=True)),
        ("3.3.3.3", Asked(2, 130.0, answered=True)),
    ]
    assert request_times(compacted, since=60.0, now=140.0) == [100.0, 130.0]


def test_requests_stamped_after_now_count_as_sent_now() -> None:
    """A previous owner whose clock runs 30 s ahead stamped its last requests after the reader's now: each
    counts, as sent now (it left at now at the latest), none is dropped as "not yet"."""
    records = [
        ("1.1.1.1", Asked(1, 100.0)),
        ("2.2.2.2", Asked(1, 155.0)),
        ("3.3.3.3", Asked(1, 158.0, answered=True)),
        ("4.4.4.4", Asked(1, 158.0)),
    ]
    assert request_times(records, since=60.0, now=130.0) == [100.0, 130.0, 130.0]
    assert ahead(records, 130.0) == 28.0
    assert ahead(records[:1], 130.0) == 0.0 and ahead([], 130.0) == 0.0


def test_broker_append_times_decide_when_a_request_left() -> None:
    """With the broker's append times, a request's age is measured on the broker's clock alone and mapped
    onto ours; a request without one falls back to its written time (clamped to now)."""
    records = [("1.1.1.1", Asked(1, 500.0)), ("2.2.2.2", Asked(1, 90.0)), ("3.3.3.3", Asked(1, 120.0))]
    # the broker says 1000 when we say 130: 1.1.1.1 (written 500: its writer's clock far ahead) was appended
    # at 990, 10 s ago; 2.2.2.2 (written 90) at 985, 15 s ago
    left = broker_clock({500.0: 990.0, 90.0: 985.0}, broker_now=1000.0, local_now=130.0)
    assert left == {500.0: 120.0, 90.0: 115.0}
    assert request_times(records, since=100.0, now=130.0, left=left) == [115.0, 120.0, 120.0]
    assert broker_clock({1.0: 1005.0}, broker_now=1000.0, local_now=130.0) == {1.0: 130.0}  # never later


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.integers(1, 3), st.floats(0, 100), st.booleans()),
        max_size=40,
    ),
    st.lists(st.floats(0, 300), max_size=5),
)
def test_prune_forgets_exactly_the_asks_older_than_keep(
    records: list[tuple[str, int, float, bool]], prunes: list[float]
) -> None:
    """Whatever the order of records and prunes, prune keeps exactly what a scan of every IP would keep."""
    log = AskedLog(horizon=10.0, keep=30.0)
    for ip, attempt, at, answered in records:
        log.record(ip, attempt, at, answered=answered)
    for now in sorted(prunes):
        kept = {ip: log.get(ip) for ip in "abcd" if log.get(ip) is not None}
        expected = {ip: a for ip, a in kept.items() if a is not None and not now - a.at > log.keep}
        log.prune(now)
        assert {ip: log.get(ip) for ip in "abcd" if log.get(ip) is not None} == expected


def test_past_its_limit_the_log_forgets_the_oldest_asks_first() -> None:
    """With more IPs than the limit, a prune forgets the IPs asked longest ago, even within `keep`; an IP
    asked again later counts by its latest ask."""
    log = AskedLog(HORIZON, KEEP, limit=3)
    for ip, at in (("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0), ("e", 5.0)):
        log.record(ip, 1, at)
    log.record("a", 2, 6.0)  # asked again: now the newest
    assert log.prune(now=7.0) == 2
    assert len(log) == 3
    assert [ip for ip in "abcde" if log.get(ip) is not None] == ["a", "d", "e"]


def test_a_forgotten_ask_is_asked_again() -> None:
    """What the limit costs: an IP forgotten early is asked again when its request comes back."""
    log = AskedLog(HORIZON, KEEP, limit=1)
    log.record("a", 1, 1.0)
    log.record("b", 1, 2.0)
    log.prune(now=3.0)
    assert log.should_ask("a", 1, now=4.0)
    assert not log.should_ask("b", 1, now=4.0)


def test_the_limit_must_be_positive() -> None:
    """A limit below one would forget every ask at once: refused."""
    with pytest.raises(ValueError):
        AskedLog(HORIZON, KEEP, limit=0)
