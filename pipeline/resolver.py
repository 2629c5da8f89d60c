"""The resolver agent: geo-resolve -> dedupe against the asked log -> provider chain -> geo-results.

It takes up to 100 requests per short window, keeps the highest attempt per IP, drops what an earlier ask
still covers (`inflight.AskedLog`), writes "asked" records for the rest and waits for their delivery, and
only then calls the provider chain. Writing before asking is what survives a crash: a successor reading the
asked log knows what the dead resolver may have asked, so a redelivered batch costs no second request.
Results go to the results topic, co-partitioned with the table, where the cache agent applies them.

The asked log is read back with a group-less consumer whenever this worker's resolve partitions change
(start-up, rebalance, a dead worker's partitions taken over), before anything is asked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import faust
from aiokafka import AIOKafkaConsumer, TopicPartition

from .addresses import AddressKind, classify
from .asked import Asked, AskedLog, asked_horizon, asked_keep, decode_asked, encode_asked
from .ipapi import MAX_BATCH as RESOLVE_BATCH  # more in one request gives HTTP 422
from .models import LookupResult, TransientFailure, result_to_dict

log = logging.getLogger(__name__)

LOAD_TIMEOUT = 30.0  # seconds to read the asked log back; past it we ask with what we have (a few repeats)


def register(geo: Any, providers: Sequence[Any] | None, resolve: Any) -> None:
    """Declare the resolver agent on geo.app, consuming the `resolve` topic."""
    app: faust.App = geo.app
    s = geo.settings
    stats = geo.stats
    asked = AskedLog(asked_horizon(s.pending_timeout), asked_keep(s.pending_timeout))
    loaded: dict[str, frozenset[int] | None] = {"partitions": None}
    budget_holder: dict[str, Any] = {}
    by = s.worker_label

    async def send(topic: str, key: bytes, value: bytes, partition: int | None = None) -> Any:
        """Queue a record on the app's producer; returns its delivery future (awaited only where the
        order of delivery matters: the consumer flushes the producer before every offset commit)."""
        return await app.producer.send(topic, key, value, partition, None, None)

    @app.agent(resolve, concurrency=1, name="geo-resolver")
    async def resolver(stream: Any) -> None:
        chain = await _open_chain(geo, providers, budget_holder)
        # cold start: wait out a window nobody can vouch for. No batch is held yet, so this wait does not
        # stall a rebalance and must not give way to one (giving way here sent the first batch to a closed
        # budget, failing it without a request)
        await _pace(app, budget_holder.get("budget"), give_way=False)
        try:
            async for batch in stream.take_events(RESOLVE_BATCH, within=s.resolve_batch_wait):
                try:
                    await refresh_asked()
                    await resolve_batch(chain, batch)
                except Exception:  # fact 5; the IPs come back through the retry timer
                    stats.errors += 1
                    log.exception("resolver batch of %d failed", len(batch))
                await _pace(app, budget_holder.get("budget"))
        finally:
            await _close_chain(budget_holder)

    async def refresh_asked() -> None:
        """Reload the asked log when our resolve partitions changed since the last load."""
        mine = frozenset(tp.partition for tp in app.consumer.assignment() if tp.topic == s.resolve_topic)
        if mine == loaded["partitions"]:
            return
        now = time.time()
        try:
            records = await read_asked(s.kafka_bootstrap, s.asked_topic, mine, since=now - asked.keep)
        except Exception:  # the batch still goes out, deduped by what we know; the next batch retries
            log.exception("reading the asked log back failed")
            return
        asked.replace(records)
        asked.prune(now)
        loaded["partitions"] = mine
        log.info("asked log loaded for resolve partitions %s: %d IPs", sorted(mine), len(asked))

    async def resolve_batch(chain: Any, batch: Sequence[Any]) -> None:
        wanted: dict[str, int] = {}
        partition: dict[str, int] = {}
        for event in batch:
            try:
                request = json.loads(event.value)
                ip, attempt = str(request["ip"]), int(request["attempt"])
            except (ValueError, KeyError, TypeError):
                log.warning("dropping malformed resolve request %r", event.value[:200])
                continue
            # defensive: only global addresses ever reach a provider, whatever is on the topic
            if classify(ip) is not AddressKind.GLOBAL:
                continue
            if attempt >= wanted.get(ip, 0):
                wanted[ip], partition[ip] = attempt, event.message.partition
        now = time.time()
        asked.prune(now)
        chosen = asked.select(wanted, now)
        stats.resolve_deduped += len(wanted) - len(chosen)
        if not chosen:
            return
        # write down what we are about to ask and wait for the broker's ack: if we die after asking, the
        # next owner of the partition reads this and does not ask again (the asked log is co-partitioned
        # with the resolve topic, so the record goes to the request's own partition number)
        deliveries = [
            await send(s.asked_topic, ip.encode(), encode_asked(attempt, now, by), partition[ip])
            for ip, attempt in chosen.items()
        ]
        await asyncio.gather(*deliveries)
        for ip, attempt in chosen.items():
            asked.record(ip, attempt, now)
        ips = list(chosen)
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
        deliveries = []
        for ip in ips:
            result = results.get(ip) or TransientFailure("no result", chain.name)
            body = {"type": "result", "attempt": chosen[ip], "result": result_to_dict(result)}
            deliveries.append(await send(s.results_topic, ip.encode(), json.dumps(body).encode()))
        # only once the answers are on the broker may the log say "answered": from then on a repeat of
        # these requests (redelivery, a re-emission crossing the answer) is dropped whatever its age. Those
        # records need no wait: if they are lost, the horizon rule costs at most one more ask
        await asyncio.gather(*deliveries)
        answered_at = time.time()
        for ip, attempt in chosen.items():
            asked.record(ip, attempt, answered_at, answered=True)
            value = encode_asked(attempt, answered_at, by, answered=True)
            await send(s.asked_topic, ip.encode(), value, partition[ip])

    geo.resolve_budget = budget_holder
    geo.asked_log = asked


async def read_asked(
    bootstrap: str, topic: str, partitions: frozenset[int], *, since: float
) -> list[tuple[str, Asked]]:
    """The asked records of `partitions` written since `since` (Unix seconds), read to the current end.

    A plain consumer without a group: it must not join (and rebalance) the app's consumer group.
    """
    if not partitions:
        return []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    records: list[tuple[str, Asked]] = []
    try:
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.offsets_for_times({tp: int(since * 1000) for tp in tps})
        for tp in tps:
            found = starts.get(tp)
            consumer.seek(tp, found.offset if found is not None else ends[tp])
        deadline = time.monotonic() + LOAD_TIMEOUT
        left = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
        while left:
            if time.monotonic() > deadline:
                log.warning("asked log not read to the end within %.0fs; going on", LOAD_TIMEOUT)
                break
            batch = await consumer.getmany(*left, timeout_ms=500)
            for part in batch.values():
                for record in part:
                    value = decode_asked(record.value)
                    if record.key and value is not None:
                        records.append((record.key.decode(errors="replace"), value))
            left = [tp for tp in left if await consumer.position(tp) < ends[tp]]
    finally:
        await consumer.stop()
    return records


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
    while budget is not None and not (give_way and app.rebalancing):
        delay = budget.delay()
        if delay <= 0:
            return
        await asyncio.sleep(min(delay, 0.5))
