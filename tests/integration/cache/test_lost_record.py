"""A record the cache agent's stream lost (Faust drops a record it fetched for a partition it had paused
during a rebalance, and never acks it) is read again, not committed past: Faust alone commits past a
single such record at the committed offset, and the IP behind it would never get an entry."""

from __future__ import annotations

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


async def test_a_record_lost_after_a_commit_is_read_again_and_its_ip_gets_an_entry(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten first sights are applied and committed; of the next twenty, the first never reaches the agent
    and is never acked (as Faust's drop leaves it): the worker still creates and publishes an entry for
    all thirty IPs and commits the whole partition."""
    settings = make_settings(kafka_bootstrap, tmp_path / "w", partitions=1)
    ips = public_ips(30, seed=97)
    lost_ip = ips[10].encode()
    now = time.time()
    geo = build(settings)
    handle_batch, dropped = geo.cache.handle_batch, []

    async def drop_once(events: Sequence[Any]) -> None:
        lost = [e for e in events if e.key == lost_ip and not dropped]
        if lost:
            dropped.append(lost[0].message.offset)
            lost[0].message.acked = True  # as Faust's drop leaves it: never acked (the buffer's ack: a no-op)
        await handle_batch([e for e in events if e not in lost])

    monkeypatch.setattr(geo.cache, "handle_batch", drop_once)
    tp = TopicPartition(settings.seen_topic, 0)
    seen = [(ip.encode(), encode_seen(now, "w")) for ip in ips]
    async with running(geo), Outputs(settings) as out:
        await produce(kafka_bootstrap, settings.seen_topic, seen[:10])

        async def committed_at(offset: int) -> bool:
            return (await committed(kafka_bootstrap, settings.app_id, [tp])).get(tp) == offset

        await wait_for(lambda: committed_at(10), 60, interval=0.2, message="the first ten committed")
        await produce(kafka_bootstrap, settings.seen_topic, seen[10:])

        async def all_published() -> bool:
            await out.poll()
            return all(ip in out.resolved for ip in ips)

        await wait_for(all_published, 60, interval=0.1, message=lambda: f"{len(out.resolved)} published")
        await wait_for(lambda: committed_at(30), 60, interval=0.2, message="the partition committed")
    assert dropped == [10]
