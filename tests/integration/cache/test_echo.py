"""The table's owner answers a first sight of an IP it already knows by publishing the entry again, at most
once per ECHO_EVERY per IP, so no worker keeps a provisional entry for a known IP."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipeline.app import build, ensure_topics, running
from pipeline.devtools.workloads import public_ips, publish
from pipeline.kafka.partitioner import key_hash
from pipeline.messages import encode_seen
from tests.support.kafka import produce, wait_for
from tests.support.pipeline import Outputs, make_settings, read_topic

pytestmark = pytest.mark.integration


async def records_of(bootstrap: str, topic: str, ip: str) -> int:
    return sum(record.key == ip.encode() for record in await read_topic(bootstrap, topic))


async def test_a_first_sight_of_a_known_ip_is_echoed_once_and_a_touch_is_not(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Two first-sight records and a touch for a known IP yield exactly one more resolved record for it,
    while a new IP on the same partition, sent after them, gets its entry as usual."""
    settings = make_settings(kafka_bootstrap, tmp_path / "w")
    known, *others = public_ips(50, seed=77)
    partition = key_hash(known.encode()) % settings.partitions  # the newcomer shares it: order holds
    newcomer = next(ip for ip in others if key_hash(ip.encode()) % settings.partitions == partition)
    geo = build(settings)
    await ensure_topics(settings)  # before Outputs subscribes: an auto-created topic breaks the contract
    async with running(geo), Outputs(settings) as out:
        await publish(kafka_bootstrap, settings.events_topic, [json.dumps({"ip": known}).encode()])

        async def settled() -> bool:
            await out.poll()
            return out.resolved.get(known, {}).get("status") not in (None, "pending")

        await wait_for(settled, 60, interval=0.1, message=lambda: f"{out.resolved.get(known)}")
        before = await records_of(kafka_bootstrap, settings.resolved_topic, known)
        now = time.time()
        seen = [
            (known.encode(), encode_seen(now, "lagging-worker", first=True)),
            (known.encode(), encode_seen(now, "another-lagging-worker", first=True)),
            (known.encode(), encode_seen(now, "a-worker-that-has-it", first=False)),
            (newcomer.encode(), encode_seen(now, "lagging-worker", first=True)),
        ]
        await produce(kafka_bootstrap, settings.seen_topic, seen)  # murmur2: the same partition for both

        async def newcomer_published() -> bool:
            await out.poll()
            return newcomer in out.resolved

        await wait_for(newcomer_published, 60, interval=0.1, message=lambda: f"{out.statuses()}")
        after = await records_of(kafka_bootstrap, settings.resolved_topic, known)
    assert after - before == 1  # one echo for two first sights (and none for the touch)
    assert geo.stats.echoed == 1
