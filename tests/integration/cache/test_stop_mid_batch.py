"""A cache agent cancelled while it holds a batch (a stop that stopped waiting, a crash) commits none of
that batch: Faust's take buffer acks a batch's events when its generator is closed, whatever happened to
them, and the stop commits every acked offset; the batch must be replayed by the next start instead."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from pipeline.app import build, running
from pipeline.devtools.workloads import public_ips
from pipeline.messages import encode_seen
from tests.support.chaos import committed
from tests.support.kafka import produce, wait_for
from tests.support.pipeline import Outputs, make_settings

pytestmark = pytest.mark.integration


async def test_batches_cancelled_in_hand_are_not_committed_and_are_applied_after_the_restart(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every batch of first sights the agent takes is cancelled before it is applied (Faust restarts the
    agent in between), then the worker stops: the group's committed offset stays before the first of them,
    and the next start creates and publishes an entry for every IP."""
    settings = make_settings(kafka_bootstrap, tmp_path / "w", partitions=1)
    ips = public_ips(30, seed=93)
    now = time.time()
    geo = build(settings)
    held = asyncio.Event()

    async def hold(events: Sequence[Any]) -> None:  # cancelled mid-batch, as a crash does
        held.set()
        raise asyncio.CancelledError

    monkeypatch.setattr(geo.cache, "handle_batch", hold)
    async with running(geo):
        seen = [(ip.encode(), encode_seen(now, "w")) for ip in ips]
        # in one run of eight the first batch was not the whole partition, Faust restarted the agent twice,
        # and offset 3 was committed on this fresh partition: an offset past the unfinished batches was
        # acked (which one was not traced); withheld offsets are floors now (pipeline/kafka/commits.py)
        await produce(kafka_bootstrap, settings.seen_topic, seen)
        await asyncio.wait_for(held.wait(), 60)
    tp = TopicPartition(settings.seen_topic, 0)
    offsets = await committed(kafka_bootstrap, settings.app_id, [tp])
    assert offsets.get(tp, 0) == 0, "the held batch was committed"

    again = build(settings)
    async with running(again), Outputs(settings) as out:

        async def all_published() -> bool:
            await out.poll()
            return all(ip in out.resolved for ip in ips)

        await wait_for(all_published, 60, interval=0.1, message=lambda: f"{len(out.resolved)} published")
    assert again.cache.stats.entries_created == len(ips)
