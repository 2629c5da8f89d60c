"""When to check for new data, whether a download may start, how long to back off, how old data is.

The daily cap counts download attempts per source and UTC day for the whole cluster: the count lives on
the data topic (`builds.count_key`), so restarts and a lease moving to another worker keep it. An attempt
is counted before it starts, so a crash mid-download still counts, as the vendor counts it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum

from pipeline.config.limits import DATA_EXPIRED_AGE, DATA_WARN_AGE, DAY


def day_of(now: float) -> str:
    """The UTC day `now` falls on, as the cap counts it (YYYY-MM-DD)."""
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def next_check(last: float | None, now: float, interval: float, jitter: float, draw: float) -> float:
    """When the next scheduled check is due: at once if never checked, else `interval` after the last
    one plus `draw` (0..1, random) times `jitter`."""
    if last is None:
        return now + draw * min(jitter, interval / 10)  # a fleet starting together still spreads a little
    return last + interval + draw * jitter


@dataclass(frozen=True)
class Attempt:
    """Whether a download may start now, and if not, why and until when."""

    allowed: bool
    reason: str = ""
    retry_at: float = 0.0


def may_download(count_today: int, cap: int, backoff_until: float, now: float) -> Attempt:
    """A download starts only under the day's cap and after any back-off."""
    if count_today >= cap:
        tomorrow = (now // DAY + 1) * DAY
        return Attempt(False, f"daily cap reached ({count_today}/{cap} downloads today)", tomorrow)
    if now < backoff_until:
        return Attempt(False, "backing off after a failure", backoff_until)
    return Attempt(True)


def backoff(failures: int, base: float, cap: float) -> float:
    """Seconds to wait after the `failures`-th failure in a row: base, 2 base, 4 base ... up to `cap`."""
    if failures <= 0:
        return 0.0
    return float(min(cap, base * 2.0 ** min(failures - 1, 30)))


class Freshness(StrEnum):
    """How current a build is, by its age (now minus its build epoch)."""

    FRESH = "fresh"
    OLD = "old"  # warned about: DATA_WARN_AGE
    EXPIRED = "expired"  # flagged on entries and in the metrics: DATA_EXPIRED_AGE


def freshness(build_epoch: int, now: float) -> Freshness:
    age = now - build_epoch
    if age >= DATA_EXPIRED_AGE:
        return Freshness.EXPIRED
    return Freshness.OLD if age >= DATA_WARN_AGE else Freshness.FRESH
