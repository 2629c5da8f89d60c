"""Budget benchmark: how much of the API budget a backlog of distinct IPs actually gets.

The fake ip-api server from tests/ runs in-process with a short window; a backlog of `ips` distinct public
IPs is published before the worker (providers=ipapi only) starts. The clock starts at the first request
the server logged (the cold start, and any full-window wait a fresh budget imposes, are excluded) and
stops when the last IP shows up resolved on the resolved topic.

Allowed rate: 15 requests per window, 100 IPs each. Because requests come in bursts, "first request to
last resolved" flatters the client (the last burst is counted without the window it opened), so the
share is taken over whole server windows: from the first request to the end of the last window the
server opened. The budget also keeps 1 s of slack per window (throttle.SLACK), which caps it at
15 * 100 / (window + 1) IPs/s; that ceiling is printed beside the result.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer

from pipeline.app import build, ensure_topics, running
from pipeline.config.settings import Settings
from pipeline.devtools.fake_ipapi import IpApiServer, ServerConfig
from pipeline.devtools.scratch import scratch
from pipeline.devtools.workloads import public_ips, publish
from pipeline.providers.ipapi import MAX_BATCH
from pipeline.providers.throttle import SLACK

PROGRESS_EVERY = 2.0


def window_starts(times: list[float], window: float) -> list[float]:
    """When the server opened each fixed window: with the first request after the previous one expired."""
    starts: list[float] = []
    for t in sorted(times):
        if not starts or t >= starts[-1] + window:
            starts.append(t)
    return starts


async def run_budget_bench(
    base: Settings, environ: Mapping[str, str], *, ips: int = 3_000, window: float = 6.0
) -> int:
    """Resolve a backlog of `ips` distinct IPs against the fake API and print the share of the budget."""

    config = ServerConfig(window=window)
    # the fake API first: settings with its short window are valid only together with its URL
    async with IpApiServer(config) as api:
        with scratch(
            "bench-budget",
            base,
            environ,
            providers=("ipapi",),
            ipapi_url=api.url,
            budget_window=window,
            budget_requests=config.batch_limit,
            # a batch failed without a request ("rate budget exhausted") comes back within seconds, so
            # the share measures pacing, not the retry back-off; such failures are counted and printed
            retry_interval=1.0,
            retry_base=1.0,
        ) as run:
            settings = run.settings
            bootstrap = settings.kafka_bootstrap
            allowed = config.batch_limit * MAX_BATCH / window
            ceiling = config.batch_limit * MAX_BATCH / (window + SLACK)
            print(
                f"bench-budget: broker {bootstrap}, fake ip-api {api.url} ({config.batch_limit} requests / "
                f"{window:g}s), {ips:,} distinct IPs; allowed {allowed:.1f} IPs/s, ceiling with {SLACK:g}s "
                f"slack {ceiling:.1f} IPs/s ({ceiling / allowed:.1%})"
            )
            wanted = public_ips(ips, seed=5)  # known to the offline data: an unallocated one never resolves
            await ensure_topics(settings)
            await publish(
                bootstrap,
                settings.events_topic,
                [json.dumps({"ip": ip}).encode() for ip in wanted],
                label="backlog",
            )  # a backlog: everything is waiting before the worker starts
            geo = build(settings)
            timeout = 60.0 + 3 * ips / ceiling
            async with running(geo):
                resolved_at = await _watch(settings, geo, api, set(wanted), timeout)
            print(f"fake ip-api: {api.summary()}")
            return _report(api, resolved_at, ips, window, allowed, ceiling)


async def _watch(
    settings: Settings, geo: Any, api: Any, wanted: set[str], timeout: float
) -> dict[str, float]:
    """Follow the resolved topic until every wanted IP is resolved; monotonic time of each first resolve."""
    consumer = AIOKafkaConsumer(
        settings.resolved_topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    resolved_at: dict[str, float] = {}
    failures: Counter[str] = Counter()  # non-resolved outcomes published on the way: they cost time
    started = last = time.monotonic()
    try:
        while len(resolved_at) < len(wanted) and time.monotonic() - started < timeout:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            now = time.monotonic()
            for records in batch.values():
                for record in records:
                    value = json.loads(record.value)
                    ip = value.get("ip")
                    if value.get("status") == "resolved" and ip in wanted and ip not in resolved_at:
                        resolved_at[ip] = now
                    elif value.get("status") != "resolved":
                        failures[f"{value.get('status')}: {value.get('last_error')}"] += 1
            if now - last >= PROGRESS_EVERY:
                last = now
                print(
                    f"  {now - started:5.1f}s resolved={len(resolved_at):,}/{len(wanted):,} "
                    f"requests={api.requests} 429s={api.count_429} worker: {geo.stats.line()}",
                    flush=True,
                )
    finally:
        await consumer.stop()
    if failures:
        print(f"  non-resolved records seen on the resolved topic: {dict(failures)}")
    if len(resolved_at) < len(wanted):
        print(f"  TIMEOUT after {timeout:.0f}s: {len(resolved_at):,}/{len(wanted):,} resolved")
    return resolved_at


def _report(
    api: Any, resolved_at: dict[str, float], ips: int, window: float, allowed: float, ceiling: float
) -> int:
    times = [entry.time for entry in api.log]
    if not times or not resolved_at:
        print("summary: nothing was resolved")
        return 1
    first_request = min(times)
    last_resolved = max(resolved_at.values())
    n = len(resolved_at)
    naive_s = last_resolved - first_request
    starts = window_starts(times, window)
    windows = len(starts)
    span_s = starts[-1] + window - first_request
    achieved = n / span_s
    if windows >= 2:  # window start to window start: the sustained rate, free of the edges
        before_last = sum(e.items for e in api.log if e.time < starts[-1])
        period = (starts[-1] - starts[0]) / (windows - 1)
        print(
            f"  sustained: {before_last:,} IPs in {windows - 1} window periods of {period:.2f}s on average = "
            f"{before_last / (starts[-1] - starts[0]):.1f} IPs/s "
            f"({before_last / (starts[-1] - starts[0]) / allowed:.1%} of allowed)"
        )
    items = sum(entry.items for entry in api.log)
    print(
        f"  requests={api.requests} in {windows} server windows, {items / max(1, api.requests):.1f} IPs per "
        f"request; first request to last resolved {naive_s:.2f}s ({n / naive_s:.1f} IPs/s, flattering: the "
        f"last burst's window is not counted); whole windows {span_s:.2f}s"
    )
    print(
        f"summary: achieved {achieved:.1f} IPs/s of {allowed:.1f} allowed = {achieved / allowed:.1%} "
        f"(goal 95%; slack ceiling {ceiling / allowed:.1%}) | 429s={api.count_429} "
        f"requests={api.requests} resolved={n:,}/{ips:,}"
    )
    return 0 if n == ips else 1
