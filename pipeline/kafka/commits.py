"""Never commit past a record that was not processed: the head-gap check Faust's commit gets wrong by one.

Faust commits, per partition, the run of consecutive acked offsets that follows the last commit
(`Consumer._new_offset`, faust/transport/consumer.py). It keeps its committed offset as the next record to
process (the broker's meaning), but its check for a gap at the head of the acked offsets still reads it as
the last record processed: it refuses to commit only when the lowest acked offset is more than one above
the committed offset. So when exactly one record, the one at the committed offset, was never acked and the
ones after it were, Faust commits past it and that record is gone for good. A record Faust drops without an
ack (its fetch hands over a record of a partition it has paused, `Consumer.getmany`; see
`pipeline/kafka/faustx.py`) is such a record: a seen IP that never gets an entry, an answer that never
reaches the table. The same check passes on offsets taken by a compacted or transactional topic's gaps;
our guarded topics (the cache agent's inputs) have neither, so on them any head gap means a lost record.

`hold_commits_at_gaps(app.consumer, topics, on_gap)` makes the check exact on those topics: a partition
whose record at the committed offset is not acked commits nothing, and `on_gap` hears of each hole once:
the worker seeks that partition back to its committed offset at once (`seek_back`), so the record is read
again instead of skipped. Should that seek fail (the partition moved in a rebalance), the stall watch
(`pipeline/kafka/watchdog.py`) sees a partition with lag and no progress and seeks back after its threshold.

`hold_below(consumer, tp, offset)` covers the hole the head check cannot see: a partition never committed
(its head is its log start, which the consumer does not track). A batch the cache agent did not finish has
its acks withheld (`faustx.withhold_acks`), but a later offset of that partition can still be acked: in a
test that cancels every batch (tests/integration/cache/test_stop_mid_batch.py) Faust restarted the agent
twice and the stop committed offset 3 on a fresh partition whose records 0..2 were never applied. So a
withheld record's offset becomes a floor: that partition commits no further than it until the record is
read again and acked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any

log = logging.getLogger(__name__)


def head_gap(committed: int | None, acked: Sequence[int]) -> bool:
    """True when records from `committed` (the next record to process) up to the lowest acked offset were
    never acked: committing the acked run would skip them. Unknown or zero commits (a partition never
    committed, read from its log start) have no head to check."""
    return committed is not None and committed > 0 and bool(acked) and min(acked) > committed


def below_floor(committed: int | None, proposed: int | None, floor: int) -> int | None:
    """The offset to commit when records from `floor` on are unfinished: `proposed` capped at `floor` (the
    next record to process), or None when that is no step past `committed`."""
    if proposed is None:
        return None
    capped = min(proposed, floor)
    if committed is not None and capped <= committed:
        return None
    return capped


def floor_lifted(floor: int, committed: int | None, acked: Collection[int]) -> bool:
    """The record at `floor` was read again and processed (acked), or the group's commit is already past it
    (the partition moved to another worker, which processed it, and came back)."""
    return floor in acked or (committed is not None and committed > floor)


def hold_below(consumer: Any, tp: Any, offset: int) -> None:
    """Commit `tp` no further than `offset` until the record there is acked again (read again, processed).
    Honoured by a consumer patched with `hold_commits_at_gaps`."""
    floors = _floors(consumer)
    floors[tp] = min(offset, floors.get(tp, offset))


def _floors(consumer: Any) -> dict[Any, int]:
    """tp -> the lowest offset its commits are held below (`hold_below`), kept on the consumer itself."""
    found: dict[Any, int] = consumer.__dict__.setdefault("_geo_floors", {})
    return found


def hold_commits_at_gaps(
    consumer: Any, topics: Collection[str], on_gap: Callable[[Any, int], None] | None = None
) -> None:
    """Patch an app's consumer (before it starts): a partition of `topics` with a head gap commits none,
    and a partition with a floor (`hold_below`) commits no further than it."""
    if getattr(consumer, "_geo_hold_gaps", False):
        return
    original = consumer._new_offset  # only caller: Consumer._filter_committable_offsets
    guarded = frozenset(topics)
    logged: set[tuple[Any, int]] = set()  # (tp, committed): one line per hole, not one per commit tick
    floors = _floors(consumer)
    floored: set[tuple[Any, int]] = set()  # (tp, floor): one line per floor that held a commit back

    def _new_offset(tp: Any) -> int | None:
        floor = floors.get(tp)
        committed = consumer._committed_offset[tp]  # Faust's own _new_offset below does not change it
        if floor is not None and floor_lifted(floor, committed, consumer._acked_index[tp]):
            del floors[tp]
            floor = None
        if tp.topic in guarded:
            acked = consumer._acked[tp]
            if head_gap(committed, acked):
                if (tp, committed) not in logged:
                    logged.add((tp, committed))
                    log.warning(
                        "%s[%d]: record(s) %d..%d were not processed but later ones were: holding its "
                        "commits at %d and seeking back to it",
                        tp.topic,
                        tp.partition,
                        committed,
                        min(acked) - 1,
                        committed,
                    )
                    if on_gap is not None:
                        on_gap(tp, committed)
                return None
        result: int | None = original(tp)
        if floor is not None:
            capped = below_floor(committed, result, floor)
            if capped != result and (tp, floor) not in floored:
                floored.add((tp, floor))
                log.warning(
                    "%s[%d]: record(s) from %d were not processed: committing no further than %d",
                    tp.topic,
                    tp.partition,
                    floor,
                    floor,
                )
            return capped
        return result

    consumer._new_offset = _new_offset
    consumer._geo_hold_gaps = True


def seek_back(consumer: Any) -> Callable[[Any, int], None]:
    """An `on_gap` that seeks the partition back to `offset` in the background (Faust's `seek_wait`, the
    stall watch's remedy): the records from there are read again, the missing one among them."""
    tasks: set[asyncio.Task[None]] = set()  # held until done: the loop keeps only weak references

    async def seek(tp: Any, offset: int) -> None:
        try:
            await consumer.seek_wait({tp: offset})
        except Exception as exc:  # revoked meanwhile, a broker hiccup: the stall watch remains
            log.warning("%s[%d]: seeking back to %d failed (%r)", tp.topic, tp.partition, offset, exc)

    def start(tp: Any, offset: int) -> None:
        task = asyncio.get_running_loop().create_task(seek(tp, offset))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return start
