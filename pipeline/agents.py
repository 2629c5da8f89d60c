"""The Faust agents, kept thin: each parses, asks a pure function what to do, writes and sends.

(Ingest is not an agent: see `hotpath.py`.)
- cache: events-by-ip + geo-results -> the only writer of the geo table and its due-time index; emits
  enriched events, resolve requests and resolved records.
- resolver: geo-resolve -> batches of up to 100 IPs -> provider chain -> geo-results.

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

import aiohttp
import faust

from .addresses import AddressKind, classify
from .ingest import dead_letter, enriched
from .models import EntryStatus, GeoEntry, LookupResult, TransientFailure, result_from_dict, result_to_dict
from .policy import Decision, apply_result, on_event, on_retry, schedule_key

log = logging.getLogger(__name__)

RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}
RESOLVE_BATCH = 100  # ip-api's batch limit: more gives HTTP 422


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
            request = json.dumps({"ip": entry.ip, "attempt": decision.resolve_attempt}).encode()
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

    budget_holder: dict[str, Any] = {}

    @app.agent(resolve, concurrency=1, name="geo-resolver")
    async def resolver(stream: Any) -> None:
        chain = await _open_chain(geo, providers, budget_holder)
        # cold start: wait out a window nobody can vouch for. No batch is held yet, so this wait does not
        # stall a rebalance and must not give way to one (giving way here sent the first batch to a closed
        # budget, failing it without a request)
        await _pace(app, budget_holder.get("budget"), give_way=False)
        try:
            async for batch in stream.take(RESOLVE_BATCH, within=s.resolve_batch_wait):
                try:
                    await resolve_batch(chain, batch)
                except Exception:  # fact 5; the IPs come back through the retry timer
                    stats.errors += 1
                    log.exception("resolver batch of %d failed", len(batch))
                await _pace(app, budget_holder.get("budget"))
        finally:
            await _close_chain(budget_holder)

    async def resolve_batch(chain: Any, batch: list[bytes]) -> None:
        wanted: dict[str, int] = {}
        for value in batch:
            try:
                request = json.loads(value)
                ip, attempt = str(request["ip"]), int(request["attempt"])
            except (ValueError, KeyError, TypeError):
                log.warning("dropping malformed resolve request %r", value[:200])
                continue
            wanted[ip] = max(attempt, wanted.get(ip, 0))
        # defensive: only global addresses ever reach a provider, whatever is on the topic
        ips = [ip for ip in wanted if classify(ip) is AddressKind.GLOBAL]
        if not ips:
            return
        results: dict[str, LookupResult]
        try:
            results = await chain.resolve(ips)
        except Exception as exc:  # a provider bug must not lose the batch: all become transient
            log.exception("provider chain raised")
            results = {
                ip: TransientFailure(f"provider error: {type(exc).__name__}", chain.name) for ip in ips
            }
        stats.lookups += len(ips)
        stats.batches += 1
        for ip in ips:
            result = results.get(ip) or TransientFailure("no result", chain.name)
            body = {"type": "result", "attempt": wanted[ip], "result": result_to_dict(result)}
            await producer_send(s.results_topic, ip.encode(), json.dumps(body).encode())

    geo.resolve_budget = budget_holder


def _sender(app: faust.App) -> Any:
    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        # the producer's own send: it queues into aiokafka's batch; delivery is awaited by the flush that
        # precedes every offset commit, so a crash before delivery replays the input (at-least-once)
        await app.producer.send(topic, key, value, None, None, None)

    return send


async def _open_chain(geo: Any, providers: Sequence[Any] | None, holder: dict[str, Any]) -> Any:
    from .providers import OfflineProvider, ProviderChain

    if providers is not None:
        holder["budget"] = getattr(providers[0], "budget", None)
        return ProviderChain(providers)
    from .ipapi import IpApiProvider
    from .throttle import ResolveBudget

    s = geo.settings
    chain: list[Any] = []
    for name in s.providers:
        if name == "offline":
            chain.append(OfflineProvider())
        else:
            session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=s.http_timeout))
            budget = ResolveBudget(geo.app.loop.time, limit=s.budget_requests, window=s.budget_window)
            # we cannot know what a previous owner of the resolve partition sent in the current window
            budget.assume_full_window()
            holder.update(session=session, budget=budget)
            chain.append(
                IpApiProvider(
                    session,
                    budget,
                    base_url=s.ipapi_url or None,
                    api_key=s.ipapi_key,
                    fields=s.ipapi_fields,
                    lang=s.ipapi_lang,
                    timeout=s.http_timeout,
                )
            )
    return ProviderChain(chain)


async def _close_chain(holder: dict[str, Any]) -> None:
    session = holder.pop("session", None)
    if session is not None:
        await session.close()


async def _pace(app: faust.App, budget: Any, *, give_way: bool = True) -> None:
    """Wait for the budget before taking more work, but give way to a rebalance (fact 8).

    Polling in short steps lets a rebalance proceed: Faust waits for unacked messages before it hands
    partitions over, and the take() buffer fills while we wait.
    """
    import asyncio

    while budget is not None and not (give_way and app.rebalancing):
        delay = budget.delay()
        if delay <= 0:
            return
        await asyncio.sleep(min(delay, 0.5))
