"""Reading a backlog benchmark's output topic back after the run: its rate and the share with a country.

Why after the run: a reader competing with the job for the two cores would slow what it measures. Why the
records' own timestamps: they say when the job (or the broker, for a topic with LogAppendTime) wrote each
record, so the span does not depend on when this reader fetches. Shared by the pipeline's and the Quix
Streams job's outputs, which carry the country in different places (`country`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer

from pipeline.devtools.bench.baseline import Rate

READ_TIMEOUT = 120.0  # seconds to read the whole output back; it is already written when this starts


class Readback(NamedTuple):
    """The output of one run: rate by record timestamps, events with a country, events whose IP the
    offline data knows, and all events of the run found."""

    rate: Rate
    with_country: int
    known: int
    seen: int


async def read_output(
    bootstrap: str,
    topic: str,
    events: int,
    marker: bytes,
    label: str,
    country: Callable[[dict[str, Any]], object],
    ip_of: Callable[[dict[str, Any]], str] = lambda doc: str(doc["ip"]),
) -> Readback:
    """Read `topic` from the start until `events` records containing `marker` are found (or the timeout)."""
    import iptocc  # the offline data, to know which IPs could have a country at all

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    seen = with_country = known = 0
    lo = hi = None
    knows: dict[str, bool] = {}
    deadline = time.monotonic() + READ_TIMEOUT
    try:
        while seen < events and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=20_000)
            for records in batch.values():
                for record in records:
                    if marker not in record.value:
                        continue
                    seen += 1
                    lo = record.timestamp if lo is None else min(lo, record.timestamp)
                    hi = record.timestamp if hi is None else max(hi, record.timestamp)
                    doc = json.loads(record.value)
                    ip = ip_of(doc)  # the (first) enriched IP: where it is depends on the shape
                    if ip not in knows:
                        knows[ip] = bool(iptocc.country_code(ip))
                    known += knows[ip]
                    with_country += knows[ip] and bool(country(doc))
    finally:
        await consumer.stop()
    return Readback(Rate(label, seen, ((hi or 0) - (lo or 0)) / 1000), with_country, known, seen)
