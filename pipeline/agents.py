"""The Faust agents, kept thin: each parses, asks a pure function what to do, writes and sends.

(Ingest is not an agent: see `hotpath.py`.)
- cache: events-by-ip + geo-results -> the only writer of the geo table and its due-time index; emits
  enriched events, resolve requests and resolved records.
- resolver (module `resolver`): geo-resolve -> batches of up to 100 IPs -> provider chain -> geo-results.

No exception escapes an agent (fact 5: Faust would ack and lose the message): failures are logged,
counted and re-published (DLQ for input, transient results for lookups). Every agent has concurrency 1
(fact 6); the pipeline scales with partitions and workers.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import faust

from .addresses import classify
from .models import EntryStatus, GeoEntry, result_from_dict
from .policy import Decision, apply_result, on_event, on_retry, schedule_key
from .resolver import register as register_resolver
from .routing import dead_letter, enriched

log = logging.getLogger(__name__)

RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


def register(geo: Any, providers: Sequence[Any] | None) -> None:
    """Declare the agents on geo.app."""
    app: faust.App = geo.app
    s = geo.settings
    stats = geo.stats
    producer_send = _sender(app)
    cache_input = app.topic(s.by_ip_topic, s.results_topic, partitions=s.partitions, **RAW)
    resolve = app.topic(s.resolve_topic, partitions=s.resolve_partitions, **RAW)
    rng = random.Random()
    table, schedule, policy = geo.table, geo.schedule, geo.policy
    by = s.worker_label  # who emitted a resolve request: lets operators and tests trace duplicates

    def write(entry: GeoEntry, old: GeoEntry | None) -> None:
        """Write an entry and keep the due-time index in step; the index is what the timer reads."""
        old_key = schedule_key(old) if old else None
        new_key = schedule_key(entry)
        if old_key != new_key:
            if old_key is not None and old_key.encode() in schedule:
                del schedule[old_key.encode()]
            if new_key is not None:
                schedule[new_key.encode()] = b""
        table[entry.ip.encode()] = entry.to_json()

    async def decided(decision: Decision, old: GeoEntry | None) -> GeoEntry | None:
        entry = decision.entry
        if entry is not None:
            write(entry, old)
        # consumers of the resolved topic see answers and failures, not the bookkeeping of a pending lookup
        if entry is not None and entry.status is not EntryStatus.PENDING and decision.resolve_attempt is None:
            await producer_send(s.resolved_topic, entry.ip.encode(), entry.to_json())
            stats.resolved_published += 1
        if decision.resolve_attempt is not None and entry is not None:
            request = json.dumps({"ip": entry.ip, "attempt": decision.resolve_attempt, "by": by}).encode()
            await producer_send(s.resolve_topic, entry.ip.encode(), request)
            stats.resolve_sent += 1
        return entry or old

    @app.agent(cache_input, concurrency=1, name="geo-cache")
    async def cache(stream: Any) -> None:
        async for event in stream.events():
            try:
                ip = event.key.decode()
                if event.message.topic == s.by_ip_topic:
                    raw = table.get(event.key)
                    if raw is None:
                        stats.misses += 1
                        decision = on_event(None, ip, classify(ip), time.time(), policy)
                        entry = await decided(decision, None)
                        raw = entry.to_json() if entry else b"null"
                    await producer_send(s.enriched_topic, event.key, enriched(event.key, raw, event.value))
                    stats.enriched += 1
                else:
                    await apply_message(ip, json.loads(event.value))
            except Exception as exc:  # fact 5: an escaping exception acks and loses the message
                stats.errors += 1
                msg = event.message
                log.exception("cache agent failed on %s[%d]@%d", msg.topic, msg.partition, msg.offset)
                if msg.topic == s.by_ip_topic:  # keep in = enriched + dlq: the event goes to the DLQ
                    reason = f"internal error: {type(exc).__name__}"
                    record = dead_letter(event.value, reason, msg.topic, msg.partition, msg.offset)
                    await producer_send(s.dlq_topic, event.key, record)
                    stats.dead_lettered += 1

    async def apply_message(ip: str, message: dict[str, Any]) -> None:
        raw = table.get(ip.encode())
        old = GeoEntry.from_json(raw) if raw else None
        now = time.time()
        if message.get("type") == "retry":
            await decided(on_retry(old, now, policy), old)
            return
        result = result_from_dict(message["result"])
        new = apply_result(old, int(message["attempt"]), result, now, policy, rng)
        if new is not None and new != old:
            stats.results_applied += 1
            await decided(Decision(new), old)

    register_resolver(geo, providers, resolve)


def _sender(app: faust.App) -> Any:
    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        # the producer's own send: it queues into aiokafka's batch; delivery is awaited by the flush that
        # precedes every offset commit, so a crash before delivery replays the input (at-least-once)
        await app.producer.send(topic, key, value, None, None, None)

    return send
