"""ResolveBudget: the one place that decides when the next request to the geo API may be sent.

ip-api.com counts requests per source IP in fixed 60 s windows and bans clients that keep going over, so
the budget is a SLIDING-WINDOW LOG, not a leaky bucket: it remembers the time of each of the last `limit`
sends and allows a new one only when fewer than `effective_limit` fall inside the last `window + slack`
seconds. A leaky bucket (aiolimiter's `AsyncLimiter(15, 60)`) lets a full burst of 15 go at once and then
drips one every 4 s, so the server window holding the burst also receives the drip: up to 29 requests
where 15 are allowed. A log bounds every interval of length `window + slack`, hence every server window
wherever it starts; the slack absorbs clock skew and request latency.

On top of the log sit the server's own view (`X-Rl`/`X-Ttl` on every response), a pause and an
AIMD cut on 429, exponential back-off with full jitter on 5xx and transport failures, and a circuit
breaker for outages. The class is a pure state machine: time comes from an injected `Clock`
(`loop.time` in production) and randomness from an injected `random.Random`, so tests drive fake time and
never sleep; nothing here awaits (the resolver waits, checking `delay()` and `unavailable()`). The Clock
Protocol lives here, not
in its own module, because this is its only user.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

log = logging.getLogger(__name__)

SERVER_WINDOW = 60.0  # ip-api's fixed rate window: no honest X-Ttl asks for more, whatever our own window
SLACK = 1.0  # seconds added to every window and X-Ttl: covers clock skew and latency between us and ip-api
BACKOFF_BASE = 1.0  # first 5xx/timeout back-off ceiling: a blip on the server usually clears within a second
BACKOFF_CAP = 60.0  # one rate window; anything longer is an outage and the breaker takes over
BREAKER_THRESHOLD = 5  # consecutive failures that mean "outage", not "blip": stop calling for a while
BREAKER_COOLOFF = 60.0  # first open period: one rate window
BREAKER_COOLOFF_CAP = 900.0  # doubling stops at 15 min, so a long outage costs about 4 probes an hour


class Clock(Protocol):
    """Monotonic seconds; production passes `loop.time` or `time.monotonic`, tests a fake."""

    def __call__(self) -> float: ...


class Breaker(StrEnum):
    """Circuit-breaker state: CLOSED sends normally, OPEN sends nothing, HALF_OPEN allows one probe."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BudgetState:
    """A read-only snapshot of the budget for metrics and logs; times are on the budget's clock."""

    effective_limit: int
    sent_in_window: int
    paused_until: float
    backoff_until: float
    breaker: Breaker
    consecutive_failures: int
    server_remaining: int | None
    server_reset_at: float | None
    sent: int
    rate_limited: int
    server_errors: int
    transport_failures: int
    other_errors: int
    succeeded: int = 0  # 2xx responses (sent minus these and the failures: the one request in flight)
    headers_out_of_range: int = 0  # answers whose X-Ttl lay outside [0, a rate window]: clamped into it


