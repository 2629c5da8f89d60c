"""The real broker and the Faust-in-process recipe the pipeline's integration tests build on."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import faust
import pytest

from pipeline.devtools.broker import BrokerInfo, LocalKafka
from pipeline.errors import BrokerError
from tests.support.kafka import consume_all, create_topics, produce, running_app, unique, wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 2


def test_produce_and_consume(kafka_bootstrap: str) -> None:
    """A record produced with aiokafka comes back, key and value intact, from the fixture's broker."""
    topic = unique("roundtrip")

    async def scenario() -> list[Any]:
        await create_topics(kafka_bootstrap, {topic: 1})
        await produce(kafka_bootstrap, topic, [(b"k", b"hello"), (None, b"no key")])
        return await consume_all(kafka_bootstrap, topic, expected=2, timeout=20)

    records = asyncio.run(scenario())
    assert [(r.key, r.value) for r in records] == [(b"k", b"hello"), (None, b"no key")]


def make_app(app_id: str, bootstrap: str, datadir: Path, source: str) -> tuple[faust.App, Any, list[str]]:
    """A fresh app per run: a Faust app binds to the event loop it first runs in, so never reuse one."""
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="rocksdb://",
        datadir=str(datadir),
        web_enabled=False,
        topic_partitions=PARTITIONS,
    )
    table = app.Table("geo", key_type=str, value_type=bytes, partitions=PARTITIONS)
    # Table() takes no serialiser arguments and derives "json" from key_type=str: the changelog key would be
    # b'"1.2.3.4"' while the topic key is b"1.2.3.4". Set raw before first use (store and changelog topic
    # are created lazily from these attributes) so table keys and topic keys are the same bytes.
    table.key_serializer = "raw"
    table.value_serializer = "raw"
    topic = app.topic(
        source,
        key_type=str,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=PARTITIONS,
    )
    seen: list[str] = []

    @app.agent(topic)
    async def apply(stream: Any) -> None:
        async for key, value in stream.items():
            table[key] = value
            seen.append(key)

    return app, table, seen


def test_faust_table_changelog_and_restart(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A RocksDB table fed by a co-partitioned topic writes a raw-keyed changelog and survives a restart."""
    app_id, source = unique("test-app"), unique("events")
    first = {f"10.0.0.{i}": f"geo-{i}".encode() for i in range(10)}
    later = {"10.0.1.1": b"late"}

    async def scenario() -> None:
        await create_topics(kafka_bootstrap, {source: PARTITIONS})
        app, table, seen = make_app(app_id, kafka_bootstrap, tmp_path, source)
        async with running_app(app):
            await produce(kafka_bootstrap, source, [(k.encode(), v) for k, v in first.items()])
            await wait_for(lambda: dict(table.items()) == first, 30, message="table to hold every event")

        changelog_topic = f"{app_id}-geo-changelog"
        changelog = await consume_all(kafka_bootstrap, changelog_topic, expected=len(first), timeout=20)
        assert {r.key: r.value for r in changelog} == {k.encode(): v for k, v in first.items()}
        # the changelog partition is the source event's partition, which murmur2 of the same key bytes chose
        source_records = await consume_all(kafka_bootstrap, source, expected=len(first), timeout=20)
        assert {(r.key, r.partition) for r in changelog} == {(r.key, r.partition) for r in source_records}

        app2, table2, seen2 = make_app(app_id, kafka_bootstrap, tmp_path, source)
        async with running_app(app2):
            assert dict(table2.items()) == first
            await produce(kafka_bootstrap, source, [(k.encode(), v) for k, v in later.items()])
            await wait_for(lambda: dict(table2.items()) == first | later, 30, message="the later event")
        # offsets were committed on stop: the restarted app did not process the first events again
        assert sorted(seen) == sorted(first)
        assert seen2 == list(later)

    asyncio.run(scenario())


def test_second_start_on_running_run_dir_fails(local_kafka: BrokerInfo | None, tmp_path: Path) -> None:
    """Starting a broker in a run dir whose broker is alive raises BrokerError: "already running"."""
    if local_kafka is not None:
        run_dir = local_kafka.run_dir
    else:
        # External broker: fake a live one with this process's pid; the check happens before any start-up.
        run_dir = tmp_path
        (run_dir / "broker.pid").write_text(f"{os.getpid()} 127.0.0.1:1\n")
    with pytest.raises(BrokerError, match="already running"):
        LocalKafka(run_dir).start(progress=False)


def test_restart_on_same_run_dir_keeps_data(tmp_path: Path) -> None:
    """A broker stopped and started again on its run dir comes back with the records written before."""
    broker = LocalKafka(tmp_path / "kafka")
    topic = unique("restart")
    try:
        asyncio.run(produce(broker.start(progress=False).bootstrap, topic, [(b"k", b"kept")]))
        broker.stop()
        bootstrap = broker.start(progress=False).bootstrap
        records = asyncio.run(consume_all(bootstrap, topic, expected=1, timeout=30))
        assert [r.value for r in records] == [b"kept"]
    finally:
        broker.stop()
