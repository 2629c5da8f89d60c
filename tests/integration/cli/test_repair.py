"""`geo-pipeline retry` and `forget` against a real worker on the real broker: the seed's job on demand
once the API is back, and an address removed everywhere."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import pytest

from pipeline.app import build, running
from pipeline.cache.timers import tick_capacity
from pipeline.cli import repair
from pipeline.devtools.broker import free_port
from pipeline.devtools.fake_ipapi import IpApiServer, ServerConfig
from pipeline.devtools.workloads import public_ips
from pipeline.devtools.workloads import publish as publish_values
from pipeline.web.server import WebServer, listen
from tests.support.kafka import wait_for
from tests.support.pipeline import WINDOW, Outputs, make_settings, wait_all

pytestmark = pytest.mark.integration

N_IPS = 1_000
SLACK = 10.0  # seconds of scheduling slack on a shared 2-core machine (broker, worker and test in one)


async def test_retry_brings_partial_entries_to_resolved_within_the_budget_time_once_the_api_is_back(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """1,000 entries left partial by an outage (their own retries hours away) are all resolved by `retry
    --status partial` within the ticks the budget needs once the fake ip-api is back, each IP asked once,
    with zero 429s; the command's summary counts 1,000 matched and 1,000 resolved."""
    port = free_port()  # nothing listens here yet: connections are refused
    settings = make_settings(
        kafka_bootstrap,
        tmp_path / "w",
        providers=("ipapi", "offline"),
        ipapi_url=f"http://127.0.0.1:{port}",
        budget_window=WINDOW,
        retry_interval=1.0,
        retry_base=600.0,  # the timer alone would not ask again during this test: only `retry` can
        retry_cap=600.0,
        http_timeout=2.0,
        pending_timeout=10.0,
        web_port=0,
    )
    ips = public_ips(N_IPS, seed=47, offline_known=True)
    geo = build(settings)
    sock, url = listen(settings)
    async with running(geo, services=[WebServer(geo, sock, url)]), Outputs(settings) as out:
        await publish_values(
            kafka_bootstrap, settings.events_topic, [json.dumps({"ip": ip}).encode() for ip in ips]
        )
        await wait_all(out, ips, lambda e: e["status"] == "partial", 90, "partial during the outage")
        async with IpApiServer(ServerConfig(port=port, window=WINDOW)) as api:
            budget = geo.resolver.budget

            async def may_ask() -> bool:  # the outage opened the breaker: it lets a probe through again
                return budget is not None and budget.unavailable() is None

            await wait_for(may_ask, 2 * WINDOW + SLACK, interval=0.2, message=lambda: "breaker still open")
            back = time.monotonic()
            args = argparse.Namespace(ips=[], status="partial", wait=120.0, url=[url])
            code = await repair.retry(args, settings)
            took = time.monotonic() - back
            await wait_all(out, ips, lambda e: e["status"] == "resolved", 30, "resolved on the topic")
        printed = capsys.readouterr().out
    capacity = tick_capacity(settings.budget_requests, WINDOW, settings.retry_interval, 1.0)
    ticks = math.ceil(N_IPS / capacity)
    budget_time = math.floor((math.ceil(N_IPS / 100) - 1) / settings.budget_requests) * WINDOW
    bound = ticks * settings.retry_interval + budget_time + settings.http_timeout
    print(f"\nretry: {N_IPS} partial entries resolved in {took:.1f}s (bound {bound:.0f}s + {SLACK:g}s slack)")
    assert code == 0, printed
    assert f"{N_IPS:,} matched, {N_IPS:,} resolved, 0 waiting" in printed
    assert took <= bound + SLACK, f"took {took:.1f}s"
    assert api.count_429 == 0 and api.violations == 0 and not api.banned
    asked = api.ips_seen()
    assert set(asked) == set(ips) and all(n == 1 for n in asked.values()), "an IP was asked twice"


async def test_forget_removes_an_entry_with_tombstones_and_leaves_the_others(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After `forget`, the IP's entry is gone from the table (404 from the API) and the resolved topic
    carries its tombstone; the other IPs keep their entries."""
    settings = make_settings(kafka_bootstrap, tmp_path / "w", web_port=0)
    ips = public_ips(5, seed=53, offline_known=True)
    geo = build(settings)
    sock, url = listen(settings)
    async with running(geo, services=[WebServer(geo, sock, url)]), Outputs(settings) as out:
        await publish_values(kafka_bootstrap, settings.events_topic, [ip.encode() for ip in ips])
        await wait_all(out, ips, lambda e: True, 60, "entries created")
        args = argparse.Namespace(ips=[ips[0]], url=[url])
        assert await repair.forget(args, settings) == 0

        async def gone() -> bool:
            await out.poll()
            return ips[0] in out.tombstones

        await wait_for(gone, 30, interval=0.2, message=lambda: "no tombstone for the forgotten IP")
        again = argparse.Namespace(ips=[ips[0]], status=None, wait=10.0, url=[url])
        assert await repair.retry(again, settings) == 0
        assert "retry: 0 entries" in capsys.readouterr().out  # no entry left in the table to retry
        assert sorted(out.resolved) == sorted(ips[1:])
    assert geo.stats.forgotten == 1