class ResolveBudget:
    """Paces batch requests to one rate-limited API; the caller keeps at most one request in flight.

    Protocol: wait until `delay() == 0`, `on_sent()`, make the call, then exactly one
    of `on_response(status, x_rl, x_ttl)` or `on_transport_failure()`. Every non-2xx outcome, 429
    included, extends the failure streak that opens the breaker; any 2xx resets it.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        limit: int,
        window: float,
        slack: float = SLACK,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
        breaker_threshold: int = BREAKER_THRESHOLD,
        breaker_cooloff: float = BREAKER_COOLOFF,
        breaker_cooloff_cap: float = BREAKER_COOLOFF_CAP,
        rng: random.Random | None = None,
    ) -> None:
        if limit < 1 or window <= 0 or slack < 0 or breaker_threshold < 1:
            raise ValueError("limit and breaker_threshold must be >= 1, window > 0, slack >= 0")
        self.limit, self.window, self.slack = limit, window, slack
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._backoff_base, self._backoff_cap = backoff_base, backoff_cap
        self._threshold = breaker_threshold
        self._cooloff_base, self._cooloff_cap = breaker_cooloff, breaker_cooloff_cap
        self._span = window + slack  # the rolling interval the log bounds
        self._sends: deque[float] = deque(maxlen=limit)  # effective <= limit: older sends never matter
        self._effective = limit
        created = clock()  # "until" times start here, not at -inf, so metrics stay finite JSON numbers
        self._calm_since = created  # start of the current run of 429-free windows (AIMD increase)
        self._paused_until = created  # X-Rl 0 or 429: server-imposed silence
        self._backoff_until = created  # 5xx/transport back-off
        self._server_remaining: int | None = None
        self._server_reset_at: float | None = None
        self._breaker = Breaker.CLOSED
        self._open_until = created
        self._cooloff = breaker_cooloff
        self._probe_sent_at: float | None = None
        self._failures = 0
        self._sent = self._n429 = self._n5xx = self._ntransport = self._nother = self._n2xx = 0
        self._nclamped = 0

    # -- decisions ---------------------------------------------------------------------------------------

    def delay(self) -> float:
        """Seconds until the next request may be sent; 0.0 means now."""
        now = self._refresh()
        ready = max(self._paused_until, self._backoff_until)
        if len(self._sends) >= self._effective:
            ready = max(ready, self._sends[-self._effective] + self._span)
        if self._server_reset_at is not None and self._server_remaining == 0:
            ready = max(ready, self._server_reset_at)  # the server's count (or our guess since) is spent
        if self._breaker is Breaker.OPEN:
            ready = max(ready, self._open_until)
        elif self._breaker is Breaker.HALF_OPEN and self._probe_sent_at is not None:
            ready = max(ready, self._probe_sent_at + self.window)
        return max(0.0, ready - now)

    # -- events ------------------------------------------------------------------------------------------

    def on_sent(self) -> None:
        """Record a request leaving now (call it just before the HTTP call, after `delay()` said 0)."""
        now = self._refresh()
        self._sends.append(now)
        self._sent += 1
        if self._server_remaining is not None:  # our own guess until the response brings the server's count
            self._server_remaining = max(0, self._server_remaining - 1)
        if self._breaker is Breaker.HALF_OPEN:
            self._probe_sent_at = now

    def on_response(self, status: int, rl: int | None, ttl: float | None) -> None:
        """Feed an HTTP response: its status and its X-Rl / X-Ttl headers (None when absent).

        X-Ttl is clamped into [0, max(window, SERVER_WINDOW)]: no server window lasts longer, and the free
        tier answers over plain HTTP, so one forged or broken header must not pause the API for good.
        """
        now = self._refresh()
        ttl = self._clamp_ttl(ttl)
        if rl is not None:
            self._server_remaining = max(0, rl)
            self._server_reset_at = now + (ttl if ttl is not None else self.window) + self.slack
            if rl <= 0:  # the server's rule: send nothing until the window resets
                self._paused_until = max(self._paused_until, self._server_reset_at)
        if 200 <= status < 300:
            self._n2xx += 1
            self._succeed(now)
        elif status == 429:
            self._n429 += 1
            pause = (ttl if ttl is not None else self.window) + self.slack
            self._paused_until = max(self._paused_until, now + pause)
            self._effective = max(1, self._effective // 2)  # multiplicative decrease
            self._calm_since = self._paused_until  # the additive increase counts windows after the pause
            self._fail(now, backoff=False)  # five 429s in a row: someone else spends our budget; stop
        else:
            if status >= 500:
                self._n5xx += 1
            else:
                self._nother += 1  # 4xx other than 429 (e.g. 422): our bug, but still do not hammer
            self._fail(now, backoff=True)

    def _clamp_ttl(self, ttl: float | None) -> float | None:
        """`ttl` within [0, the longest window], counting and logging a value that was not."""
        if ttl is None:
            return None
        ceiling = max(self.window, SERVER_WINDOW)
        used = clamp_ttl(ttl, ceiling)
        if used != ttl:
            self._nclamped += 1
            log.warning(
                "ip-api sent X-Ttl=%g, outside 0..%g s (a rate window): using %s",
                ttl, ceiling, "none" if used is None else f"{used:g} s",
            )  # fmt: skip
        return used

    def on_transport_failure(self) -> None:
        """Record a timeout or connection error (no response, so no headers)."""
        now = self._refresh()
        self._ntransport += 1
        self._fail(now, backoff=True)

    def note_sends(self, times: list[float]) -> None:
        """Count requests someone else sent at `times` (on this budget's clock), e.g. the previous owner of
        the resolve partition, as read from the asked log: the next send waits until they age out."""
        now = self._refresh()
        merged = sorted([*self._sends, *(t for t in times if now - self._span < t <= now)])
        self._sends = deque(merged[-self.limit :], maxlen=self.limit)

    def unavailable(self) -> str | None:
        """Why the API cannot be asked within a normal pacing wait (breaker open, a pause longer than a
        window), or None. A caller holding work answers it from a fallback instead of waiting."""
        delay = self.delay()
        if self.breaker is Breaker.OPEN:
            return f"circuit breaker open for {delay:.0f}s more"
        if delay > self._span:
            return f"rate limited for {delay:.0f}s more"
        return None

    def assume_full_window(self) -> None:
        """Assume `limit` requests were just sent by someone else, so the next send waits a full window.

        A fresh budget cannot know what the previous owner of the resolve partition (or this worker before
        a restart) sent in the current server window; sending at once could exceed the limit. Only the
        caller knows when that risk exists (partition handover, restart), so the caller decides to call it.
        """
        now = self._refresh()
        self._sends.extend([now] * self.limit)

    # -- read-only state ---------------------------------------------------------------------------------

    @property
    def effective_limit(self) -> int:
        self._refresh()
        return self._effective

    @property
    def sent_in_window(self) -> int:
        self._refresh()
        return len(self._sends)

    @property
    def paused_until(self) -> float:
        return self._paused_until

    @property
    def breaker(self) -> Breaker:
        self._refresh()
        return self._breaker

    def snapshot(self) -> BudgetState:
        """Everything a metrics endpoint or a log line wants, in one immutable value."""
        self._refresh()
        return BudgetState(
            self._effective, len(self._sends), self._paused_until, self._backoff_until, self._breaker,
            self._failures, self._server_remaining, self._server_reset_at, self._sent, self._n429,
            self._n5xx, self._ntransport, self._nother, self._n2xx, self._nclamped,
        )  # fmt: skip

    # -- mechanism ---------------------------------------------------------------------------------------

    def _refresh(self) -> float:
        """Apply everything that happens by the passage of time alone; return now."""
        now = self._clock()
        while self._sends and self._sends[0] + self._span <= now:  # same sum as in delay(): no float gap
            self._sends.popleft()
        if self._server_reset_at is not None and now >= self._server_reset_at:
            self._server_remaining = self._server_reset_at = None  # a new server window: its view is stale
        if self._effective < self.limit and now >= self._calm_since + self.window:
            windows = int((now - self._calm_since) // self.window)
            self._effective = min(self.limit, self._effective + windows)  # additive increase
            self._calm_since += windows * self.window
        elif self._effective >= self.limit:
            self._calm_since = now
        if self._breaker is Breaker.OPEN and now >= self._open_until:
            self._breaker, self._probe_sent_at = Breaker.HALF_OPEN, None
        elif self._probe_sent_at is not None and now >= self._probe_sent_at + self.window:
            self._probe_sent_at = None  # the half-open probe never reported back (cancelled): allow another
        return now

    def _succeed(self, now: float) -> None:
        self._failures = 0
        self._backoff_until = now
        self._breaker, self._probe_sent_at = Breaker.CLOSED, None
        self._cooloff = self._cooloff_base

    def _fail(self, now: float, *, backoff: bool) -> None:
        self._failures += 1
        if backoff:  # full jitter: uniform in [0, min(cap, base * 2^(n-1))]
            ceiling = min(self._backoff_cap, self._backoff_base * 2.0 ** min(self._failures - 1, 60))
            self._backoff_until = now + self._rng.uniform(0.0, ceiling)
        if self._breaker is Breaker.HALF_OPEN or (
            self._breaker is Breaker.CLOSED and self._failures >= self._threshold
        ):
            self._breaker, self._probe_sent_at = Breaker.OPEN, None
            self._open_until = now + self._cooloff
            self._cooloff = min(self._cooloff_cap, self._cooloff * 2)


def clamp_ttl(ttl: float, ceiling: float) -> float | None:
    """An X-Ttl header's seconds as the budget uses them: within [0, ceiling]; None for NaN (unreadable)."""
    if math.isnan(ttl):
        return None
    return min(max(ttl, 0.0), ceiling)
