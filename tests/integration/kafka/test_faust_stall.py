"""The stream-partition stall after table recovery, provoked deterministically on the real broker with a
RocksDB-store Faust app; the fixes in `pipeline.kafka.faustx`; and the stall watchdog.

`RecoveryRace` chooses one interleaving that a loaded machine can produce by itself, and changes no logic:
- it holds the consumer thread's fetch call that Faust makes once the changelog is caught up (the call
  that would otherwise wait up to a second for new data) until recovery has paused the changelog, so the
  thread scans aiokafka's buffer exactly while Faust's live set of active partitions is empty;
- it holds the table's last changelog event until that call is held, so recovery cannot end first;
- it holds the table's recovery callback (`Table.on_recover`, awaited between the pause of the changelog and
  the resume of the stream partitions) until Faust has handled what that scan returned.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.consumer.fetcher import FetchResult
from faust.types import TP

from pipeline.kafka import faustx
from tests.support.kafka import create_topics, produce, running_app, unique, wait_for

pytestmark = pytest.mark.integration

BACKLOG = 40  # stream records waiting before the worker starts
CHANGELOG = 10  # table records the worker must recover first


class RecoveryRace:
    """Makes the consumer thread scan aiokafka's buffer while Faust's live active set is empty."""

    def __init__(self, stream: TopicPartition, changelog: TopicPartition) -> None:
        self.stream = stream
        self.changelog = changelog
        self.holding = asyncio.Event()  # the thread holds a fetch call made while the changelog is caught up
        self.scanned = asyncio.Event()  # that call has scanned (with the live set empty)
        self.released = False
        self.window_seen = False  # the live set was empty when the held call went on
        self.drained: dict[Any, int] = {}  # what the held scan returned: tp -> number of records
        self.batches = 0  # getmany batches Faust finished handling
        self.batches_at_scan = -1

    def attach(self, app: faust.App, table: Any) -> None:
        """Wrap the app's fetch call, its getmany and its table's recovery callback (before app.start())."""
        loop = asyncio.get_running_loop()
        consumer: Any = app.consumer
        thread = consumer._thread
        inner = thread._fetch_records  # Faust's own, or faustx's when installed first

        async def fetch(aio: Any, active: Any, timeout: float | None = None, max_records: Any = None) -> Any:
            if self.holding.is_set() or not self._caught_up(aio, active):
                return await inner(aio, active, timeout=timeout, max_records=max_records)
            loop.call_soon_threadsafe(self.holding.set)
            try:  # polled on the thread's loop; the changelog pause comes from the main thread
                await wait_for(lambda: not active, 30, 0.001, message="recovery to pause the changelog")
                self.window_seen = True
            except AssertionError:
                pass  # the test fails on window_seen; Faust must not crash on it
            result = await inner(aio, active, timeout=timeout, max_records=max_records)
            self.drained = {tp: len(records) for tp, records in result.items()}
            loop.call_soon_threadsafe(self._on_scanned)  # runs before the result reaches getmany
            return result

        thread._fetch_records = fetch
        getmany = consumer.getmany

        async def counted(timeout: float) -> Any:
            async for item in getmany(timeout):
                yield item
            self.batches += 1

        consumer.getmany = counted  # Consumer._drain_messages reads it when the fetcher starts
        table.on_recover(self._hold_resume)

    def _caught_up(self, aio: Any, active: Any) -> bool:
        """Only the changelog is active, aiokafka delivered all of it, stream records wait in its buffer."""
        if set(active or ()) != {self.changelog}:
            return False
        state = aio._subscription.subscription.assignment.state_value(self.changelog)
        caught_up = state.has_valid_position and state.position >= CHANGELOG
        return bool(caught_up) and type(aio._fetcher._records.get(self.stream)) is FetchResult

    def _on_scanned(self) -> None:
        self.batches_at_scan = self.batches
        self.scanned.set()

    async def changelog_event(self, event: Any) -> None:
        """Table(on_changelog_event=...): the last changelog record waits until the fetch call is held."""
        if event.message.offset == CHANGELOG - 1:
            await wait_for(self.holding.is_set, 30, 0.01, message="a fetch call held in the consumer thread")

    async def _hold_resume(self) -> None:
        if self.released or not self.holding.is_set():
            return
        await wait_for(self.scanned.is_set, 30, 0.01, message="the held fetch call to scan")
        await wait_for(lambda: self.batches > self.batches_at_scan, 30, 0.01, message="Faust to handle it")
        self.released = True


class Worker:
    """A RocksDB-store Faust app with one table and one agent recording the offsets it processes."""

    def __init__(self, bootstrap: str, datadir: Path, *, race: bool = True) -> None:
        self.app_id = unique("stall")
        self.source = unique("stall-src")
        self.bootstrap = bootstrap
        self.stream = TopicPartition(self.source, 0)
        self.changelog = TopicPartition(f"{self.app_id}-state-changelog", 0)
        self.race = RecoveryRace(self.stream, self.changelog) if race else None
        self.app = faust.App(
            self.app_id,
            broker=f"kafka://{bootstrap}",
            store="rocksdb://",
            datadir=str(datadir),
            web_enabled=False,
            topic_partitions=1,
            consumer_auto_offset_reset="earliest",
            processing_guarantee="at_least_once",
            broker_commit_interval=0.5,
        )
        self.table = self.app.Table(
            "state",
            key_type=bytes,
            value_type=bytes,
            partitions=1,
            on_changelog_event=self.race.changelog_event if self.race else None,
        )
        topic = self.app.topic(
            self.source, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )
        self.seen: list[int] = []  # offsets the agent processed
        self.handed: list[int] = []  # offsets the consumer handed to Faust's conductor (after watch_handoff)

        @self.app.agent(topic, name="record")
        async def record(stream: Any) -> None:
            async for event in stream.events():
                self.seen.append(event.message.offset)

    def watch_handoff(self) -> None:
        """Record the stream offsets the consumer hands to Faust's message handler (before app.start())."""
        consumer: Any = self.app.consumer
        handler = consumer.callback  # read by Consumer._drain_messages when the fetcher starts

        async def handed(message: Any) -> Any:
            if message.topic == self.source:
                self.handed.append(message.offset)
            return await handler(message)

        consumer.callback = handed

    async def prepare(self, *, changelog: int = CHANGELOG, backlog: int = BACKLOG) -> None:
        """Topics, a changelog to recover (so recovery pauses it at its end) and a stream backlog."""
        await create_topics(self.bootstrap, {self.source: 1, self.changelog.topic: 1})
        await produce(self.bootstrap, self.changelog.topic, [(b"k%d" % i, b"v") for i in range(changelog)])
        await produce(self.bootstrap, self.source, [(b"ip%d" % i, b"e") for i in range(backlog)])

    async def committed(self) -> int | None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(self.app_id, partitions=[self.stream])
        finally:
            await admin.close()
        meta = offsets.get(self.stream)
        return None if meta is None or meta.offset < 0 else int(meta.offset)

    async def committed_is(self, offset: int) -> bool:
        return await self.committed() == offset


