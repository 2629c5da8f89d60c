"""The Faust internals this project relies on or patches, each with a one-line reason.

Versions: faust-streaming 0.15.3, aiokafka 0.14 (paths below are relative to site-packages).

Why a stream partition can stop being consumed for good (tests/integration/kafka/test_faust_stall.py provokes
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

Every private name used here is listed in `pipeline/kafka/hooks.py`, which checks at start that each is
still on its call path (a worker refuses to start otherwise). `install(app)` closes both holes;
`StallWatch` catches what is left (see `pipeline/kafka/watchdog.py`).

Why a failed send must stop the worker (`DeliveryGuard`): Faust flushes its producer before every offset
commit (`Consumer._commit_offsets`, faust/transport/consumer.py), but the flush reports no delivery error,
so a record the cache agent, the retry timer or a table changelog failed to send would be gone and its
input committed. The guard refuses that commit and crashes the worker; the input is replayed.

Why `as_current(event)`: a table write finds its changelog partition (`Table.partition_for_key`) and its
store partition (`Store._get`, our `IndexedStore._set`) from the event being processed, read from the
context variable `faust.streams._current_event`, which the stream sets in the task iterating it. An agent
consuming `stream.take_events(...)` runs in another task than the one draining the stream, so nothing is
current there: the cache agent makes each event of its batch current while it applies it.

Why `withhold_acks(events)`: `Stream.take_events` (faust/streams.py) acks a batch's events in the `finally`
after its `yield`, which also runs when the generator is closed because the agent's task was cancelled
mid-batch (a stop, a crash); the consumer's stop then commits those offsets (`Consumer.on_stop`), and the
unfinished batch would never be replayed. Marking the messages acked without telling the consumer makes
those closing acks no-ops, so the committed offset stays before the batch; and each withheld offset becomes
a floor its partition commits no further than until it is read again (`pipeline/kafka/commits.py`: a
later offset of the partition can still be acked).

`start_with(app, service)`: Faust starts the services in its private `_extra_services` list after table
recovery; `app.service()` registers only classes, and our services are built with their dependencies.
`start_early(app, service)` is for a service that needs none of the table (the hot path, the resolver): a
cold restart that replays a large table's changelog would otherwise hold the enriched stream back as long.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import faust
from aiokafka import TopicPartition
from faust.streams import _current_event
from faust.types import TP

from pipeline.kafka.commits import hold_below
from pipeline.kafka.watchdog import Action, Key, PartitionView, Stall, Watchdog

log = logging.getLogger(__name__)

# a partition with lag commits every broker_commit_interval while it is consumed: 3 minutes without a commit
# is a stall, not a slow batch
STALL_THRESHOLD = 180.0
BLIND_AFTER = 3  # failed looks in a row (a rebalance or broker hiccup lasts one or two) that make it blind
# a look failing with these is a renamed or retyped Faust/aiokafka internal, not a hiccup: blind at once
BROKEN = (AttributeError, TypeError, KeyError, AssertionError)


def install(app: faust.App) -> None:
    """Patch this app's consumer (call once per app, after `faust.App(...)`, before it starts)."""
    snapshot_fetches(app)
    rewind_uncommitted(app)
    tolerate_unset_positions(app)


def tolerate_unset_positions(app: faust.App) -> None:
    """Faust's livelock check (`AIOKafkaConsumerThread.verify_event_path`) reads each partition's fetch
    position, which aiokafka asserts is set; right after a seek (a rebalance, the rewind above) it is not
    yet, and the AssertionError crashed the worker (seen once in 25 two-worker starts). Skip that look."""
    thread = _consumer(app)._thread
    if getattr(thread, "_geo_positions", False):
        return
    original = thread.verify_event_path

    def verify_event_path(now: float, tp: Any) -> None:
        try:
            original(now, tp)
        except AssertionError:  # the position is being reset: the next check looks again
            log.debug("livelock check skipped for %s: its position is being reset", tp)

    thread.verify_event_path = verify_event_path
    thread._geo_positions = True


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


class StalledPartitionsError(RuntimeError):
    """Raised into the app (it crashes, the worker exits) when a seek did not revive a stalled partition."""


