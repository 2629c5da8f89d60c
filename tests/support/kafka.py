"""Helpers for tests against a real broker: topics, producing, reading back, waiting on conditions, and
running a Faust app in-process.

Tests synchronise by waiting on a condition with a deadline (`wait_for`), never by sleeping a guessed time.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code


def unique(prefix: str) -> str:
    """A topic or app name no other test (or earlier run on a shared broker) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def wait_for(
    predicate: Callable[[], Any] | Callable[[], Awaitable[Any]],
    timeout: float,
    interval: float = 0.1,
    *,
    message: str | Callable[[], str] = "condition",
) -> Any:
    """Poll a sync or async predicate until it returns something truthy (which is returned).

    Raises AssertionError naming `message` when `timeout` seconds pass first; an exception from the
    predicate propagates at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {text} (last value {result!r})")
        await asyncio.sleep(interval)  # a poll interval, not synchronisation: the loop re-checks


async def create_topics(
    bootstrap: str, topics: Mapping[str, int], config: Mapping[str, str] | None = None
) -> None:
    """Create topics ({name: partitions}, replication 1) and wait until the broker's metadata lists them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        new = [NewTopic(name, parts, 1, topic_configs=dict(config or {})) for name, parts in topics.items()]
        response = await admin.create_topics(new)
        errors = [
            (name, code) for name, code, *_ in response.topic_errors if code not in (0, TOPIC_ALREADY_EXISTS)
        ]
        if errors:
            raise AssertionError(f"creating topics failed: {errors}")

        async def all_listed() -> bool:
            described = await admin.describe_topics(list(topics))
            ready = {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
            return all(ready.get(name) == parts for name, parts in topics.items())

        await wait_for(all_listed, 15.0, message=f"topics {sorted(topics)} in metadata")
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    """Send (key, value) records with the default (murmur2) partitioner and wait for every ack."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        await producer.start()
        futures = [await producer.send(topic, value=value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume_all(bootstrap: str, topic: str, *, expected: int, timeout: float) -> list[ConsumerRecord]:
    """Read `topic` from the beginning of every partition with a group-less consumer until `expected`
    records arrived; AssertionError (with the count read) when `timeout` passes first."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + timeout

        async def partitions() -> set[int] | None:
            await consumer._client.force_metadata_update()  # a new topic needs fresh metadata
            return consumer.partitions_for_topic(topic)

        parts = await wait_for(partitions, timeout, message=f"topic {topic!r} to exist")
        consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
        await consumer.seek_to_beginning()
        while len(records) < expected:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"read {len(records)} of {expected} expected records from {topic!r} in {timeout:.1f}s: "
                    f"{[(r.partition, r.key, r.value) for r in records[:20]]}"
                )
            batch = await consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for part_records in batch.values():
                records.extend(part_records)
        return records
    finally:
        await consumer.stop()


# --- Faust in-process ------------------------------------------------------------------------------------
#
# Recipe (faust-streaming 0.15.3, aiokafka 0.14, checked against a Kafka 4.1 broker):
# - Build the app (faust.App, tables, topics, agents) inside the coroutine that runs it, or at least never
#   reuse one App object across two asyncio.run() calls: mode services bind to the loop they first run in.
# - `await app.start()` starts producer, consumer, tables and agents in the current loop (no Worker, no
#   signal handlers, no web server with web_enabled=False); it returns after table recovery. Then wait for
#   the group assignment (`wait_assigned`) before producing, so nothing races the first rebalance.
# - `await app.stop()` leaves no pending tasks and commits offsets: a restarted app with the same id does
#   not reprocess what it already handled, and with the same datadir its RocksDB table is already filled.
# - Two apps with the same id in ONE process do split partitions, but when one stops the other stays
#   `rebalancing` and never consumes the partitions it takes over (seen twice; 120 s). Test rebalancing with
#   worker subprocesses, not two in-process apps.


def wait_assigned_condition(app: Any, *, require_partitions: bool = True) -> bool:
    """True once the app's consumer finished its rebalance (owning partitions, unless not required) and
    table recovery completed. `recovery.completed` alone can stay set from before a rebalance, hence the
    `rebalancing` check."""
    if app._consumer is None:  # not started yet; `app.consumer` would create one
        return False
    assigned = app.consumer.assignment()
    return (
        (bool(assigned) or not require_partitions)
        and not app.rebalancing
        and app.tables.recovery.completed.is_set()
    )


async def wait_assigned(app: Any, timeout: float = 60.0, *, require_partitions: bool = True) -> None:
    """Wait until the app joined its group, got partitions and finished table recovery."""
    await wait_for(
        lambda: wait_assigned_condition(app, require_partitions=require_partitions),
        timeout,
        message=f"app {app.conf.id!r} to be assigned and recovered",
    )


@asynccontextmanager
async def running_app(
    app: Any, *, timeout: float = 60.0, require_partitions: bool = True
) -> AsyncIterator[Any]:
    """Start a Faust app in the running event loop, wait until it is assigned and recovered, and stop it on
    exit, also when start-up or the body fails."""
    try:
        await app.start()
        await wait_assigned(app, timeout, require_partitions=require_partitions)
        yield app
    finally:
        await app.stop()
