"""Shared pieces of the pipeline's integration tests: settings with unique names, a counting provider,
and a reader that follows the output topics."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from pipeline.config.settings import Settings
from pipeline.devtools.workloads import NON_GLOBAL_SAMPLES, mixed_events, mixed_ips, private_ips, public_ips
from pipeline.devtools.workloads import publish as publish_values
from pipeline.models import LookupResult
from pipeline.providers.base import OfflineProvider
from tests.support.kafka import unique, wait_for

WINDOW = 6.0  # seconds: a short fake-API window (15 requests per 6 s) keeps resolver tests near half a minute
INVALID_INPUTS = [b"999.1.1.1", b"example.com", b"1.2.3.4:80"]


def workload(n_events: int, n_ips: int, seed: int = 1) -> list[bytes]:
    """Events over `n_ips` addresses (about 4% private, 3% invalid), JSON and bare text mixed."""
    return mixed_events(n_events, mixed_ips(n_ips, seed))


def addresses(n_public: int, seed: int = 3) -> tuple[list[str], list[str], list[bytes]]:
    """Distinct public IPs (not all known to the offline data), non-global IPs, and invalid inputs."""
    public = public_ips(n_public, seed, offline_known=False)
    return public, private_ips(200) + list(NON_GLOBAL_SAMPLES), list(INVALID_INPUTS)


async def publish(bootstrap: str, topic: str, values: list[bytes], seed: int = 2) -> None:
    """Publish with mixed keys and explicit partitions, as producers with other partitioners would."""
    await publish_values(bootstrap, topic, values, mixed_keys=True, partitions=4, seed=seed)


def make_settings(bootstrap: str, data_dir: Path, *, app_id: str | None = None, **overrides: Any) -> Settings:
    """Settings whose app id and topic names no other test uses."""
    run = unique("t")
    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "app_id": app_id or f"geo-{run}",
        "data_dir": data_dir,
        "events_topic": f"events-{run}",
        "dlq_topic": f"dlq-{run}",
        "enriched_topic": f"enriched-{run}",
        "resolved_topic": f"resolved-{run}",
        "resolve_topic": f"resolve-{run}",
        "partitions": 4,
        "providers": ("offline",),
    }
    values.update(overrides)
    return Settings.from_env({}, **values)


def outage_settings(
    bootstrap: str, data_dir: Path, api_url: str, window: float, **overrides: Any
) -> Settings:
    """Settings for an API outage test: the fake ip-api with its short window, retries within seconds."""
    values: dict[str, Any] = {
        "providers": ("ipapi",),
        "ipapi_url": api_url,
        "budget_window": window,
        "retry_interval": 1.0,
        "retry_base": 2.0,
        "retry_cap": 8.0,
        **overrides,
    }
    return make_settings(bootstrap, data_dir, **values)


async def wait_all(
    out: Outputs, ips: Iterable[str], check: Callable[[dict[str, Any]], bool], timeout: float, what: str
) -> None:
    """Follow the outputs until every IP's latest resolved record passes `check` (missing ones fail)."""
    wanted = list(ips)

    async def done() -> bool:
        await out.poll()
        return all(ip in out.resolved and check(out.resolved[ip]) for ip in wanted)

    await wait_for(done, timeout, interval=0.2, message=lambda: f"{what}: {out.statuses()}")


class CountingProvider:
    """The offline provider, counting how often each IP was asked for (a test double for a paid API)."""

    name = "counting"
    max_batch = 100

    def __init__(self) -> None:
        self.inner = OfflineProvider()
        self.calls: Counter[str] = Counter()
        self.budget = None

    async def resolve(self, ips: Sequence[str]) -> dict[str, LookupResult]:
        self.calls.update(ips)
        return {ip: self.inner.lookup(ip) for ip in ips}


class Outputs:
    """Follows the enriched, dead-letter and resolved topics from the beginning."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.enriched: list[dict[str, Any]] = []
        self.dlq: list[dict[str, Any]] = []
        self.resolved: dict[str, dict[str, Any]] = {}
        self.resolved_count = 0
        self.tombstones: set[str] = set()
        self._consumer = AIOKafkaConsumer(
            settings.enriched_topic,
            settings.dlq_topic,
            settings.resolved_topic,
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
        )

    async def __aenter__(self) -> Outputs:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def poll(self) -> Outputs:
        batch = await self._consumer.getmany(timeout_ms=200, max_records=5000)
        for tp, records in batch.items():
            for record in records:
                if record.value is None:  # a tombstone on the resolved topic: the IP was forgotten
                    self.resolved.pop(record.key.decode(), None)
                    self.tombstones.add(record.key.decode())
                    continue
                value = json.loads(record.value)
                if tp.topic == self.settings.enriched_topic:
                    self.enriched.append(value)
                elif tp.topic == self.settings.dlq_topic:
                    self.dlq.append(value)
                else:
                    self.resolved[value["ip"]] = value
                    self.resolved_count += 1
        return self

    def statuses(self) -> Counter[str]:
        return Counter(entry["status"] for entry in self.resolved.values())


async def read_topic(bootstrap: str, topic: str, timeout: float = 30.0) -> list[ConsumerRecord]:
    """Every record of `topic` up to its current end, read with a group-less consumer."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        await consumer._client.force_metadata_update()  # a topic created by a worker needs fresh metadata
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning()
        ends = await consumer.end_offsets(tps)

        async def at_end() -> bool:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for part in batch.values():
                records.extend(part)
            return all([await consumer.position(tp) >= ends[tp] for tp in tps])

        await wait_for(at_end, timeout, interval=0, message=f"{topic} read to its end")
    finally:
        await consumer.stop()
    return records


def resolve_requests(records: list[ConsumerRecord]) -> list[dict[str, Any]]:
    """The resolve topic's requests ({"ip", "attempt", "by"}) in partition order."""
    return [json.loads(r.value) for r in records]
