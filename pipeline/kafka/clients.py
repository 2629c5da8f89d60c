"""The small Kafka clients and the read-to-the-end loop that the resolver, the asked log and the operator
CLI share; every client is built with `client_kwargs(settings)`, so all of them work on secured clusters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.config.settings import Settings
from pipeline.kafka.config import client_kwargs


def producer(settings: Settings) -> AIOKafkaProducer:
    """A producer whose records every replica has acked (a few ms of batching)."""
    return AIOKafkaProducer(**client_kwargs(settings), acks="all", linger_ms=5)


def follower(settings: Settings) -> AIOKafkaConsumer:
    """A group-less consumer: it never joins (and so never rebalances) a group and never commits."""
    return AIOKafkaConsumer(**client_kwargs(settings), group_id=None, enable_auto_commit=False)


async def read_to_end(
    consumer: AIOKafkaConsumer,
    tps: Sequence[TopicPartition],
    ends: Mapping[TopicPartition, int],
    on_record: Callable[[Any], None],
    *,
    what: str,
    timeout: float,
    poll_ms: int = 500,
) -> None:
    """Hand every record of `tps` from the consumer's positions up to `ends` to `on_record`; TimeoutError
    naming `what` when that takes longer than `timeout` seconds."""
    deadline = time.monotonic() + timeout
    left = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
    while left:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not read to its end within {timeout:.0f}s")
        batch = await consumer.getmany(*left, timeout_ms=poll_ms)
        for records in batch.values():
            for record in records:
                on_record(record)
        left = [tp for tp in left if await consumer.position(tp) < ends[tp]]
