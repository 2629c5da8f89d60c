"""Which resolve requests the resolver still needs to send: dedupe by (ip, attempt), as pure functions.

A resolve request can reach the resolver more than once for one attempt: an uncommitted batch is
redelivered after a crash or rebalance, a pending entry whose answer is slow is re-emitted with the same
attempt number when its pending timeout passes, and a new owner of a cache partition may start the same
attempt again. Each of those would cost an API request and count against the shared budget. So before it
asks, the resolver writes "asked (ip, attempt) at t" to the asked log (a compacted topic, co-partitioned
with the resolve topic), once the answers are delivered to the results topic it writes "answered" (with the
same t, the time of the request), and it consults what it and its predecessors wrote:

- an attempt lower than the last one asked is stale (its entry already moved on): never asked;
- the same attempt answered: its result is on the results topic, the cache agent will apply it: not asked;
- the same attempt asked less than `horizon` ago is in flight: not asked again;
- the same attempt asked longer ago, unanswered, lost its answer (a crash mid-call): asked again, so a lost
  request never starves;
- a higher attempt is a new attempt: asked.

`horizon` is half the pending timeout: an answer arrives within the HTTP timeout of its ask, so a
re-emission of an unanswered attempt coming later than that means the answer was lost; the cache agent
re-emits one pending timeout after it started the attempt, which keeps one extra ask per lost answer.

No Faust, aiokafka or asyncio here; time is passed in (Unix seconds, shared by every worker).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

from pipeline.messages import Asked

HORIZON_FRACTION = 0.5  # of the pending timeout: re-emissions that crossed a slow answer fall inside it
# seconds another worker's clock may run ahead of ours before the resolver warns: NTP keeps hosts within
# milliseconds, so more than this is a clock to fix (its requests are counted either way, see below)
SKEW_MARGIN = 2.0
# IPs remembered at most: ~45 MiB. Past it the oldest asks are forgotten first, before `keep`: a burst of new
# IPs through a fast provider would otherwise hold every IP asked within `keep` (67 MiB at 300,000, growing
# with the burst). At ip-api's free rate (45 requests of 100 IPs a minute) `keep` holds ~135,000, so the
# cap binds only past it; forgetting an old ask costs at most one repeated ask of that IP, never budget.
MAX_REMEMBERED = 200_000


def asked_horizon(pending_timeout: float) -> float:
    """How long an asked (ip, attempt) counts as in flight."""
    return pending_timeout * HORIZON_FRACTION


class AskedLog:
    """What was asked of the API recently, per IP: the in-memory view of the asked topic."""

    def __init__(self, horizon: float, keep: float, limit: int = MAX_REMEMBERED) -> None:
        if keep < horizon:
            raise ValueError("keep must be at least the horizon")
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.horizon = horizon
        self.keep = keep
        self.limit = limit
        self._last: dict[str, Asked] = {}
        # (time, ip) of every record, earliest first: prune pops what is old instead of reading every IP
        # (a scan per batch cost a fifth of a worker's time with 300,000 IPs remembered)
        self._by_time: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._last)

    def get(self, ip: str) -> Asked | None:
        return self._last.get(ip)

    def record(self, ip: str, attempt: int, at: float, *, answered: bool = False) -> None:
        """Note an ask or its answer (ours, or read back from the log in any order): the highest attempt
        wins; for the same attempt the latest time, and answered stays answered."""
        last = self._last.get(ip)
        if last is None or attempt > last.attempt:
            self._last[ip] = Asked(attempt, at, answered)
        elif attempt == last.attempt:
            self._last[ip] = Asked(attempt, max(at, last.at), answered or last.answered)
        else:
            return
        if last is None or self._last[ip].at != last.at:
            heapq.heappush(self._by_time, (self._last[ip].at, ip))

    def should_ask(self, ip: str, attempt: int, now: float) -> bool:
        """Whether a request for (ip, attempt) arriving at `now` must go to the API."""
        last = self._last.get(ip)
        if last is None or attempt > last.attempt:
            return True
        if attempt < last.attempt:
            return False  # stale: the entry has moved on to a later attempt
        if last.answered:
            return False  # the cache agent has (or will have) the answer to this very attempt
        return now - last.at >= self.horizon  # same attempt: in flight, unless its answer got lost

    def select(self, wanted: Mapping[str, int], now: float) -> dict[str, int]:
        """The subset of {ip: attempt} to ask now; the rest are duplicates of an ask in flight."""
        return {ip: attempt for ip, attempt in wanted.items() if self.should_ask(ip, attempt, now)}

    def prune(self, now: float) -> int:
        """Forget asks older than `keep`, and the oldest past `limit` IPs (bounded memory); returns how many
        were forgotten."""
        forgotten = 0
        by_time = self._by_time
        while by_time and (now - by_time[0][0] > self.keep or len(self._last) > self.limit):
            at, ip = heapq.heappop(by_time)
            last = self._last.get(ip)
            if last is not None and last.at == at:  # a later record of the IP has its own heap item
                del self._last[ip]
                forgotten += 1
        return forgotten

    def replace(self, records: Iterable[tuple[str, Asked]]) -> None:
        """Start over from records read back from the asked topic (after an assignment change)."""
        self._last.clear()
        self._by_time.clear()
        for ip, asked in records:
            self.record(ip, asked.attempt, asked.at, answered=asked.answered)


def request_times(
    records: Iterable[tuple[str, Asked]],
    *,
    since: float,
    now: float,
    left: Mapping[float, float] | None = None,
) -> list[float]:
    """When the API requests behind `records` (as read back from the asked log) left, on our clock, oldest
    first: those since `since`.

    One request's asks share one timestamp, taken before the call, and its answers repeat it, so the
    distinct times are the requests sent: what the previous owner of a resolve partition spent of the
    current window. Answers count too because the topic is compacted: once the cleaner has been through a
    segment, an IP's answer is all that is left of its ask.

    `left` maps a request's time (as written) to when it left on our clock, measured by the broker (its
    append time, see `broker_clock`): the writer's clock does not matter. A request not in it counts at
    its written time, unless that lies after `now` (the writer's clock runs ahead): it left by `now` at
    the latest, so it counts as sent `now`, never dropped as "not yet".
    """
    known = left or {}
    times = (known[at] if at in known else min(at, now) for at in {asked.at for _, asked in records})
    return sorted(t for t in times if t >= since)


def broker_clock(appended: Mapping[float, float], broker_now: float, local_now: float) -> dict[float, float]:
    """{request time as written: when it left on our clock} from {request time: its earliest append time on
    the broker}, given one moment on both clocks (`broker_now` on the broker is `local_now` here).

    Ages measured on the broker's clock alone, so neither the writer's nor our clock's error counts; a
    request's asks are appended just before its call (its answers later: a compacted log only makes it
    look younger, counted longer). Never after `local_now`.
    """
    return {at: min(local_now, local_now - (broker_now - stamp)) for at, stamp in appended.items()}


def ahead(records: Iterable[tuple[str, Asked]], now: float) -> float:
    """How many seconds the latest of `records` lies after `now` (0.0: none does): the writer's clock
    runs at least that far ahead of ours."""
    return max([0.0, *(asked.at - now for _, asked in records)])
