"""`geo-pipeline bench --mode hits`: the hot path (cache hits) against a plain aiokafka loop, same run.

Why a baseline: absolute events/s depend on the machine and the broker, so a number alone says little. A
consume-parse-produce-commit loop over the same messages is the least work any Kafka consumer in Python
can do; the ratio pipeline / baseline is what the design costs on a hit: parsing and validating the
event, normalising the IP, the near-cache lookup and building the enriched record, on a worker whose Faust
agents and timers share the event loop. The baseline runs before and after the pipeline and the mean is
used, because a shared machine drifts within a run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer

from pipeline.app import GeoApp, build, running
from pipeline.config.settings import Settings
from pipeline.devtools.bench.baseline import (
    PARTITIONS,
    PROGRESS_EVERY,
    Rate,
    baseline,
    create_topics,
    delete_topics,
    stamped_on_append,
)
from pipeline.devtools.scratch import scratch
from pipeline.devtools.workloads import public_ips, publish, tagged_events

WARM_IPS = 1000  # distinct addresses; every measured event is a cache hit on one of them
WARM_TIMEOUT = 120.0


async def run_bench(base: Settings, environ: Mapping[str, str], *, events: int) -> int:
    """Warm the cache, then time baseline, pipeline, baseline; print the rates and their ratio."""
    with scratch("bench", base, environ, partitions=PARTITIONS, providers=("offline",)) as scratch_run:
        return await _run_bench(scratch_run.settings, scratch_run.run, events)


async def _run_bench(settings: Settings, run: str, events: int) -> int:
    bootstrap = settings.kafka_bootstrap
    base_in, base_out = f"bench-base-in-{run}", f"bench-base-out-{run}"
    ips = public_ips(WARM_IPS)
    payloads = tagged_events(ips, events, f"m-{run}")
    print(
        f"bench: broker {bootstrap}, {events} events over {len(ips)} cached IPs, "
        f"{PARTITIONS} partitions, topics *-{run}",
        flush=True,
    )
    try:
        await create_topics(bootstrap, [base_in, base_out])
        await publish(bootstrap, base_in, payloads, label="baseline input")
        before = await baseline(bootstrap, base_in, base_out, events, "baseline (before)")
        await stamped_on_append(bootstrap, settings.enriched_topic)  # enriched records keep the input's time
        geo = build(settings)
        async with running(geo):
            warm = tagged_events(ips, len(ips), f"w-{run}")
            await publish(bootstrap, settings.events_topic, warm, label="warm-up")
            await _wait_warm(settings, set(ips))
            await _wait_near(geo, set(ips))
            await publish(bootstrap, settings.events_topic, payloads, label="measured")
            pipeline = await _watch_enriched(settings, geo, f'"bench":"m-{run}"'.encode(), events)
        after = await baseline(bootstrap, base_in, base_out, events, "baseline (after)")
        mean = (before.per_second + after.per_second) / 2
        print("\nsummary:")
        for rate in (before, after, pipeline):
            print(f"  {rate.line()}")
        print(f"  baseline mean: {mean:,.0f} events/s")
        print(f"  ratio pipeline/baseline: {pipeline.per_second / mean:.2f}")
        print(f"  hits served by the near cache: {geo.stats.hits} of {geo.stats.consumed} consumed")
        print(
            "  limits: per event the hot path parses and validates the JSON and the IP (the baseline "
            "only parses), looks the IP up and builds the enriched record, in one Python thread shared "
            "with the worker's Faust consumer, agents and timers; Kafka I/O is the same for both."
        )
        return 0
    finally:
        await delete_topics(bootstrap, run)


async def _watch_enriched(settings: Settings, geo: GeoApp, marker: bytes, count: int) -> Rate:
    """Count the measured events on the enriched topic; time them by the records' own timestamps.

    Record timestamps are set by the broker when it appends (the enriched topic stamps on append), so the
    span does not depend on when this reader happens to fetch.
    """
    consumer = AIOKafkaConsumer(
        settings.enriched_topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    seen, lo, hi, shown, deadline = 0, None, None, time.monotonic(), time.monotonic() + max(60.0, count / 100)
    try:
        while seen < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"pipeline: {seen}/{count} enriched; worker: {geo.stats.line()}")
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batch.values():
                for record in records:
                    if marker in record.value:
                        seen += 1
                        lo = record.timestamp if lo is None else min(lo, record.timestamp)
                        hi = record.timestamp if hi is None else max(hi, record.timestamp)
            if time.monotonic() - shown > PROGRESS_EVERY:
                shown = time.monotonic()
                print(f"  pipeline: enriched {seen}/{count}; worker: {geo.stats.line()}", flush=True)
    finally:
        await consumer.stop()
    rate = Rate("pipeline (hot path, cache hits)", seen, ((hi or 0) - (lo or 0)) / 1000)
    print(f"  {rate.line()}", flush=True)
    return rate


async def _wait_warm(settings: Settings, ips: set[str]) -> None:
    """Read the resolved topic until every warm-up IP has an answer, so the measured stream only hits."""
    consumer = AIOKafkaConsumer(
        settings.resolved_topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    done: set[str] = set()
    started = shown = time.monotonic()
    try:
        while not ips <= done:
            if time.monotonic() - started > WARM_TIMEOUT:
                raise TimeoutError(f"warm-up: only {len(done & ips)}/{len(ips)} IPs resolved")
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    entry = json.loads(record.value)
                    if entry["status"] != "pending":
                        done.add(entry["ip"])
            if time.monotonic() - shown > PROGRESS_EVERY:
                shown = time.monotonic()
                print(f"  warm-up: {len(done & ips)}/{len(ips)} IPs resolved", flush=True)
    finally:
        await consumer.stop()
    print(f"  warm-up: {len(ips)} IPs cached in {time.monotonic() - started:.1f}s", flush=True)


async def _wait_near(geo: GeoApp, ips: set[str]) -> None:
    """Wait until the hot path's near cache holds every warm-up IP, so measured events are all hits."""
    started = time.monotonic()
    while not all(geo.near.get(ip.encode()) for ip in ips):
        if time.monotonic() - started > WARM_TIMEOUT:
            raise TimeoutError(f"near cache: only {len(geo.near)}/{len(ips)} IPs after {WARM_TIMEOUT:.0f}s")
        await asyncio.sleep(0.1)  # polling in-process state the feeder fills; it has no event to wait on
    print(f"  near cache: {len(ips)} IPs ready in {time.monotonic() - started:.1f}s", flush=True)