class StallWatch:
    """Looks at a running app's stream partitions, logs stalls as errors and applies the remedy.

    Call `check()` periodically (a timer); `stalled` is the set of (topic, partition) found stalled by the
    last check, for the progress line and the readiness check; `blind` says why the watch cannot read the
    partitions' state (None while it can), which makes the worker unready: a watch that sees nothing
    must not pass for one that saw no stall. `topics` limits the watch (default: every
    stream topic): leave out a topic whose agent may rightly hold records longer than the threshold.
    """

    def __init__(
        self,
        app: faust.App,
        threshold: float = STALL_THRESHOLD,
        *,
        topics: Collection[str] | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.app = app
        self.watchdog = Watchdog(threshold)
        self.topics = None if topics is None else frozenset(topics)
        self.clock = clock
        self.blind: str | None = None
        self._failed_looks = 0

    @property
    def stalled(self) -> frozenset[Key]:
        return self.watchdog.stalled

    def line(self) -> str:
        """For the progress line: `stalled=none` or `stalled=<topic>[<partition>]:<lag>,...`."""
        stalls = sorted(self.watchdog.stalls, key=lambda s: (s.topic, s.partition))
        return "stalled=" + (",".join(f"{s.topic}[{s.partition}]:{s.lag}" for s in stalls) or "none")

    async def check(self, now: float | None = None) -> list[Stall]:
        """One look: gather positions, decide, log and remedy. Returns the stalls found."""
        now = self.clock() if now is None else now
        if not settled(self.app):
            self.watchdog.pause(now)
            return []
        try:
            views = await partition_views(self.app)
        except Exception as exc:  # a rebalance or a broker hiccup mid-check: look again next time
            self._failed_looks += 1
            if isinstance(exc, BROKEN) or self._failed_looks >= BLIND_AFTER:
                if self.blind is None:
                    log.error("stall watch cannot read the partitions' state: %r", exc)
                self.blind = f"{type(exc).__name__}: {exc}"
            else:
                log.warning("stall check skipped: %r", exc)
            return list(self.watchdog.stalls)
        self._failed_looks, self.blind = 0, None
        if self.topics is not None:
            views = [v for v in views if v.topic in self.topics]
        stalls = self.watchdog.observe(views, now)
        for stall in stalls:
            await self._remedy(stall, now)
        return stalls

    async def _remedy(self, stall: Stall, now: float) -> None:
        if stall.action is Action.SEEK:
            log.error(
                "stalled stream partition %s; seeking back to offset %d", stall.describe(), stall.target
            )
            tp = TP(stall.topic, stall.partition)
            await self.app.consumer.seek_wait({tp: stall.target})  # seeks in the thread, resets read offset
            self.watchdog.sought((stall.topic, stall.partition), now)
        elif stall.action is Action.WAIT:
            log.error("stalled stream partition %s; a seek back was tried, waiting", stall.describe())
        else:
            text = f"stalled stream partition {stall.describe()}; seeking back did not help: restarting"
            log.critical(text)
            await self.app.crash(StalledPartitionsError(text))  # the worker exits; restarted, it rejoins


def recovered(app: faust.App) -> bool:
    """Table recovery of the current assignment is complete (Faust's `Recovery.completed`)."""
    recovery = app.tables.recovery  # type: ignore[attr-defined]  # the concrete TableManager has it
    return bool(recovery.completed.is_set())


def settled(app: faust.App) -> bool:
    """Assigned, recovered and not rebalancing: the only time partitions are expected to move."""
    return recovered(app) and not app.rebalancing and bool(_consumer(app).flow_active)


async def partition_views(app: faust.App) -> list[PartitionView]:
    """Committed offset, position, log start and end of every assigned stream partition (not changelogs)."""
    consumer = _consumer(app)
    tps = sorted(
        TopicPartition(tp.topic, tp.partition)
        for tp in consumer.assignment()
        if not consumer._is_changelog_tp(tp)
    )
    if not tps:
        return []
    earliest = app.conf.consumer_auto_offset_reset == "earliest"
    thread = consumer._thread
    aio = thread._ensure_consumer()

    async def read() -> list[PartitionView]:  # runs in the consumer thread: aiokafka lives on its loop
        ends = await aio.end_offsets(tps)
        starts = await aio.beginning_offsets(tps) if earliest else ends
        # the fetch position, read like Faust's own check does (faust/transport/drivers/aiokafka.py)
        subscription = aio._subscription.subscription
        assignment = subscription.assignment if subscription is not None else None
        views = []
        for tp in tps:
            state = assignment.state_value(tp) if assignment is not None else None
            position = state.position if state is not None and state.has_valid_position else None
            committed = await aio.committed(tp)
            views.append(PartitionView(tp.topic, tp.partition, committed, position, ends[tp], starts[tp]))
        return views

    views: list[PartitionView] = await thread.call_thread(read)
    return views


def _consumer(app: faust.App) -> Any:
    # the aiokafka driver's Consumer (faust/transport/drivers/aiokafka.py): its thread and bookkeeping are
    # not part of faust's ConsumerT interface
    return app.consumer


def _names(tps: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in tps)


@contextmanager
def as_current(event: Any) -> Iterator[None]:
    """Make `event` the current event of this task (as the stream does for the one it yields) while the
    block runs: table reads and writes inside go to its partition and its changelog partition."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def withhold_acks(events: Iterable[Any], consumer: Any) -> None:
    """Keep the offsets of `events` (a batch the agent did not finish) from ever being committed: the take
    buffer's closing acks skip a message already marked acked, and the consumer never hears of it; and
    `consumer` commits none of their partitions past them (`commits.hold_below`), whatever is acked later."""
    for event in events:
        message = event.message
        message.acked = True  # read by Message.ack (faust/types/tuples.py) before it acks
        hold_below(consumer, message.tp, message.offset)


def start_with(app: faust.App, service: Any) -> None:
    """Start `service` (a mode Service instance) with the app, after table recovery; stop it with the app."""
    app._extra_services.append(service)


def start_early(app: faust.App, service: Any) -> None:
    """Start `service` (a mode Service instance) when the app starts, before Faust's own services and
    without waiting for table recovery; stop it after them (mode stops an app's children in reverse)."""
    app.add_dependency(service)  # mode's public API; call before the app starts


class DeliveryGuard:
    """Watches every send of one Faust app and refuses its commits once one has failed."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self.failure: BaseException | None = None
        self._crashing: asyncio.Future[None] | None = None

    def install(self) -> None:
        """Wrap the app's producer `send` and its consumer's commit; call before the app starts."""
        producer: Any = self.app.producer
        consumer: Any = self.app.consumer
        send, commit = producer.send, consumer._commit

        async def guarded_send(*args: Any, **kwargs: Any) -> Any:
            try:
                future = await send(*args, **kwargs)
            except Exception as exc:
                self._failed(exc, args[0] if args else kwargs.get("topic"))
                raise
            future.add_done_callback(lambda f, topic=args[0] if args else None: self._check(f, topic))
            return future

        async def guarded_commit(offsets: Any) -> bool:
            if self.failure is not None:
                log.error(
                    "commit refused: a send failed (%r); the worker stops, its input is replayed",
                    self.failure,
                )
                return False
            return bool(await commit(offsets))

        producer.send = guarded_send
        consumer._commit = guarded_commit

    def fail(self, exc: BaseException, where: str) -> None:
        """Something the worker cannot go on without failed (a store write): refuse every commit from now
        on and stop the worker, so the input it was processing is replayed, never acked."""
        self._failed(exc, where)

    def _check(self, future: asyncio.Future[Any], topic: Any) -> None:
        if future.cancelled():
            self._failed(asyncio.CancelledError("send cancelled"), topic)
        elif future.exception() is not None:
            self._failed(future.exception(), topic)  # type: ignore[arg-type]  # checked just above

    def _failed(self, exc: BaseException, topic: Any) -> None:
        first = self.failure is None
        self.failure = self.failure or exc
        if first:
            log.error("a record to %s was not delivered (%r): refusing commits and stopping", topic, exc)
            self._crashing = asyncio.ensure_future(self.app.crash(exc))
