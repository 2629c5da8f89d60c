"""The commit gap hold around Faust's own commit decision (`Consumer._new_offset`, run on a stand-in
holding only the bookkeeping it reads): Faust alone commits past a single unprocessed record at the
committed offset; with the hold, a guarded topic commits nothing until that record is acked, and other
topics keep Faust's behaviour."""

from __future__ import annotations

from collections import defaultdict
from functools import partial
from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from pipeline.kafka.commits import hold_below, hold_commits_at_gaps

GUARDED, OTHER = TP("seen", 0), TP("elsewhere", 0)


def consumer_with(acks: dict[TP, list[int]], committed: int | None = 10) -> Any:
    """Faust's consumer bookkeeping: committed offsets (next record to process) and acked offsets."""
    consumer = SimpleNamespace(
        _committed_offset=defaultdict(lambda: None),
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _gap=defaultdict(IntervalTree),
    )
    for tp, offsets in acks.items():
        consumer._committed_offset[tp] = committed
        consumer._acked[tp] = list(offsets)
        consumer._acked_index[tp] = set(offsets)
    consumer._new_offset = partial(Consumer._new_offset, consumer)
    return consumer


def ack(consumer: Any, tp: TP, offset: int) -> None:
    consumer._acked[tp].append(offset)
    consumer._acked_index[tp].add(offset)


def test_faust_alone_commits_past_one_unprocessed_record() -> None:
    """Why the hold exists: committed 10, 11 and 12 acked, 10 never: Faust would commit 13."""
    consumer = consumer_with({GUARDED: [11, 12]})
    assert consumer._new_offset(GUARDED) == 13


def test_a_guarded_partition_holds_its_commits_until_the_missing_record_is_acked() -> None:
    """With the hold the same partition commits nothing; once record 10 is acked it commits 13."""
    consumer = consumer_with({GUARDED: [11, 12]})
    hold_commits_at_gaps(consumer, {GUARDED.topic})
    assert consumer._new_offset(GUARDED) is None
    ack(consumer, GUARDED, 10)
    assert consumer._new_offset(GUARDED) == 13


def test_each_hole_is_reported_once_with_its_offset() -> None:
    """The hold tells `on_gap` (the worker's seek back) once per hole, not at every commit tick."""
    consumer, holes = consumer_with({GUARDED: [11, 12]}), list[tuple[TP, int]]()
    hold_commits_at_gaps(consumer, {GUARDED.topic}, on_gap=lambda tp, offset: holes.append((tp, offset)))
    for _ in range(3):
        assert consumer._new_offset(GUARDED) is None
    assert holes == [(GUARDED, 10)]


def test_other_topics_keep_fausts_commits() -> None:
    """A topic not guarded (one that may have compaction gaps) commits as Faust decides."""
    consumer = consumer_with({OTHER: [11, 12]})
    hold_commits_at_gaps(consumer, {GUARDED.topic})
    assert consumer._new_offset(OTHER) == 13


def test_installing_twice_wraps_once() -> None:
    """A second install is a no-op: the check runs once per commit."""
    consumer = consumer_with({GUARDED: [10, 11]})
    hold_commits_at_gaps(consumer, {GUARDED.topic})
    first = consumer._new_offset
    hold_commits_at_gaps(consumer, {GUARDED.topic})
    assert consumer._new_offset is first
    assert consumer._new_offset(GUARDED) == 12


def test_faust_alone_commits_past_unfinished_records_on_a_fresh_partition() -> None:
    """Never committed, records 0..2 withheld (not acked) and 3 acked: Faust commits 4, the head check
    cannot tell (a fresh partition's head is its log start)."""
    consumer = consumer_with({GUARDED: [3]}, committed=None)
    hold_commits_at_gaps(consumer, {GUARDED.topic})
    assert consumer._new_offset(GUARDED) == 4


def test_a_withheld_record_holds_its_partition_until_it_is_acked_again() -> None:
    """A floor at 0 caps the commit while later records are acked, and is gone once record 0 is acked."""
    consumer = consumer_with({GUARDED: [3]}, committed=None)
    hold_commits_at_gaps(consumer, {GUARDED.topic})
    hold_below(consumer, GUARDED, 2)
    hold_below(consumer, GUARDED, 0)  # the lowest withheld offset wins
    assert consumer._new_offset(GUARDED) == 0
    consumer._committed_offset[GUARDED] = 0
    assert consumer._new_offset(GUARDED) is None  # nothing past the floor, however often asked
    for offset in (0, 1, 2, 3):
        ack(consumer, GUARDED, offset)
    assert consumer._new_offset(GUARDED) == 4
    assert consumer._geo_floors == {}
