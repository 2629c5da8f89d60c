"""The head-gap decision: a partition commits past nothing it did not process."""

from __future__ import annotations

from pipeline.kafka.commits import below_floor, floor_lifted, head_gap


def test_the_record_at_the_committed_offset_unacked_is_a_gap() -> None:
    """Committed 10 (the next record to process) with 11 and 12 acked: record 10 would be skipped."""
    assert head_gap(10, [11, 12])


def test_acks_from_the_committed_offset_on_are_no_gap() -> None:
    """Acks starting at the committed offset (in any order) may be committed."""
    assert not head_gap(10, [10, 11, 12])
    assert not head_gap(10, [12, 10, 11])


def test_a_partition_never_committed_has_no_head_to_check() -> None:
    """No commit (None) or 0: the partition is read from its log start, which may lie past offset 0."""
    assert not head_gap(None, [5, 6])
    assert not head_gap(0, [5, 6])


def test_nothing_acked_is_no_gap() -> None:
    """Nothing acked: there is nothing to commit, so nothing to hold."""
    assert not head_gap(10, [])


def test_a_floor_caps_the_commit_at_the_first_unfinished_record() -> None:
    """Records from 0 unfinished, 2 acked behind them (never committed): commit 0, not 3."""
    assert below_floor(None, 3, 0) == 0
    assert below_floor(None, 3, 5) == 3


def test_a_floor_at_or_below_the_committed_offset_commits_nothing() -> None:
    """Committed 10 and the floor at 10: no step past the commit, so nothing to commit."""
    assert below_floor(10, 14, 10) is None
    assert below_floor(10, None, 12) is None
    assert below_floor(10, 14, 12) == 12


def test_a_floor_is_lifted_once_its_record_is_acked_or_the_group_committed_past_it() -> None:
    """Acked again (read and processed), or committed past by another owner: the floor holds nothing."""
    assert floor_lifted(5, 3, {5, 6})
    assert floor_lifted(5, 6, set())
    assert not floor_lifted(5, 5, {6})
    assert not floor_lifted(5, None, set())
