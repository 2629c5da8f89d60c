"""The hot path on the real broker when aiokafka's metadata loses a topic for a moment (as after a
topic-level error): the seen records of new IPs still reach their own table partition."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.app import build, running
from pipeline.devtools.workloads import public_ips
from tests.support.pipeline import Outputs, make_settings, publish_values, wait_all

pytestmark = pytest.mark.integration


async def test_new_ips_resolve_after_the_seen_topic_drops_out_of_the_producers_metadata(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The seen topic is dropped from the hot path producer's metadata before a batch of new IPs: the batch
    waits for the broker's metadata instead of guessing one partition, so every IP ends resolved (none
    left pending in a table partition its results never reach)."""
    settings = make_settings(kafka_bootstrap, tmp_path / "w", providers=("offline",))
    warm, fresh = public_ips(10, seed=81), public_ips(40, seed=82)
    geo = build(settings)
    async with running(geo), Outputs(settings) as out:
        await publish_values(
            kafka_bootstrap, settings.events_topic, [json.dumps({"ip": ip}).encode() for ip in warm]
        )
        await wait_all(out, warm, lambda e: e["status"] == "resolved", 60, "warm-up resolved")
        producer = geo.hotpath._producer
        assert producer is not None
        cluster = producer.client.cluster
        cluster._partitions.pop(settings.seen_topic, None)  # what aiokafka does after a topic-level error
        assert cluster.partitions_for_topic(settings.seen_topic) is None
        await publish_values(
            kafka_bootstrap, settings.events_topic, [json.dumps({"ip": ip}).encode() for ip in fresh]
        )
        await wait_all(out, fresh, lambda e: e["status"] == "resolved", 30, "new IPs resolved")
    print(f"\nmetadata dropped: {len(fresh)} new IPs resolved; {geo.stats.line()}")
