"""The hot path's loop with in-memory clients: routing to outputs, replays with a bound, and salvage of
records that can never be written (no broker: failures are injected exactly where they matter)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiokafka.errors import KafkaTimeoutError, TopicAuthorizationFailedError

from pipeline.config.settings import Settings
from pipeline.hotpath.outputs import PartitionCountChanged
from pipeline.hotpath.replica import Replica
from pipeline.hotpath.routing import NearCache, Router
from pipeline.hotpath.service import HotPath
from pipeline.kafka.partitioner import key_hash
from pipeline.models import EntryStatus, GeoEntry
from pipeline.stats import Stats
from tests.support.fakes import FakeConsumer, FakeProducer, records
from tests.support.kafka import wait_for

SETTINGS = Settings.from_env({}, app_id="a", partitions=4)
TOPICS = {SETTINGS.enriched_topic: 4, SETTINGS.seen_topic: 4, SETTINGS.dlq_topic: 4}
EVENTS = [b"8.8.8.8", b'{"ip":"8.8.8.8","n":1}', b"1.1.1.1", b"not-an-ip", b'{"ip":"::ffff:1.1.1.1"}']


def hotpath(consumer: FakeConsumer, producer: FakeProducer) -> HotPath:
    def provisional(ip: str, now: float) -> bytes:
        return GeoEntry(ip, EntryStatus.PENDING, first_seen=now).to_json()

    router = Router(NearCache(100), SETTINGS.max_event_bytes, provisional, key_hash, 600.0)
    service = HotPath(SETTINGS, Stats(), router, Replica(Path("unopened")))  # process() never reads it
    service._consumer, service._producer = consumer, producer  # type: ignore[assignment]
    service.caught_up.set()
    service.replay_delays = (0.0, 0.0, 0.0)
    return service


async def test_a_batch_is_routed_delivered_and_committed_once() -> None:
    """Valid events are enriched (each IP seen once), bad ones dead-lettered; one commit after delivery."""
    consumer, producer = FakeConsumer([records(SETTINGS.events_topic, 0, list(EVENTS))]), FakeProducer(TOPICS)
    service = hotpath(consumer, producer)
    await service.process(await consumer.getmany())
    assert producer.delivered == {SETTINGS.enriched_topic: 4, SETTINGS.seen_topic: 2, SETTINGS.dlq_topic: 1}
    assert consumer.commits == 1
    assert (service.stats.hits, service.stats.new, service.stats.dead_lettered) == (2, 2, 1)


async def test_a_retriable_failure_replays_the_batch_until_it_is_delivered() -> None:
    """A delivery that fails for a passing reason rewinds the batch and replays it; nothing is committed
    before it is delivered, and the replays are counted."""
    consumer = FakeConsumer([records(SETTINGS.events_topic, 0, list(EVENTS))])
    producer = FakeProducer(
        TOPICS,
        fail=lambda topic: (
            KafkaTimeoutError()
            if topic == SETTINGS.seen_topic and len(consumer.seeks) < 2  # the first two attempts fail
            else None
        ),
    )
    service = hotpath(consumer, producer)
    ingest = asyncio.ensure_future(service._ingest())
    try:
        await wait_for(lambda: consumer.commits == 1, 5, message="the batch committed")
    finally:
        ingest.cancel()
    assert service.stats.replays == 2 and consumer.commits == 1
    # the replay sends the IPs again: a failed attempt leaves no trace in the near cache
    assert producer.delivered[SETTINGS.seen_topic] == 2


async def test_a_batch_that_keeps_failing_stops_the_worker_with_a_clear_error_after_a_bounded_number() -> (
    None
):
    """A broker that never takes the batch makes the loop give up after its bounded replays, loudly,
    without ever committing past the batch."""
    consumer = FakeConsumer([records(SETTINGS.events_topic, 0, list(EVENTS))])
    producer = FakeProducer(TOPICS, fail=lambda topic: KafkaTimeoutError())
    service = hotpath(consumer, producer)
    with pytest.raises(RuntimeError, match="failed 4 times"):
        await service._ingest()
    assert consumer.commits == 0 and service.stats.replays == 3


async def test_records_refused_for_good_are_dead_lettered_and_the_batch_moves_on() -> None:
    """A topic that refuses the batch for good (not authorised): its records are tried one by one and each
    refused one goes to the dead-letter topic with the reason; the batch is committed, no replay loop."""
    consumer = FakeConsumer([records(SETTINGS.events_topic, 0, list(EVENTS))])
    producer = FakeProducer(
        TOPICS,
        fail=lambda topic: TopicAuthorizationFailedError() if topic == SETTINGS.enriched_topic else None,
    )
    service = hotpath(consumer, producer)
    await service.process(await consumer.getmany())
    letters = [json.loads(value) for topic, _, value in producer.singles if topic == SETTINGS.dlq_topic]
    assert len(letters) == 4 and consumer.commits == 1 and service.stats.replays == 0
    assert {letter["reason"] for letter in letters} == {
        f"could not write to {SETTINGS.enriched_topic}: TopicAuthorizationFailedError"
    }
    assert sorted(letter["offset"] for letter in letters) == [0, 1, 2, 4]


async def test_when_the_dead_letter_topic_refuses_too_the_loss_is_counted_and_the_batch_moves_on() -> None:
    """If even the dead-letter topic refuses a record, it is counted as an error (and logged with its
    coordinates) instead of blocking the partition forever."""
    consumer = FakeConsumer([records(SETTINGS.events_topic, 0, list(EVENTS))])
    producer = FakeProducer(
        TOPICS,
        fail=lambda topic: (
            TopicAuthorizationFailedError()
            if topic in (SETTINGS.enriched_topic, SETTINGS.dlq_topic)
            else None
        ),
    )
    service = hotpath(consumer, producer)
    await service.process(await consumer.getmany())
    assert consumer.commits == 1 and service.stats.errors == 5


async def test_a_topic_missing_from_the_metadata_is_waited_for_never_guessed() -> None:
    """aiokafka dropped the seen topic from its metadata (a topic-level error): the batch waits for the
    broker's answer, and every seen record goes to its key's partition, not to a guessed partition 0."""
    consumer, producer = FakeConsumer([records(SETTINGS.events_topic, 0, list(EVENTS))]), FakeProducer(TOPICS)
    producer.client.cluster.forgotten.add(SETTINGS.seen_topic)
    service = hotpath(consumer, producer)
    await service.process(await consumer.getmany())
    seen = {p: n for (t, p), n in producer.partitions_sent.items() if t == SETTINGS.seen_topic}
    wanted: dict[int, int] = {}
    for ip in (b"8.8.8.8", b"1.1.1.1"):
        wanted[key_hash(ip) % 4] = wanted.get(key_hash(ip) % 4, 0) + 1
    assert seen == wanted and set(wanted) != {0}
    assert consumer.commits == 1


async def test_a_seen_topic_whose_partition_count_changed_stops_the_worker_with_the_reason() -> None:
    """The seen topic no longer has the count the table was checked with at start: the batch is neither
    delivered nor committed, and the error names the topic and both counts."""
    consumer = FakeConsumer([records(SETTINGS.events_topic, 0, list(EVENTS))])
    producer = FakeProducer({**TOPICS, SETTINGS.seen_topic: 6})
    service = hotpath(consumer, producer)
    with pytest.raises(PartitionCountChanged, match=f"{SETTINGS.seen_topic} has 6 partitions, the table 4"):
        await service.process(await consumer.getmany())
    assert consumer.commits == 0 and not producer.delivered


async def test_every_new_ip_of_an_event_goes_to_the_owner_once_and_the_event_out_once() -> None:
    """Two IP fields: one enriched record per event, one seen record per new IP (an IP in both fields
    once), the failed field counted, nothing dead-lettered while one field holds an IP."""
    settings = Settings.from_env({}, app_id="a", partitions=4, ip_fields=("source.ip", "destination.ip"))
    events = [
        b'{"source":{"ip":"8.8.8.8"},"destination":{"ip":"1.1.1.1:443"}}',
        b'{"source":{"ip":"8.8.8.8"},"destination":{"ip":"8.8.8.8"}}',
        b'{"source":{"ip":"9.9.9.9"},"destination":{"ip":"nope"}}',
        b'{"source":{"ip":"nope"}}',
    ]
    consumer, producer = FakeConsumer([records(settings.events_topic, 0, events)]), FakeProducer(TOPICS)

    def provisional(ip: str, now: float) -> bytes:
        return GeoEntry(ip, EntryStatus.PENDING, first_seen=now).to_json()

    router = Router(
        NearCache(100),
        settings.max_event_bytes,
        provisional,
        key_hash,
        600.0,
        fields=settings.ip_fields,
        key_mode=settings.enriched_key_mode,
    )
    service = HotPath(settings, Stats(), router, Replica(Path("unopened")))
    service._consumer, service._producer = consumer, producer  # type: ignore[assignment]
    await service.process(await consumer.getmany())
    assert producer.delivered == {settings.enriched_topic: 3, settings.seen_topic: 3, settings.dlq_topic: 1}
    stats = service.stats  # event 2 has 8.8.8.8 twice: one lookup, one hit
    assert (stats.enriched, stats.new, stats.hits, stats.dead_lettered) == (3, 3, 1, 1)
    assert stats.fields_failed == {"invalid_ip": 1}
