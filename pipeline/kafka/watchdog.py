"""Stalled-partition decisions, pure: no Faust, no aiokafka, no event loop, no clock of its own.

A partition is stalled when it has lag (records between the group's committed offset, or the log start
when nothing was ever committed, and the log end) and has made no progress for longer than a threshold.
Progress means its committed offset moved, or it had no lag: a consumer whose fetch position was moved
past waiting records (see `pipeline/kafka/faustx.py`) keeps fetching and looks busy to Faust's own checks, but
its committed offset never moves, so lag is measured from the committed offset, never from the position.

The remedy escalates: first seek the partition back to its committed offset (or the log start), and if it
is still stalled a threshold after that, restart the worker so it rejoins the group.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

Key = tuple[str, int]  # (topic, partition)


class Action(enum.Enum):
    SEEK = "seek"  # seek back to `Stall.target`
    WAIT = "wait"  # a seek was tried less than a threshold ago: give it time
    RESTART = "restart"  # the seek did not help: restart the worker (it rejoins the group)


@dataclass(frozen=True)
class PartitionView:
    """What the consumer knows about one assigned partition at one moment."""

    topic: str
    partition: int
    committed: int | None  # the group's committed offset (next record to process); None: never committed
    position: int | None  # where the consumer fetches next (shown in logs, not used to decide)
    highwater: int  # log end offset
    start: int = 0  # where an uncommitted partition begins: log start (earliest) or log end (latest)

    @property
    def key(self) -> Key:
        return (self.topic, self.partition)

    @property
    def resume_at(self) -> int:
        return self.committed if self.committed is not None else self.start

    @property
    def lag(self) -> int:
        return max(0, self.highwater - self.resume_at)


@dataclass(frozen=True)
class Track:
    """The history the decision needs: last progress and the last remedy tried."""

    committed: int | None
    progress_at: float
    seek_at: float | None = None


@dataclass(frozen=True)
class Stall:
    topic: str
    partition: int
    lag: int
    idle: float  # seconds without progress
    action: Action
    target: int  # the offset a seek goes to
    view: PartitionView

    def describe(self) -> str:
        v = self.view
        return (
            f"{self.topic}[{self.partition}] lag={self.lag} committed={v.committed} position={v.position} "
            f"highwater={v.highwater}: no progress for {self.idle:.0f}s"
        )


def progressed(track: Track, view: PartitionView) -> bool:
    """Did the partition make progress since `track` was recorded?"""
    return view.lag == 0 or view.committed != track.committed


def decide(view: PartitionView, track: Track, now: float, threshold: float) -> Stall | None:
    """The stall of one partition and what to do about it, or None when it is healthy."""
    idle = now - track.progress_at
    if view.lag == 0 or idle <= threshold:
        return None
    if track.seek_at is None:
        action = Action.SEEK
    elif now - track.seek_at > threshold:
        action = Action.RESTART
    else:
        action = Action.WAIT
    return Stall(view.topic, view.partition, view.lag, idle, action, view.resume_at, view)


class Watchdog:
    """Tracks progress across observations and says which partitions are stalled.

    Feed it every assigned partition with `observe`; report remedies applied with `sought`. `stalled`
    is the set of (topic, partition) found stalled by the last observation (for progress lines and
    readiness checks).
    """

    def __init__(self, threshold: float) -> None:
        if threshold <= 0:
            raise ValueError(f"stall threshold must be positive, got {threshold}")
        self.threshold = threshold
        self.tracks: dict[Key, Track] = {}
        self.stalls: list[Stall] = []

    @property
    def stalled(self) -> frozenset[Key]:
        return frozenset((s.topic, s.partition) for s in self.stalls)

    def observe(self, views: Iterable[PartitionView], now: float) -> list[Stall]:
        """Record one look at the assigned partitions; return the stalled ones (revoked ones are dropped)."""
        views = list(views)
        tracks: dict[Key, Track] = {}
        for view in views:
            old = self.tracks.get(view.key)
            if old is None or progressed(old, view):
                tracks[view.key] = Track(view.committed, now)
            else:
                tracks[view.key] = old
        self.tracks = tracks
        self.stalls = [
            stall
            for view in views
            if (stall := decide(view, tracks[view.key], now, self.threshold)) is not None
        ]
        return list(self.stalls)

    def sought(self, key: Key, now: float) -> None:
        """A seek was applied to `key` at `now`: escalate if it is still stalled a threshold later."""
        track = self.tracks.get(key)
        if track is not None:
            self.tracks[key] = Track(track.committed, track.progress_at, seek_at=now)

    def pause(self, now: float) -> None:
        """Forget idle time (a rebalance or table recovery is under way: no partition is expected to move)."""
        self.tracks = {key: Track(t.committed, now) for key, t in self.tracks.items()}
        self.stalls = []
