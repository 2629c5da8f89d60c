"""The hot path on the real broker: a batch whose delivery fails is replayed, never skipped."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from pipeline.app import build, running
from tests.support.kafka import wait_for
from tests.support.pipeline import CountingProvider, Outputs, make_settings, publish

pytestmark = pytest.mark.integration


async def test_a_batch_that_fails_delivery_is_replayed_and_nothing_is_lost(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Failed deliveries in the middle of the stream: the batch is replayed, so every event still comes
    out (at least once: the replay may repeat some), the DLQ holds each bad input, failures are counted."""
    settings = make_settings(kafka_bootstrap, tmp_path / "w")
    geo = build(settings, providers=[CountingProvider()])
    events = [json.dumps({"ip": f"8.8.{i % 50}.{i % 7 + 1}", "seq": i}).encode() for i in range(2_000)]
    events += [b"not-an-ip"] * 20
    async with running(geo), Outputs(settings) as out:
        producer = geo.hotpath._producer
        real_send = producer.send
        calls = 0

        async def flaky_send(topic: str, value: bytes, **kwargs: Any) -> asyncio.Future[Any]:
            nonlocal calls
            calls += 1
            if calls in (300, 301, 900):
                failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                failed.set_exception(KafkaTimeoutError())
                return failed
            return await real_send(topic, value, **kwargs)

        producer.send = flaky_send
        await publish(kafka_bootstrap, settings.events_topic, events)

        def distinct() -> set[int]:
            return {int(e["event"]["seq"]) for e in out.enriched}

        async def all_out() -> bool:
            await out.poll()
            return len(distinct()) == 2_000 and len(out.dlq) >= 20

        await wait_for(all_out, 60, interval=0.05, message=lambda: f"distinct enriched {len(distinct())}")
    assert geo.stats.errors >= 1  # 300 and 301 fail their batch; 900 may fall in the same one
    assert len({(d["partition"], d["offset"]) for d in out.dlq}) == 20
    assert geo.stats.consumed >= len(events)
