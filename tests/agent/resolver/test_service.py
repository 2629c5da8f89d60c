"""The resolver's loop with in-memory clients and a fake clock: it never waits on a provider it cannot ask,
never waits for the budget with nothing to ask, and writes what it asks before asking."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError

from pipeline.config.settings import Settings
from pipeline.messages import (
    Asked,
    ResolveRequest,
    decode_asked,
    decode_results_message,
    encode_resolve_request,
)
from pipeline.models import GeoData, LookupResult, Resolved, TransientFailure
from pipeline.providers.base import ProviderChain
from pipeline.providers.throttle import Breaker, ResolveBudget
from pipeline.resolver.service import Resolver
from pipeline.stats import Stats
from tests.support.fakes import FakeConsumer, FakeProducer, records

SETTINGS = Settings.from_env({}, app_id="a", partitions=4, resolve_batch_wait=0.05)
IPS = ["8.8.8.8", "1.1.1.1", "9.9.9.9"]
US = GeoData(country_code="US")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Remote:
    """A remote provider that answers everything and counts its calls."""

    name = "ipapi"
    max_batch = 100

    def __init__(self, budget: ResolveBudget) -> None:
        self.budget = budget
        self.calls: list[list[str]] = []

    async def resolve(self, ips: Sequence[str]) -> dict[str, LookupResult]:
        self.budget.on_sent()
        self.budget.on_response(200, None, None)
        self.calls.append(list(ips))
        return {ip: Resolved(US, self.name) for ip in ips}


class Offline:
    name = "offline"
    max_batch = 1000

    async def resolve(self, ips: Sequence[str]) -> dict[str, LookupResult]:
        return {ip: Resolved(GeoData(country_code="DE"), self.name) for ip in ips}


def resolver(attempt: int = 1) -> tuple[Resolver, FakeConsumer, FakeProducer, Remote]:
    requests = [encode_resolve_request(ResolveRequest(ip, attempt, "w")) for ip in IPS]
    consumer = FakeConsumer([records(SETTINGS.resolve_topic, 0, list(requests))])
    producer = FakeProducer({SETTINGS.results_topic: 4, SETTINGS.asked_topic: 1})
    service = Resolver(SETTINGS, Stats())
    budget = ResolveBudget(Clock(), limit=15, window=60.0, breaker_threshold=2)
    remote = Remote(budget)
    service.chain, service.budget = ProviderChain([remote, Offline()]), budget
    service._consumer, service._producer = consumer, producer  # type: ignore[assignment]
    return service, consumer, producer, remote


def results(producer: FakeProducer) -> dict[str, object]:
    out = {}
    for topic, key, value in producer.singles:
        if topic == SETTINGS.results_topic and key is not None:
            out[key.decode()] = decode_results_message(value)
    return out


async def test_asks_are_written_before_the_call_and_marked_answered_after() -> None:
    """A normal batch: an asked record per IP, the fence (the batch's start position committed) before one
    call, a result per IP, answered records, the commit of its end."""
    service, consumer, producer, remote = resolver()
    await asyncio.wait_for(service.run_once(), 5)
    asked = [decode_asked(v) for t, _, v in producer.singles if t == SETTINGS.asked_topic]
    assert [a.answered for a in asked if a] == [False] * 3 + [True] * 3
    assert remote.calls == [sorted(IPS, key=IPS.index)]
    assert {ip: r.result for ip, r in results(producer).items()} == {ip: Resolved(US, "ipapi") for ip in IPS}  # type: ignore[attr-defined]
    assert consumer.committed == [{TopicPartition(SETTINGS.resolve_topic, 0): 0}]  # the fence: its start
    assert consumer.commits == 2


async def test_a_resolver_whose_generation_is_stale_asks_nothing() -> None:
    """The group moved on while the resolver held its batch (frozen past its session): the fence's commit
    fails, so the API is not called, no result is sent, and the batch is rewound for the next owner."""
    service, consumer, producer, remote = resolver()
    consumer.stale = True
    await asyncio.wait_for(service.run_once(), 5)
    assert remote.calls == []
    assert results(producer) == {}
    assert service.budget is not None and service.budget.snapshot().sent == 0
    assert consumer.seeks == [(TopicPartition(SETTINGS.resolve_topic, 0), 0)]


async def test_an_owner_with_a_clock_ahead_has_its_requests_counted_from_now(monkeypatch: Any) -> None:
    """On an asked log without the broker's stamps (CreateTime), a previous owner's requests written 30 s
    after this worker's clock count each as sent now: a budget of 2 is full at once, not empty."""
    service, _, _, _ = resolver()
    budget = ResolveBudget(asyncio.get_running_loop().time, limit=2, window=60.0)
    service.budget = budget
    later = round(time.time() + 30, 3)
    theirs = [("5.5.5.5", Asked(1, later)), ("6.6.6.6", Asked(1, later + 0.5, answered=True))]

    async def read_back(settings: Settings, partitions: frozenset[int], *, since: float) -> Any:
        return theirs, {}

    monkeypatch.setattr("pipeline.resolver.service.read_asked", read_back)
    service.to_load = frozenset({0})
    await service._load_asked()
    assert budget.sent_in_window == 2
    assert budget.delay() > 59.0


async def test_an_empty_assignment_loads_nothing_and_keeps_the_budget_open() -> None:
    """A rebalance that leaves the resolver no partition reads no asked log and does not assume a full
    window (it used to fail on the empty set and wait one out), and forgets the asks it remembered."""
    service, _, _, _ = resolver()
    service.asked.record("5.5.5.5", 1, time.time(), answered=True)
    service.to_load = frozenset()
    await service._load_asked()
    assert service.budget is not None and service.budget.delay() == 0.0
    assert service.to_load is None
    assert len(service.asked) == 0


async def test_request_ages_are_measured_on_the_brokers_clock(monkeypatch: Any) -> None:
    """With the broker's append times, a request counts from when it left by the broker's clock, whatever
    the writer's and this worker's clocks say: one written 40 s in our past (its writer's clock runs
    behind, or ours ahead) but appended 5 s ago still fills the window until 55 s from now."""
    service, _, producer, _ = resolver()
    producer.broker_ahead = 100.0  # the broker's clock is off too: only its own differences count
    budget = ResolveBudget(asyncio.get_running_loop().time, limit=1, window=60.0, slack=0.0)
    service.budget = budget
    written = round(time.time() - 40, 3)
    appended = time.time() + 100.0 - 5  # 5 s ago on the broker's clock

    async def read_back(settings: Settings, partitions: frozenset[int], *, since: float) -> Any:
        return [("5.5.5.5", Asked(1, written))], {written: appended}

    monkeypatch.setattr("pipeline.resolver.service.read_asked", read_back)
    service.to_load = frozenset({0})
    await service._load_asked()
    assert budget.sent_in_window == 1
    assert 54.0 < budget.delay() <= 55.5


async def test_a_batch_of_duplicates_commits_without_waiting_for_the_budget() -> None:
    """Requests the asked log already answered are dropped and committed at once, even while the budget
    would make an ask wait most of a minute."""
    service, consumer, producer, remote = resolver()
    for ip in IPS:
        service.asked.record(ip, 1, time.time(), answered=True)
    assert service.budget is not None
    service.budget.note_sends([service.budget._clock()] * 15)  # the window is spent
    assert service.budget.delay() > 50
    await asyncio.wait_for(service.run_once(), 2)
    assert consumer.commits == 1 and remote.calls == [] and producer.singles == []
    assert service.stats.resolve_deduped == 3


async def test_while_the_breaker_is_open_requests_are_answered_from_the_offline_data_at_once() -> None:
    """With the remote's breaker open the batch is answered at once from the fallback (not asked, so no
    asked records and no back-off growth), and committed: nothing waits minutes holding requests."""
    service, consumer, producer, remote = resolver()
    assert service.budget is not None
    for _ in range(2):
        service.budget.on_sent()
        service.budget.on_response(503, None, None)
    assert service.budget.breaker is Breaker.OPEN
    await asyncio.wait_for(service.run_once(), 2)
    assert remote.calls == [] and consumer.commits == 1
    answers = results(producer)
    assert set(answers) == set(IPS)
    for message in answers.values():
        result = message.result  # type: ignore[attr-defined]
        assert (
            isinstance(result, TransientFailure)
            and not result.asked
            and result.geo == GeoData(country_code="DE")
        )
    assert not [t for t, _, _ in producer.singles if t == SETTINGS.asked_topic]
    assert service.stats.fallback_answers == 3


async def test_a_stop_while_waiting_for_the_budget_abandons_the_batch_for_its_next_owner() -> None:
    """Stopping during a budget wait gives the batch up at once: nothing asked, nothing committed, the
    consumer rewound to the batch's first offset (its next owner reads it)."""
    service, consumer, producer, remote = resolver()
    assert service.budget is not None
    service.budget.note_sends([service.budget._clock()] * 15)
    running = asyncio.ensure_future(service.run_once())
    await asyncio.sleep(0.2)
    service._stopping.set()
    await asyncio.wait_for(running, 2)
    assert remote.calls == [] and consumer.commits == 0 and producer.singles == []
    assert consumer.seeks and consumer.seeks[0][1] == 0


async def test_malformed_requests_are_skipped_and_counted_without_dropping_the_rest() -> None:
    """A request that does not parse is skipped with a counter; the good ones in its batch are resolved."""
    service, consumer, producer, _ = resolver()
    consumer.batches[0][next(iter(consumer.batches[0]))][1].value = b"{not json"
    await asyncio.wait_for(service.run_once(), 5)
    assert service.stats.malformed == 1
    assert set(results(producer)) == {"8.8.8.8", "9.9.9.9"}


async def test_an_assignment_seeds_the_budget_with_the_requests_of_others_only(monkeypatch: Any) -> None:
    """Reading the asked log back after an assignment counts another worker's request of the window once
    and this resolver's own (already in its budget) not again, so keeping the partition costs no wait."""
    service, _, producer, _ = resolver()
    budget = ResolveBudget(asyncio.get_running_loop().time, limit=15, window=60.0)
    service.chain = ProviderChain([Remote(budget), Offline()])
    service.budget = budget
    await asyncio.wait_for(service.run_once(), 5)  # our request: asks and answers in the asked log
    assert budget.sent_in_window == 1
    written = [
        (k.decode(), decode_asked(v)) for t, k, v in producer.singles if t == SETTINGS.asked_topic and k
    ]
    theirs = ("5.5.5.5", Asked(1, round(time.time() - 5, 3), answered=True))

    async def read_back(settings: Settings, partitions: frozenset[int], *, since: float) -> Any:
        return [*written, theirs], {}

    monkeypatch.setattr("pipeline.resolver.service.read_asked", read_back)
    service.to_load = frozenset({0})  # the rebalance gave us the partition again
    await service._load_asked()
    assert budget.sent_in_window == 2  # ours once, theirs once


async def test_a_batch_that_fails_midway_is_rewound_and_read_again() -> None:
    """A batch that fails before the call (its asked records are refused by the broker) is rewound to its
    first offset, so the next batch is the same requests again, asked at once, instead of skipped (they
    would wait out a pending timeout and the timer's re-emission)."""
    failing = [True]

    def fail(topic: str) -> Exception | None:
        return KafkaTimeoutError() if topic == SETTINGS.asked_topic and failing[0] else None

    service, consumer, _, remote = resolver()
    producer = FakeProducer({SETTINGS.results_topic: 4, SETTINGS.asked_topic: 1}, fail)
    service._producer = producer  # type: ignore[assignment]
    with pytest.raises(KafkaTimeoutError):
        await asyncio.wait_for(service.run_once(), 5)
    assert remote.calls == [] and results(producer) == {}
    assert consumer.seeks == [(TopicPartition(SETTINGS.resolve_topic, 0), 0)]
    failing[0] = False
    await asyncio.wait_for(service.run_once(), 5)
    assert set(results(producer)) == set(IPS)
    assert remote.calls == [IPS]


async def test_with_only_in_process_providers_answers_leave_nothing_in_memory() -> None:
    """With no remote in the chain (no budget to protect), a batch is answered and committed and the
    asked log holds nothing afterwards: a million first sights through the offline data keep no
    per-IP memory in the resolver."""
    service, consumer, producer, _ = resolver()
    service.chain, service.budget = ProviderChain([Offline()]), None
    await asyncio.wait_for(service.run_once(), 2)
    assert set(results(producer)) == set(IPS) and consumer.commits >= 1
    assert len(service.asked) == 0
    assert not [t for t, _, _ in producer.singles if t == SETTINGS.asked_topic]