async def test_unpatched_faust_loses_the_backlog_of_a_never_committed_stream_partition(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """With Faust as shipped, a scan while the active set is empty drains the stream backlog, Faust drops it
    without an ack, the seek to committed offsets leaves it skipped, and the next record commits past it."""
    worker = Worker(kafka_bootstrap, tmp_path)
    await worker.prepare()
    race = worker.race
    assert race is not None
    race.attach(worker.app, worker.table)
    async with running_app(worker.app):
        await wait_for(lambda: race.released, 60, message="the provoked interleaving to complete")
        assert race.window_seen
        assert race.drained == {worker.stream: BACKLOG}  # the empty set was read as "all partitions"

        await produce(kafka_bootstrap, worker.source, [(b"late", b"e")])  # steady traffic: one more record
        await wait_for(lambda: BACKLOG in worker.seen, 30, message="the next record to be processed")
        await wait_for(lambda: worker.committed_is(BACKLOG + 1), 30, message="its commit")
        assert worker.seen == [BACKLOG]  # offsets 0..BACKLOG-1 never reached the agent: lost


async def test_snapshot_fetch_leaves_the_backlog_buffered_and_every_record_is_processed(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """With `faustx.snapshot_fetches`, the same interleaving fetches nothing while the active set is empty
    and the agent processes the whole backlog and the next record, in order."""
    worker = Worker(kafka_bootstrap, tmp_path)
    await worker.prepare()
    race = worker.race
    assert race is not None
    faustx.snapshot_fetches(worker.app)
    consumer: Any = worker.app.consumer
    thread = consumer._thread
    patched = thread._fetch_records
    faustx.snapshot_fetches(worker.app)
    assert thread._fetch_records is patched  # idempotent: a second call wraps nothing twice
    race.attach(worker.app, worker.table)
    async with running_app(worker.app):
        await wait_for(lambda: race.released, 60, message="the provoked interleaving to complete")
        assert race.window_seen
        assert race.drained == {}

        await produce(kafka_bootstrap, worker.source, [(b"late", b"e")])
        await wait_for(lambda: len(worker.seen) == BACKLOG + 1, 30, message=lambda: f"all of {worker.seen}")
        await wait_for(lambda: worker.committed_is(BACKLOG + 1), 30, message="the commit")
        assert worker.seen == list(range(BACKLOG + 1))


async def test_rewind_of_uncommitted_partitions_recovers_a_backlog_the_race_already_drained(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """With only `faustx.rewind_uncommitted`, the race still drains the backlog, but the seek after recovery
    rewinds the never-committed partition to the log start: the consumer hands every record to Faust once,
    in order, and the commit reaches the end.

    Asserted at the hand-off, not in the agent: under load (about 1 run in 2 with eight copies of this
    test at once) Faust's stream (its Cython `__aiter__`) never yields offset 0 after this rewind although
    its message handler received it with flow active and the current generation; the agent then sees
    1..39. That loss is inside Faust and only follows a drained-then-rewound partition, which
    `snapshot_fetches` (installed with this one by `faustx.install`) prevents; the test above shows the
    agent getting every record on that path.
    """
    worker = Worker(kafka_bootstrap, tmp_path)
    await worker.prepare()
    race = worker.race
    assert race is not None
    faustx.rewind_uncommitted(worker.app)
    worker.watch_handoff()
    race.attach(worker.app, worker.table)
    async with running_app(worker.app):
        await wait_for(lambda: race.released, 60, message="the provoked interleaving to complete")
        assert race.drained == {worker.stream: BACKLOG}

        await wait_for(lambda: len(worker.handed) >= BACKLOG, 30, message=lambda: f"all of {worker.handed}")
        await wait_for(lambda: worker.committed_is(BACKLOG), 30, message="the commit")
        assert worker.handed == list(range(BACKLOG))
        assert len(set(worker.seen)) == len(worker.seen) and set(worker.seen) <= set(range(BACKLOG))


async def test_watchdog_detects_logs_and_revives_a_partition_moved_past_its_backlog(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream partition whose fetch position was moved to the log end behind Faust's back is reported as
    stalled (an error naming topic, partition and lag) one threshold later, sought back and consumed."""
    worker = Worker(kafka_bootstrap, tmp_path, race=False)
    await worker.prepare(changelog=0, backlog=0)
    faustx.install(worker.app)
    watch = faustx.StallWatch(worker.app, threshold=10.0)
    elsewhere = faustx.StallWatch(worker.app, threshold=10.0, topics={"some-other-topic"})
    caplog.set_level(logging.ERROR, logger="pipeline.kafka.faustx")
    async with running_app(worker.app):
        consumer: Any = worker.app.consumer
        aio = consumer._thread._ensure_consumer()
        tp = TP(worker.source, 0)  # Faust's own type: resume_partitions adds what it is given to its set
        consumer.pause_partitions([tp])  # Faust will not hand these records to the agent
        await produce(kafka_bootstrap, worker.source, [(b"ip%d" % i, b"e") for i in range(BACKLOG)])
        await consumer._thread.call_thread(aio.seek, worker.stream, BACKLOG)  # behind Faust's back
        consumer.resume_partitions([tp])

        assert await watch.check(now=0.0) == []  # first look: the partition just became known
        views = [v for v in await faustx.partition_views(worker.app) if v.topic == worker.source]
        assert [(v.committed, v.position, v.highwater, v.lag) for v in views] == [
            (None, BACKLOG, BACKLOG, BACKLOG)  # Faust's check compares position and highwater: all fine
        ]
        assert await watch.check(now=5.0) == []  # not idle long enough
        assert worker.seen == []
        assert await elsewhere.check(now=0.0) == [] and await elsewhere.check(now=11.0) == []  # not watched

        stalls = await watch.check(now=11.0)
        assert [(s.topic, s.partition, s.lag, s.action.value) for s in stalls] == [
            (worker.source, 0, BACKLOG, "seek")
        ]
        assert watch.stalled == {(worker.source, 0)}
        assert watch.line() == f"stalled={worker.source}[0]:{BACKLOG}"
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any(f"{worker.source}[0] lag={BACKLOG}" in text for text in errors), errors

        await wait_for(lambda: len(worker.seen) == BACKLOG, 30, message=lambda: f"all of {worker.seen}")
        await wait_for(lambda: worker.committed_is(BACKLOG), 30, message="the commit")
        assert await watch.check(now=12.0) == []
        assert watch.stalled == frozenset()
        assert watch.line() == "stalled=none"
        assert worker.seen == list(range(BACKLOG))


async def test_watchdog_crashes_the_app_when_seeking_back_does_not_revive_the_partition(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A partition Faust keeps paused stays stalled after the seek back: a threshold later the watchdog
    crashes the app with StalledPartitionsError (the worker exits; restarted, it rejoins the group)."""
    worker = Worker(kafka_bootstrap, tmp_path, race=False)
    await worker.prepare(changelog=0, backlog=0)
    faustx.install(worker.app)
    watch = faustx.StallWatch(worker.app, threshold=10.0)
    async with running_app(worker.app):
        consumer: Any = worker.app.consumer
        consumer.pause_partitions([TP(worker.source, 0)])  # and never resumed
        await produce(kafka_bootstrap, worker.source, [(b"ip%d" % i, b"e") for i in range(BACKLOG)])

        assert await watch.check(now=0.0) == []
        actions = [[s.action.value for s in await watch.check(now=t)] for t in (11.0, 12.0, 22.0)]
        assert actions == [["seek"], ["wait"], ["restart"]]
        assert isinstance(worker.app.crash_reason, faustx.StalledPartitionsError)
        assert f"{worker.source}[0] lag={BACKLOG}" in str(worker.app.crash_reason)
        assert worker.seen == []
