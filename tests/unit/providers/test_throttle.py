"""ResolveBudget on fake time: pacing, server headers, 429/AIMD, back-off, breaker, cold start."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config.limits import FREE_TIER_REQUESTS, FREE_TIER_WINDOW
from pipeline.providers.throttle import Breaker, ResolveBudget

FREE_TIER = {"limit": FREE_TIER_REQUESTS, "window": FREE_TIER_WINDOW}

LIMIT, WINDOW, SLACK = 15, 60.0, 1.0
SPAN = WINDOW + SLACK


class FakeClock:
    """Monotonic time that moves only when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CeilingRng(random.Random):
    """A jitter source that always picks the top of the range, exposing the back-off ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


def make(clock: FakeClock, **kwargs: object) -> ResolveBudget:
    return ResolveBudget(clock, rng=random.Random(7), **{**FREE_TIER, **kwargs})  # type: ignore[arg-type]


def send_ok(budget: ResolveBudget) -> None:
    budget.on_sent()
    budget.on_response(200, None, None)


def test_fresh_budget_allows_limit_sends_then_waits_for_the_oldest_to_age_out() -> None:
    """A new budget sends `limit` at once, then the next waits until the first is window+slack old."""
    clock = FakeClock()
    budget = make(clock)
    for _ in range(LIMIT):
        assert budget.delay() == 0.0
        send_ok(budget)
    assert budget.delay() == pytest.approx(SPAN)
    clock.advance(SPAN - 0.001)
    assert budget.delay() > 0
    clock.advance(0.001)
    assert budget.delay() == 0.0


def test_spread_sends_free_slots_one_at_a_time() -> None:
    """With sends spread out, each slot frees exactly window+slack after its own send."""
    clock = FakeClock()
    budget = make(clock)
    for _ in range(LIMIT):
        send_ok(budget)
        clock.advance(2.0)
    assert budget.sent_in_window == LIMIT
    assert budget.delay() == pytest.approx(SPAN - 2.0 * LIMIT)
    clock.advance(budget.delay())
    assert budget.delay() == 0.0 and budget.sent_in_window == LIMIT - 1


responses = st.one_of(
    st.tuples(st.just(200), st.one_of(st.none(), st.integers(0, 20)), st.one_of(st.none(), st.floats(0, 90))),
    st.tuples(st.just(429), st.one_of(st.none(), st.just(0)), st.one_of(st.none(), st.floats(0, 90))),
    st.tuples(st.sampled_from([500, 502, 503, 422]), st.none(), st.none()),
    st.tuples(st.just(-1), st.none(), st.none()),  # -1: a timeout, no response at all
)
steps = st.lists(
    st.tuples(st.floats(0, 120), st.booleans(), st.floats(0, 10), responses), min_size=1, max_size=80
)


@settings(max_examples=300, deadline=None)
@given(steps=steps, cold=st.booleans())
def test_property_never_more_than_limit_in_any_window_and_pauses_hold(
    steps: list[tuple[float, bool, float, tuple[int, int | None, float | None]]], cold: bool
) -> None:
    """Under any response sequence, no window+slack interval holds more than `limit` sends, and nothing
    is sent before an X-Rl 0 or a 429 has expired."""
    clock = FakeClock()
    budget = make(clock)
    if cold:
        budget.assume_full_window()
    started = clock.now
    sent: list[float] = []
    quiet_until = started + SPAN if cold else float("-inf")
    for gap, eager, latency, (status, rl, ttl) in steps:
        clock.advance(gap)
        if eager:  # a well-behaved caller: wait until allowed (state may change while waiting)
            for _ in range(5):
                if (wait := budget.delay()) == 0:
                    break
                clock.advance(wait)
            assert budget.delay() == 0.0
        elif budget.delay() > 0:
            continue
        assert clock.now >= quiet_until
        budget.on_sent()
        sent.append(clock.now)
        clock.advance(latency)
        if status == -1:
            budget.on_transport_failure()
        else:
            budget.on_response(status, rl, ttl)
        pause = min(ttl, WINDOW) if ttl is not None else WINDOW  # X-Ttl is clamped to one window
        if rl == 0:
            quiet_until = max(quiet_until, clock.now + pause + SLACK)
        if status == 429:
            quiet_until = max(quiet_until, clock.now + pause + SLACK)
        assert 1 <= budget.effective_limit <= LIMIT
    for i, start in enumerate(sent):
        assert sum(1 for t in sent[i:] if t < start + SPAN) <= LIMIT


def test_x_rl_zero_blocks_until_x_ttl_plus_slack() -> None:
    """After X-Rl 0 the budget sends nothing until X-Ttl (+ slack) has passed."""
    clock = FakeClock()
    budget = make(clock)
    budget.on_sent()
    budget.on_response(200, 0, 20.0)
    assert budget.delay() == pytest.approx(20.0 + SLACK)
    assert budget.paused_until == pytest.approx(clock.now + 21.0)
    clock.advance(20.9)
    assert budget.delay() > 0
    clock.advance(0.1)
    assert budget.delay() == 0.0


def test_server_remaining_count_is_respected_before_the_local_log_is_full() -> None:
    """When the server says 2 left (others share the NAT), only 2 more go before its window resets."""
    clock = FakeClock()
    budget = make(clock)
    budget.on_sent()
    budget.on_response(200, 2, 30.0)
    send_ok(budget)  # no headers: our own guess counts down to 1
    assert budget.delay() == 0.0
    budget.on_sent()
    assert budget.snapshot().server_remaining == 0
    assert budget.delay() == pytest.approx(31.0)
    clock.advance(31.0)
    assert budget.delay() == 0.0 and budget.snapshot().server_remaining is None


def test_429_pauses_for_ttl_and_halves_the_rate() -> None:
    """A 429 pauses for X-Ttl + slack and halves the effective limit, never below 1."""
    clock = FakeClock()
    budget = make(clock)
    expected = [7, 3, 1, 1]
    for limit_after in expected:
        clock.advance(budget.delay())
        budget.on_sent()
        budget.on_response(429, 0, 10.0)
        assert budget.delay() >= 11.0 - 1e-9
        assert budget.effective_limit == limit_after
    assert budget.snapshot().rate_limited == 4


def test_429_without_headers_pauses_a_full_window() -> None:
    """A 429 without X-Ttl pauses for a whole window plus slack."""
    clock = FakeClock()
    budget = make(clock, breaker_threshold=100)
    budget.on_sent()
    budget.on_response(429, None, None)
    assert budget.delay() == pytest.approx(SPAN)


def test_aimd_adds_one_per_calm_window_after_the_pause_up_to_limit() -> None:
    """After a 429 the effective limit grows by 1 per full window without a 429, back to `limit`."""
    clock = FakeClock()
    budget = make(clock)
    budget.on_sent()
    budget.on_response(429, 0, 9.0)  # pause ends 10 s from now
    assert budget.effective_limit == 7
    clock.advance(10.0 + WINDOW - 0.01)
    assert budget.effective_limit == 7
    clock.advance(0.01)
    assert budget.effective_limit == 8
    clock.advance(3 * WINDOW)
    assert budget.effective_limit == 11
    clock.advance(100 * WINDOW)
    assert budget.effective_limit == LIMIT


def test_reduced_limit_is_enforced_by_the_log() -> None:
    """After a cut to 7, only 7 sends fit in a window."""
    clock = FakeClock()
    budget = make(clock)
    budget.on_sent()
    budget.on_response(429, 0, 0.0)
    clock.advance(budget.delay())
    assert budget.sent_in_window == 1
    for _ in range(6):
        assert budget.delay() == 0.0
        send_ok(budget)
    assert budget.delay() > 0


def test_5xx_backoff_ceiling_doubles_up_to_cap() -> None:
    """Consecutive 5xx grow the back-off ceiling 1, 2, 4, ... seconds and stop at the cap."""
    clock = FakeClock()
    budget = ResolveBudget(
        clock, **FREE_TIER, rng=CeilingRng(), breaker_threshold=100, backoff_base=1.0, backoff_cap=60.0
    )
    seen = []
    for _ in range(9):
        clock.advance(budget.delay())
        budget.on_sent()
        budget.on_response(503, None, None)
        seen.append(budget.delay())
    assert seen == pytest.approx([1, 2, 4, 8, 16, 32, 60, 60, 60])
    assert budget.snapshot().server_errors == 9


@given(seed=st.integers(0, 2**32), failures=st.integers(1, 20))
def test_jittered_backoff_stays_within_zero_and_the_ceiling(seed: int, failures: int) -> None:
    """Full jitter picks each back-off uniformly in [0, min(cap, base * 2^(n-1))]."""
    clock = FakeClock()
    budget = ResolveBudget(clock, **FREE_TIER, rng=random.Random(seed), breaker_threshold=100)
    for n in range(1, failures + 1):
        clock.advance(budget.delay())
        budget.on_sent()
        budget.on_transport_failure()
        assert 0.0 <= budget.delay() <= min(60.0, 2.0 ** (n - 1))
    assert budget.snapshot().transport_failures == failures


def test_success_resets_the_failure_streak_and_backoff() -> None:
    """A 2xx clears the back-off and restarts the ceiling at the base."""
    clock = FakeClock()
    budget = ResolveBudget(clock, **FREE_TIER, rng=CeilingRng(), breaker_threshold=100)
    for _ in range(4):
        clock.advance(budget.delay())
        budget.on_sent()
        budget.on_response(500, None, None)
    assert budget.snapshot().consecutive_failures == 4
    clock.advance(budget.delay())
    send_ok(budget)
    assert budget.snapshot().consecutive_failures == 0 and budget.delay() == 0.0
    budget.on_sent()
    budget.on_response(500, None, None)
    assert budget.delay() == pytest.approx(1.0)


def fail_until_open(clock: FakeClock, budget: ResolveBudget) -> None:
    for _ in range(5):
        clock.advance(budget.delay())
        budget.on_sent()
        budget.on_transport_failure()


def test_breaker_opens_after_threshold_then_half_opens_and_closes_on_success() -> None:
    """Five failures open the breaker for the cool-off; then one probe goes, and its success closes it."""
    clock = FakeClock()
    budget = make(clock)
    fail_until_open(clock, budget)
    assert budget.snapshot().breaker is Breaker.OPEN
    assert budget.delay() == pytest.approx(60.0)
    clock.advance(60.0)
    assert budget.breaker is Breaker.HALF_OPEN and budget.delay() == 0.0
    budget.on_sent()
    assert budget.delay() > 0  # the probe is in flight: nothing else goes
    budget.on_response(200, 14, 50.0)
    assert budget.snapshot().breaker is Breaker.CLOSED and budget.delay() == 0.0


def test_failed_probe_reopens_with_doubled_cooloff_and_success_resets_it() -> None:
    """A failed half-open probe reopens for twice as long; after a close the cool-off is back to base."""
    clock = FakeClock()
    budget = make(clock)
    fail_until_open(clock, budget)
    clock.advance(60.0)
    budget.on_sent()
    budget.on_response(502, None, None)
    assert budget.breaker is Breaker.OPEN and budget.delay() == pytest.approx(120.0)
    clock.advance(120.0)
    budget.on_sent()
    budget.on_response(200, None, None)
    fail_until_open(clock, budget)
    assert budget.delay() == pytest.approx(60.0)


def test_cooloff_doubling_stops_at_cap() -> None:
    """Repeated failed probes never keep the breaker open longer than the cap."""
    clock = FakeClock()
    budget = make(clock, breaker_cooloff_cap=200.0)
    fail_until_open(clock, budget)
    opened = []
    for _ in range(4):
        opened.append(budget.delay())
        clock.advance(budget.delay())
        budget.on_sent()
        budget.on_transport_failure()
    assert opened == pytest.approx([60.0, 120.0, 200.0, 200.0])


def test_lost_probe_frees_the_half_open_slot_after_a_window() -> None:
    """A probe that never reports (cancelled call) does not wedge the breaker forever."""
    clock = FakeClock()
    budget = make(clock)
    fail_until_open(clock, budget)
    clock.advance(60.0)
    budget.on_sent()
    assert budget.delay() == pytest.approx(WINDOW)
    clock.advance(WINDOW)
    assert budget.delay() == 0.0 and budget.breaker is Breaker.HALF_OPEN


def test_assume_full_window_makes_the_first_send_wait_one_window() -> None:
    """A cold start assumes someone spent the whole budget just now, so the first send waits a window."""
    clock = FakeClock()
    budget = make(clock)
    budget.assume_full_window()
    assert budget.sent_in_window == LIMIT
    assert budget.delay() == pytest.approx(SPAN)
    clock.advance(SPAN)
    assert budget.delay() == 0.0 and budget.sent_in_window == 0


def test_snapshot_reports_counts_for_metrics() -> None:
    """The snapshot counts sends, 429s, 5xx, timeouts and other errors separately."""
    clock = FakeClock()
    budget = ResolveBudget(clock, **FREE_TIER, rng=random.Random(1), breaker_threshold=100)
    for status in (200, 429, 503, 422, -1):
        clock.advance(budget.delay())
        budget.on_sent()
        if status == -1:
            budget.on_transport_failure()
        else:
            budget.on_response(status, None, None)
    state = budget.snapshot()
    assert (state.sent, state.rate_limited, state.server_errors, state.other_errors) == (5, 1, 1, 1)
    assert state.transport_failures == 1 and state.breaker is Breaker.CLOSED


@pytest.mark.parametrize("kwargs", [{"limit": 0}, {"window": 0.0}, {"slack": -1.0}, {"breaker_threshold": 0}])
def test_rejects_nonsense_configuration(kwargs: dict[str, float]) -> None:
    """A budget with no requests, no window or negative slack is refused at construction."""
    with pytest.raises(ValueError):
        ResolveBudget(FakeClock(), **{**FREE_TIER, **kwargs})  # type: ignore[arg-type]


def test_noted_sends_of_a_previous_owner_count_against_the_window() -> None:
    """Requests someone else sent 10 s ago (read back from the asked log) use the window: with 15 of them
    the next send waits until they are window+slack old, not a whole window from now."""
    clock = FakeClock()
    budget = make(clock)
    budget.note_sends([clock.now - 10.0] * LIMIT)
    assert budget.delay() == pytest.approx(SPAN - 10.0)


def test_noted_sends_leave_the_rest_of_the_window_usable() -> None:
    """Five requests a previous owner sent leave ten for the new owner at once: no full-window wait."""
    clock = FakeClock()
    budget = make(clock)
    budget.note_sends([clock.now - 30.0 + i for i in range(5)])
    for _ in range(LIMIT - 5):
        assert budget.delay() == 0.0
        send_ok(budget)
    assert budget.delay() == pytest.approx(SPAN - 30.0)


def test_noted_sends_outside_the_window_or_in_the_future_are_ignored() -> None:
    """Sends older than window+slack or timestamped after now (clock skew) do not block anything."""
    clock = FakeClock()
    budget = make(clock)
    budget.note_sends([clock.now - SPAN - 1.0] * LIMIT + [clock.now + 5.0] * LIMIT)
    assert budget.delay() == 0.0 and budget.sent_in_window == 0


def test_unavailable_says_why_while_the_breaker_is_open_and_not_during_normal_pacing() -> None:
    """A full window (normal pacing) is waited out; an open breaker is reported, so work in hand is
    answered from a fallback instead of waiting minutes."""
    clock = FakeClock()
    budget = make(clock, breaker_threshold=3)
    for _ in range(LIMIT):
        send_ok(budget)
    assert budget.delay() > 0 and budget.unavailable() is None
    clock.advance(SPAN)
    for _ in range(3):
        budget.on_sent()
        budget.on_response(503, None, None)
    reason = budget.unavailable()
    assert reason is not None and "breaker open" in reason


def test_unavailable_for_a_server_pause_longer_than_a_window() -> None:
    """A 429 whose X-Ttl asks for more than our (short) window of silence makes the remote unavailable for
    now; the pause is the server's whole window at most."""
    clock = FakeClock()
    budget = make(clock, limit=2, window=10.0)
    budget.on_sent()
    budget.on_response(429, 0, 600.0)
    assert budget.delay() == pytest.approx(WINDOW + SLACK)
    reason = budget.unavailable()
    assert reason is not None and "rate limited" in reason


