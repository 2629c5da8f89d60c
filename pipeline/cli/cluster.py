"""Talking to a running pipeline from outside: find its workers, ask their API, read its topics.

Workers are found without any registry of our own: every worker is a member of the Faust consumer group
named after the app (GEO_APP_ID), and Faust's assignor puts each member's URL (its `canonical_url`, our
GEO_ADVERTISED_URL) into the member metadata it sends to the group coordinator. `worker_urls` reads those
URLs back (pipeline/kafka/group.py). Every Kafka client here is built with `client_kwargs(settings)`, so the
CLI works against secured clusters like the workers do.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import aiohttp
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from pipeline.cli.present import Samples
from pipeline.config.settings import Settings
from pipeline.kafka.clients import follower, read_to_end
from pipeline.kafka.group import member_urls
from pipeline.kafka.partitioner import key_hash

HTTP_TIMEOUT = 5.0  # seconds per request to a worker
READ_TIMEOUT = 60.0  # seconds to read the resolved topic's partitions to their end
DISCOVERY_WAIT = 10.0  # seconds `worker_urls` waits for a rebalancing group to settle


async def worker_urls(settings: Settings) -> list[str]:
    """The URLs of the workers currently in the app's group, sorted (empty when none is up); during a
    rebalance this waits for the group to settle, DISCOVERY_WAIT seconds at most."""
    return sorted(set(await member_urls(settings, wait=DISCOVERY_WAIT)))


async def ask(session: aiohttp.ClientSession, base: str, path: str) -> tuple[int, str]:
    """GET base/path: (status, body text); a worker that does not answer raises aiohttp.ClientError."""
    async with session.get(URL(base.rstrip("/") + path)) as reply:
        return reply.status, await reply.text()


async def lookup(urls: Sequence[str], ips: Iterable[str]) -> list[tuple[int, dict[str, Any]]]:
    """Ask the workers' API for each IP (the first worker that answers; it forwards to the owner)."""
    answers: list[tuple[int, dict[str, Any]]] = []
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for ip in ips:
            errors = []
            for base in urls:
                try:
                    status, text = await ask(session, base, f"/geo/{ip}")
                    answers.append((status, json.loads(text)))
                    break
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    errors.append(f"{base}: {type(exc).__name__}")
            else:
                answers.append((0, {"ip": ip, "error": "no worker answered: " + "; ".join(errors)}))
    return answers


async def scrape(urls: Sequence[str]) -> dict[str, Samples | None]:
    """Each worker's /metrics as {sample name: [(labels, value)]}; None for a worker that did not answer."""
    found: dict[str, Samples | None] = {}
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for base in urls:
            try:
                status, text = await ask(session, base, "/metrics")
            except (aiohttp.ClientError, TimeoutError):
                found[base] = None
                continue
            found[base] = parse_metrics(text) if status == 200 else None
    return found


def parse_metrics(text: str) -> Samples:
    samples: dict[str, list[tuple[Mapping[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples


async def read_resolved(settings: Settings, ips: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    """The latest entry of each IP on the resolved topic (compacted, key = IP), read to its current end;
    None for an IP it does not hold. Only the partitions of the IPs asked for are read."""
    consumer = follower(settings)
    latest: dict[str, dict[str, Any] | None] = dict.fromkeys(ips)
    keys = {ip.encode(): ip for ip in ips}

    def keep(record: Any) -> None:
        if record.key in keys:
            latest[keys[record.key]] = json.loads(record.value) if record.value else None

    try:
        await consumer.start()  # inside the try: a start cut short still closes the client
        parts = consumer.partitions_for_topic(settings.resolved_topic)
        if not parts:
            await consumer._client.force_metadata_update()  # a topic not asked for yet has no metadata
            parts = consumer.partitions_for_topic(settings.resolved_topic) or set()
        if not parts:
            return latest
        tps = sorted({TopicPartition(settings.resolved_topic, key_hash(k) % len(parts)) for k in keys})
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        await read_to_end(
            consumer, tps, ends, keep, what=settings.resolved_topic, timeout=READ_TIMEOUT, poll_ms=1000
        )
    finally:
        await consumer.stop()
    return latest
