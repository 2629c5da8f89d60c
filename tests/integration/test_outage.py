"""The seed system's own scenario on the real broker: new IPs arrive while the geo API is down, then it
comes back and no new event arrives; and a resolver that never answers leaves nothing pending."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import iptocc
import pytest

from pipeline.app import build, running
from pipeline.devtools.broker import free_port
from pipeline.devtools.fake_ipapi import IpApiServer, ServerConfig
from pipeline.devtools.workloads import public_ips
from tests.support.kafka import wait_for
from tests.support.pipeline import WINDOW, Outputs, make_settings, publish_values, wait_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_IPS = 300


async def test_after_an_outage_the_timer_alone_resolves_every_entry_within_one_retry_cap(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """While the API refuses connections, each new IP gets an entry at once with the offline country (NULL
    where the offline data has none), never left pending; once the API is back, with no new event, the
    retry timer alone brings every entry to resolved within one retry cap plus what the budget needs for
    ceil(N/100) requests, each IP asked once per attempt, with zero 429 and no ban."""
    port = free_port()  # nothing listens here yet: connections are refused
    settings = make_settings(
        kafka_bootstrap,
        tmp_path / "w",
        providers=("ipapi", "offline"),
        ipapi_url=f"http://127.0.0.1:{port}",
        budget_window=WINDOW,
        retry_interval=1.0,
        retry_base=2.0,
        retry_cap=8.0,
        http_timeout=2.0,
        pending_timeout=10.0,
    )
    ips = public_ips(N_IPS, seed=41, offline_known=False)
    geo = build(settings)
    async with running(geo), Outputs(settings) as out:
        await publish_values(
            kafka_bootstrap, settings.events_topic, [json.dumps({"ip": ip}).encode() for ip in ips]
        )
        await wait_all(
            out, ips, lambda e: e["status"] in ("partial", "unresolved"), 60, "answered from offline"
        )
        for ip in ips:
            assert out.resolved[ip]["geo"]["country_code"] == (iptocc.country_code(ip) or None)
        pending = [e for e in out.enriched if e["geo"]["status"] == "pending"]
        assert all(e["geo"]["source"] in ("offline", None) for e in pending)
        async with IpApiServer(ServerConfig(port=port, window=WINDOW)) as api:
            back = time.monotonic()
            await wait_all(out, ips, lambda e: e["status"] == "resolved", 120, "resolved after the outage")
            took = time.monotonic() - back
        budget_time = math.floor((math.ceil(N_IPS / 100) - 1) / 15) * WINDOW  # 15 requests per window
        bound = settings.retry_cap + budget_time + settings.retry_interval
        print(
            f"\nafter the outage: {N_IPS} IPs resolved in {took:.1f}s (bound {bound:.0f}s + scheduling slack)"
        )
        assert took <= bound + 10.0, f"took {took:.1f}s"
        attempts = {ip: out.resolved[ip]["attempts"] for ip in ips}
    assert api.count_429 == 0 and api.violations == 0 and not api.banned
    asked = api.ips_seen()
    assert set(asked) == set(ips)
    assert all(asked[ip] <= attempts[ip] for ip in ips), "an IP was asked twice in one attempt"


async def test_with_a_resolver_that_never_answers_no_entry_stays_pending_past_the_pending_timeout(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """If no answer ever comes (the resolver is stuck), the retry timer turns every pending entry partial
    (offline country kept) or unresolved, and publishes it, once its pending timeout has passed."""
    settings = make_settings(
        kafka_bootstrap, tmp_path / "w", retry_interval=1.0, pending_timeout=4.0, http_timeout=1.0
    )
    ips = public_ips(50, seed=43, offline_known=False)
    geo = build(settings)

    async def stuck() -> None:
        await geo.resolver.sleep(3600)  # takes nothing, answers nothing

    geo.resolver.run_once = stuck  # type: ignore[method-assign]
    async with running(geo), Outputs(settings) as out:
        started = time.monotonic()
        await publish_values(
            kafka_bootstrap, settings.events_topic, [json.dumps({"ip": ip}).encode() for ip in ips]
        )
        await wait_all(out, ips, lambda e: e["status"] == "pending", 30, "pending first")

        async def none_pending() -> bool:
            await out.poll()
            return all(out.resolved[ip]["status"] in ("partial", "unresolved") for ip in ips)

        limit = settings.pending_timeout + 3 * settings.retry_interval + 10
        await wait_for(none_pending, limit, interval=0.2, message=lambda: f"{out.statuses()}")
        took = time.monotonic() - started
    print(f"\nno answer: every entry left pending after {took:.1f}s (timeout {settings.pending_timeout:g}s)")
    assert all(out.resolved[ip]["last_error"] == "no answer within the pending timeout" for ip in ips)
