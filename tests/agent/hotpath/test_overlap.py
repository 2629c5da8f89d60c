"""The hot path routes the next batch while the one before is delivered and committed: offsets are
committed in order, only after delivery (one commit for a batch and the one handed out behind it, at most
CARRY_MAX batches), a failure replays every batch not committed, and a revocation waits for all."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError

from pipeline.config.settings import Settings
from pipeline.hotpath.batch import CARRY_MAX, build
from pipeline.hotpath.replica import Replica
from pipeline.hotpath.routing import NearCache, Router
from pipeline.hotpath.service import UNSETTLED_MAX, HotPath, _WaitForBatch
from pipeline.kafka.partitioner import key_hash
from pipeline.models import EntryStatus, GeoEntry
from pipeline.stats import Stats
from tests.support.fakes import FakeConsumer, FakeProducer, records
from tests.support.kafka import wait_for

SETTINGS = Settings.from_env({}, app_id="a", partitions=4)
TOPICS = {SETTINGS.enriched_topic: 4, SETTINGS.seen_topic: 4, SETTINGS.dlq_topic: 4}
TP = TopicPartition(SETTINGS.events_topic, 0)
FIRST = [f"10.0.0.{i}".encode() for i in range(5)]  # offsets 0-4
SECOND = [f"10.0.1.{i}".encode() for i in range(5)]  # offsets 5-9: other IPs, so both batches have news


def two_batches() -> FakeConsumer:
    return FakeConsumer(
        [records(SETTINGS.events_topic, 0, list(FIRST)), records(SETTINGS.events_topic, 0, list(SECOND), 5)]
    )


def hotpath(consumer: FakeConsumer, producer: FakeProducer) -> HotPath:
    def provisional(ip: str, now: float) -> bytes:
        return GeoEntry(ip, EntryStatus.PENDING, first_seen=now).to_json()

    router = Router(NearCache(100), SETTINGS.max_event_bytes, provisional, key_hash, 600.0)
    service = HotPath(SETTINGS, Stats(), router, Replica(Path("unopened")))
    service._consumer, service._producer = consumer, producer  # type: ignore[assignment]
    service.caught_up.set()
    service.replay_delays = (0.0, 0.0, 0.0)
    return service


def sent(producer: FakeProducer, topic: str) -> int:
    return sum(n for (t, _), n in producer.partitions_sent.items() if t == topic)


async def test_the_next_batch_is_routed_while_the_one_before_is_still_being_delivered() -> None:
    """With the first batch's delivery unanswered the second is already routed and sent; nothing is
    committed until delivery, then one commit covers both (the first left its commit to the second)."""
    consumer, producer = two_batches(), FakeProducer(TOPICS)
    producer.held = True
    service = hotpath(consumer, producer)
    ingest = asyncio.ensure_future(service._ingest())
    try:
        await wait_for(lambda: sent(producer, SETTINGS.enriched_topic) == 10, 5, message="both routed")
        assert consumer.commits == 0 and service.stats.enriched == 0
        producer.release()
        await wait_for(lambda: consumer.committed[-1:] == [{TP: 10}], 5, message="both committed")
    finally:
        ingest.cancel()
    assert consumer.committed == [{TP: 10}]
    assert (service.stats.enriched, service.stats.new, service.stats.replays) == (10, 10, 0)


async def test_one_commit_covers_at_most_carry_max_batches() -> None:
    """Six batches each handed out before the one before was delivered: every second one commits for
    itself and the one before (a crash replays at most that many besides the unsettled ones); counted only
    once committed."""
    events = SETTINGS.events_topic
    consumer, producer = FakeConsumer([records(events, 0, [])]), FakeProducer(TOPICS)  # assigns TP
    service = hotpath(consumer, producer)
    builts = [
        await build(records(events, 0, [b"10.0.%d.1" % i] * 5, 5 * i), service.router, producer, SETTINGS)
        for i in range(6)
    ]
    for built, after in itertools.pairwise(builts):
        built.successor = after
    settling: list[asyncio.Future[None]] = []
    for built in builts:
        before = settling[-1] if settling else None
        settle = built.settle(consumer, service.stats, SETTINGS.dlq_topic, before)
        settling.append(asyncio.ensure_future(settle))
    await asyncio.gather(*settling)
    assert CARRY_MAX == 2 and consumer.committed == [{TP: 10}, {TP: 20}, {TP: 30}]
    assert [built.committed for built in builts] == [False, True, False, True, False, True]
    assert service.stats.enriched == 30


async def test_routing_runs_at_most_unsettled_max_batches_ahead_of_the_deliveries() -> None:
    """With no delivery answered, UNSETTLED_MAX + 1 batches are routed and sent and the next waits: what a
    crash can replay stays bounded (five batches with the one a commit carries)."""
    events = SETTINGS.events_topic
    batches = [records(events, 0, [b"10.0.%d.%d" % (i, j) for j in range(5)], 5 * i) for i in range(6)]
    consumer, producer = FakeConsumer(batches), FakeProducer(TOPICS)
    producer.held = True
    service = hotpath(consumer, producer)
    ingest = asyncio.ensure_future(service._ingest())
    try:
        routed = 5 * (UNSETTLED_MAX + 1)
        await wait_for(lambda: sent(producer, SETTINGS.enriched_topic) == routed, 5, message="routed ahead")
        for _ in range(20):  # the loop's turns: it is waiting on the held deliveries, not routing
            await asyncio.sleep(0)
        assert sent(producer, SETTINGS.enriched_topic) == routed and consumer.commits == 0
        producer.release()
        await wait_for(lambda: consumer.committed[-1:] == [{TP: 30}], 5, message="all committed")
    finally:
        ingest.cancel()
    assert service.stats.enriched == 30 and service.stats.replays == 0


async def test_a_failed_batch_replays_together_with_the_batch_routed_behind_it() -> None:
    """The first batch's delivery fails after the second was routed: neither commits, both are replayed
    from the first's offset, and the first sights of both are sent again (none is left a silent hit)."""
    consumer = two_batches()
    producer = FakeProducer(TOPICS, fail=lambda topic: KafkaTimeoutError() if not consumer.seeks else None)
    producer.held = True
    service = hotpath(consumer, producer)
    ingest = asyncio.ensure_future(service._ingest())
    try:
        await wait_for(lambda: sent(producer, SETTINGS.enriched_topic) == 10, 5, message="both routed")
        producer.release()
        await wait_for(lambda: consumer.committed[-1:] == [{TP: 10}], 5, message="committed after the replay")
    finally:
        ingest.cancel()
    assert consumer.seeks == [(TP, 0)]
    assert consumer.committed in ([{TP: 10}], [{TP: 5}, {TP: 10}])  # nothing before the replay
    assert producer.delivered[SETTINGS.seen_topic] == 10  # all ten IPs reached the owner on the replay
    assert producer.delivered[SETTINGS.enriched_topic] == 10 and service.stats.replays == 1


async def test_a_revocation_returns_only_once_every_routed_batch_is_committed() -> None:
    """A rebalance that starts while two batches are unsettled finds both committed when it goes on."""
    consumer, producer = two_batches(), FakeProducer(TOPICS)
    producer.held = True
    service = hotpath(consumer, producer)
    ingest = asyncio.ensure_future(service._ingest())
    listener = _WaitForBatch(service.lock, service.settled)

    async def revoke() -> list[dict[TopicPartition, int]]:
        await listener.on_partitions_revoked(set())
        return list(consumer.committed)

    try:
        await wait_for(lambda: sent(producer, SETTINGS.enriched_topic) == 10, 5, message="both routed")
        revocation = asyncio.ensure_future(revoke())
        await wait_for(lambda: producer.waiting > 0 and not revocation.done(), 5, message="revocation waits")
        producer.release()
        assert (await asyncio.wait_for(revocation, 5))[-1] == {TP: 10}
    finally:
        ingest.cancel()
