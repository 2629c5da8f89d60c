"""The asked log's I/O: what the resolver asked of the API, read back by whoever owns a resolve partition.

The records themselves are `messages.Asked`; what they mean for the next ask is decided in `dedupe.py`.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import TopicPartition

from pipeline.config.settings import Settings
from pipeline.kafka.clients import follower, read_to_end
from pipeline.messages import Asked, decode_asked

log = logging.getLogger(__name__)

LOAD_TIMEOUT = 30.0  # seconds to read the asked log back; past it we assume a full window was spent
LOG_APPEND_TIME = 1  # a record's timestamp_type when the broker stamped it (the topic's LogAppendTime)
CLOCK_KEY = b"~clock"  # the tombstone a reader appends to learn the broker's time (compacted away)


async def read_asked(
    settings: Settings, partitions: frozenset[int], *, since: float
) -> tuple[list[tuple[str, Asked]], dict[float, float]]:
    """The asked records of `partitions` written since `since` (Unix seconds), read to the current end, and
    {request time as written: its earliest broker append time} of those the broker stamped.

    A plain consumer without a group: it must not join (and rebalance) a consumer group.
    """
    appended: dict[float, float] = {}
    if not partitions:
        return [], appended
    topic = settings.asked_topic
    consumer = follower(settings)
    records: list[tuple[str, Asked]] = []

    def keep(record: Any) -> None:
        value = decode_asked(record.value)
        if record.key and value is not None:
            records.append((record.key.decode(errors="replace"), value))
            if record.timestamp_type == LOG_APPEND_TIME:
                stamp = record.timestamp / 1000
                appended[value.at] = min(stamp, appended.get(value.at, stamp))

    try:
        await consumer.start()  # inside: a stop that cancels the start still closes the consumer
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.offsets_for_times({tp: int(since * 1000) for tp in tps})
        for tp in tps:
            found = starts.get(tp)
            consumer.seek(tp, found.offset if found is not None else ends[tp])
        await read_to_end(consumer, tps, ends, keep, what="the asked log", timeout=LOAD_TIMEOUT)
    finally:
        await consumer.stop()
    return records, appended


async def broker_now(producer: Any, topic: str, partition: int) -> float | None:
    """The broker's time now (Unix seconds), as it stamps a tombstone appended to `topic`; None when the
    topic keeps the writers' times (CreateTime: an asked log created before it used the broker's)."""
    sent = await producer.send_and_wait(topic, None, key=CLOCK_KEY, partition=partition)
    return float(sent.timestamp) / 1000 if sent.timestamp_type == LOG_APPEND_TIME else None
