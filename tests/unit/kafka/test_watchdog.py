"""The stalled-partition decisions (pipeline/kafka/watchdog.py), with fake time."""

from __future__ import annotations

import pytest

from pipeline.kafka.watchdog import Action, PartitionView, Track, Watchdog, decide

T = 60.0  # threshold


def view(
    committed: int | None, highwater: int, *, position: int | None = None, start: int = 0
) -> PartitionView:
    return PartitionView("events", 3, committed, position, highwater, start)


@pytest.mark.parametrize(
    ("case", "v", "track", "now", "expected"),
    [
        ("caught up", view(10, 10), Track(10, 0.0), 1000.0, None),
        ("idle partition, nothing to read", view(None, 5, start=5), Track(None, 0.0), 1000.0, None),
        ("lag, but progress within the threshold", view(10, 50), Track(10, 0.0), T, None),
        ("lag, no progress past the threshold", view(10, 50), Track(10, 0.0), T + 1, (Action.SEEK, 10, 40)),
        (
            "never committed, position moved to the end",
            view(None, 1523, position=1523),
            Track(None, 0.0),
            T + 1,
            (Action.SEEK, 0, 1523),
        ),
        (
            "never committed, log start moved",
            view(None, 50, start=20),
            Track(None, 0.0),
            T + 1,
            (Action.SEEK, 20, 30),
        ),
        ("seek tried recently", view(10, 50), Track(10, 0.0, seek_at=T + 1), 2 * T, (Action.WAIT, 10, 40)),
        (
            "seek did not help",
            view(10, 50),
            Track(10, 0.0, seek_at=T + 1),
            2 * T + 2,
            (Action.RESTART, 10, 40),
        ),
        ("committed past the log end (lag clamps to 0)", view(60, 50), Track(60, 0.0), 1000.0, None),
    ],
)
def test_decide(
    case: str, v: PartitionView, track: Track, now: float, expected: tuple[Action, int, int] | None
) -> None:
    """A partition's view, history and the time give the expected action, seek target and lag."""
    stall = decide(v, track, now, T)
    got = None if stall is None else (stall.action, stall.target, stall.lag)
    assert got == expected, case


def test_watchdog_escalates_seek_then_restart_and_clears_on_progress() -> None:
    """Across observations: no stall until a threshold without progress, then seek, wait, restart; a commit
    that moves clears it."""
    dog = Watchdog(T)
    stuck = view(None, 100, position=100)
    assert dog.observe([stuck], 0.0) == []  # first sight counts as progress
    assert dog.observe([stuck], T) == []
    [stall] = dog.observe([stuck], T + 1)
    assert (stall.action, stall.target, stall.lag) == (Action.SEEK, 0, 100)
    assert dog.stalled == {("events", 3)}
    assert "events[3] lag=100" in stall.describe()
    dog.sought(("events", 3), T + 1)
    assert [s.action for s in dog.observe([stuck], T + 2)] == [Action.WAIT]
    assert [s.action for s in dog.observe([stuck], 2 * T + 2)] == [Action.RESTART]
    assert dog.observe([view(40, 100)], 2 * T + 3) == []  # the committed offset moved: progress
    assert dog.stalled == frozenset()
    assert dog.tracks[("events", 3)] == Track(40, 2 * T + 3)  # the seek is forgotten too


def test_position_moves_are_not_progress() -> None:
    """Only the committed offset counts: a consumer whose position advances but never commits stalls."""
    dog = Watchdog(T)
    dog.observe([view(None, 100, position=0)], 0.0)
    [stall] = dog.observe([view(None, 100, position=100)], T + 1)
    assert stall.action is Action.SEEK


def test_revoked_partitions_are_forgotten_and_new_ones_start_fresh() -> None:
    """A partition no longer assigned leaves the tracks; one assigned later starts with no idle time."""
    dog = Watchdog(T)
    dog.observe([view(10, 50)], 0.0)
    assert dog.observe([], T + 1) == [] and dog.tracks == {}
    assert dog.observe([view(10, 50)], 2 * T) == []


def test_pause_forgets_idle_time() -> None:
    """During a rebalance or recovery nothing moves; after it, idle time counts from the pause."""
    dog = Watchdog(T)
    dog.observe([view(10, 50)], 0.0)
    dog.pause(T + 1)
    assert dog.stalled == frozenset()
    assert dog.observe([view(10, 50)], T + 2) == []
    assert [s.action for s in dog.observe([view(10, 50)], 2 * T + 2)] == [Action.SEEK]


def test_threshold_must_be_positive() -> None:
    """A zero or negative threshold is a configuration error, not 'everything is stalled'."""
    with pytest.raises(ValueError, match="positive"):
        Watchdog(0)
