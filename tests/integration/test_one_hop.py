"""One hop on the real broker: every event is enriched where it is consumed, with the offline country at
once; only IPs, never events, travel to the table's owner; per-IP order survives."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import iptocc
import pytest

from pipeline.addresses import AddressKind, classify
from pipeline.app import build, ensure_topics, running
from pipeline.devtools.workloads import mixed_ips, publish
from pipeline.messages import decode_seen
from tests.support.kafka import wait_for
from tests.support.pipeline import CountingProvider, Outputs, make_settings, read_topic

pytestmark = pytest.mark.integration


async def test_a_cold_backlog_is_enriched_once_each_with_the_offline_country_and_only_ips_travel(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """3,000 events over 300 IPs waiting before a cold worker starts: each is enriched exactly once, every
    event of an IP the offline data knows carries its country from the first one on (pending, provider
    "offline", until the remote answer), each IP goes to the owner as one small seen record, and the
    events of one IP leave in their input-partition order."""
    settings = make_settings(kafka_bootstrap, tmp_path / "w")
    ips = mixed_ips(300, seed=31)
    events = [json.dumps({"ip": ips[i % len(ips)], "seq": i}).encode() for i in range(3_000)]
    geo = build(settings, providers=[CountingProvider()])
    # the backlog is in place before the worker starts, all on partition 0, so input order is defined
    await ensure_topics(settings)
    await publish(kafka_bootstrap, settings.events_topic, events, partition=0)
    async with running(geo), Outputs(settings) as out:

        async def drained() -> bool:
            await out.poll()
            return len(out.enriched) >= len(events)

        await wait_for(drained, 120, interval=0.05, message=lambda: f"enriched {len(out.enriched)}")
        enriched = await read_topic(kafka_bootstrap, settings.enriched_topic)
        seen = await read_topic(kafka_bootstrap, settings.seen_topic)
    docs = [json.loads(r.value) for r in enriched]
    assert sorted(d["event"]["seq"] for d in docs) == list(range(len(events)))  # each exactly once
    knows = {ip: bool(iptocc.country_code(ip)) for ip in set(ips) if classify(ip) is AddressKind.GLOBAL}
    for doc in docs:
        if knows.get(doc["ip"]):
            assert doc["geo"]["country_code"], f"no country on {doc}"
        if doc["geo"]["status"] == "pending":
            assert doc["geo"]["source"] == ("offline" if knows.get(doc["ip"]) else None)
    # only IPs travel: one small record per distinct IP, carrying no event data
    distinct = {doc["ip"] for doc in docs}
    assert sorted(r.key.decode() for r in seen) == sorted(distinct)
    assert all(decode_seen(r.value) is not None and len(r.value) < 120 for r in seen)
    # per IP, the enriched records keep the input order (all input came from one partition)
    by_ip: dict[str, list[int]] = defaultdict(list)
    for record in sorted(enriched, key=lambda r: (r.partition, r.offset)):
        doc = json.loads(record.value)
        by_ip[doc["ip"]].append(doc["event"]["seq"])
    assert all(seqs == sorted(seqs) for seqs in by_ip.values())
    assert geo.stats.new == len(distinct) and geo.stats.hits == len(events) - len(distinct)
