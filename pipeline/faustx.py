"""The Faust internals this project relies on or patches, each with a one-line reason.

Versions: faust-streaming 0.15.3, aiokafka 0.14 (paths below are relative to site-packages).

Why a stream partition can stop being consumed for good (tests/integration/test_faust_stall.py provokes
it step by step):
- Faust pauses partitions only in its own bookkeeping: `Consumer.pause_partitions`/`resume_partitions`
  (faust/transport/consumer.py) edit one live set in place; aiokafka keeps prefetching every assigned
  partition into its buffer.
- `Consumer._wait_next_records` (faust/transport/consumer.py) checks that live set is non-empty, then hands
  the set object itself to the consumer thread (`AIOKafkaConsumerThread.getmany` -> `_fetch_records`,
  faust/transport/drivers/aiokafka.py), which passes it to aiokafka's `Fetcher.fetched_records`
  (aiokafka/consumer/fetcher.py). That call rescans the set each time new data arrives, for up to a second.
- When table recovery ends, `Recovery._restart_recovery` (faust/tables/recovery.py) pauses the active
  changelog partitions; the stream partitions are only resumed later, in `on_recovery_completed`, after
  several awaits. In that window the live set is empty, and aiokafka's filter
  `if partitions and tp not in partitions` reads an empty set as "every partition": it drains the stream
  partitions' buffered records and moves their positions past them.
- `Consumer.getmany` (faust/transport/consumer.py) drops records of partitions not in the live set, with no
  log line and no ack.
- The repair, `Consumer.perform_seek` -> aiokafka `AIOKafkaConsumer.seek_to_committed`
  (aiokafka/consumer/consumer.py), seeks only partitions whose committed offset is above 0: a partition
  that was never committed keeps its moved position, its backlog is never read, and the next record
  processed there commits past it.
- Faust's own stall check (`AIOKafkaConsumerThread.verify_event_path`, faust/transport/drivers/aiokafka.py)
  compares the highwater with the fetch *position*, so it sees nothing wrong.

`install(app)` closes both holes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import faust
from aiokafka import TopicPartition

log = logging.getLogger(__name__)


def install(app: faust.App) -> None:
    """Patch this app's consumer (call once per app, after `faust.App(...)`, before it starts)."""
    snapshot_fetches(app)
    rewind_uncommitted(app)


def snapshot_fetches(app: faust.App) -> None:
    """The consumer thread fetches from a copy of Faust's live set of active partitions, and fetches
    nothing when that copy is empty: aiokafka reads an empty set as "all partitions"."""
    # instance patch: the thread looks `_fetch_records` up on itself for every fetch
    # (faust/transport/drivers/aiokafka.py, AIOKafkaConsumerThread.getmany)
    thread = _consumer(app)._thread
    if getattr(thread, "_geo_snapshot", False):
        return
    original = thread._fetch_records

    async def _fetch_records(
        consumer: Any, active_partitions: Any, timeout: float | None = None, max_records: int | None = None
    ) -> Mapping[Any, Any]:
        if active_partitions is not None:  # None: a client-only app, which really means "all"
            # one C-level copy, atomic under the GIL, while the main thread may be editing the set
            active_partitions = frozenset(active_partitions)
            if not active_partitions:
                return {}
        records: Mapping[Any, Any] = await original(
            consumer, active_partitions, timeout=timeout, max_records=max_records
        )
        return records

    thread._fetch_records = _fetch_records
    thread._geo_snapshot = True


def rewind_uncommitted(app: faust.App) -> None:
    """After Faust seeks to committed offsets, also rewind stream partitions whose committed offset is
    missing or 0 to the log start (auto_offset_reset=earliest): aiokafka's `seek_to_committed` leaves them
    wherever their position drifted to."""
    consumer = _consumer(app)
    if getattr(consumer, "_geo_rewind", False):
        return
    original = consumer.seek_to_committed  # only caller: Consumer.perform_seek (faust/transport/consumer.py)

    async def seek_to_committed() -> Mapping[Any, int | None]:
        committed: Mapping[Any, int | None] = await original()
        if app.conf.consumer_auto_offset_reset != "earliest":
            return committed  # "latest" skips a backlog by design
        fresh = [
            TopicPartition(tp.topic, tp.partition)
            for tp, offset in committed.items()
            if not offset and not consumer._is_changelog_tp(tp)  # changelogs: recovery owns their position
        ]
        if fresh:
            log.info("no committed offset: rewinding %s to the log start", _names(fresh))
            await consumer._thread.seek_to_beginning(*fresh)
        return committed

    consumer.seek_to_committed = seek_to_committed
    consumer._geo_rewind = True


def _consumer(app: faust.App) -> Any:
    # the aiokafka driver's Consumer (faust/transport/drivers/aiokafka.py): its thread and bookkeeping are
    # not part of faust's ConsumerT interface
    return app.consumer


def _names(tps: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in tps)