# -- hostile or broken X-Ttl (issue 19, item 6) ------------------------------------------------------------

HUGE_TTL = 10.0**9  # about 32 years: one such header paused ip-api until the worker restarted


@pytest.mark.parametrize("status, rl", [(200, 0), (429, 0), (429, None)])
def test_a_huge_x_ttl_pauses_at_most_one_window(status: int, rl: int | None) -> None:
    """An X-Ttl beyond the budget window (free-tier answers travel in clear: anyone on the path can send one)
    pauses the budget for one window plus slack at most, then sending resumes."""
    clock = FakeClock()
    budget = make(clock)
    budget.on_sent()
    budget.on_response(status, rl, HUGE_TTL)
    assert budget.delay() <= SPAN
    clock.advance(SPAN)
    assert budget.delay() == 0.0
    assert budget.snapshot().headers_out_of_range == 1


def test_an_in_range_x_ttl_is_obeyed_and_not_counted() -> None:
    """An X-Ttl within the window still sets the pause, and is not counted as out of range."""
    clock = FakeClock()
    budget = make(clock)
    budget.on_sent()
    budget.on_response(200, 0, 20.0)
    assert budget.delay() == pytest.approx(20.0 + SLACK)
    assert budget.snapshot().headers_out_of_range == 0


def test_an_out_of_range_x_ttl_is_logged_once_per_answer(caplog: pytest.LogCaptureFixture) -> None:
    """The clamped header is logged as a warning naming the value received and the value used."""
    budget = make(FakeClock())
    budget.on_sent()
    with caplog.at_level("WARNING", logger="pipeline.providers.throttle"):
        budget.on_response(200, 0, HUGE_TTL)
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.providers.throttle"]
    assert len(lines) == 1 and "X-Ttl=1e+09" in lines[0] and "using 60 s" in lines[0]


def test_a_short_budget_window_still_obeys_a_full_server_window() -> None:
    """With GEO_BUDGET_WINDOW under ip-api's 60 s, an honest X-Ttl up to 60 s is obeyed unclamped."""
    clock = FakeClock()
    budget = make(clock, limit=2, window=10.0)
    budget.on_sent()
    budget.on_response(200, 0, 45.0)
    assert budget.delay() == pytest.approx(45.0 + SLACK)
    assert budget.snapshot().headers_out_of_range == 0
