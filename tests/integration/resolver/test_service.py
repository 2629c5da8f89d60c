"""The resolver against the local ip-api look-alike on the real broker: budget kept, nothing lost, no ban."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pipeline.app import build, running
from pipeline.devtools.fake_ipapi import Faults, IpApiServer, ServerConfig
from tests.support.kafka import wait_for
from tests.support.pipeline import WINDOW, Outputs, addresses, make_settings, publish_values

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def resolve_everything(
    bootstrap: str, tmp_path: Path, api: IpApiServer, n_public: int, **overrides: object
) -> tuple[Outputs, list[str], list[str]]:
    public, private, invalid = addresses(n_public)
    settings = make_settings(
        bootstrap, tmp_path / "w", providers=("ipapi",), ipapi_url=api.url, budget_window=WINDOW, **overrides
    )
    values = [json.dumps({"ip": ip}).encode() for ip in public + private] + invalid
    async with running(build(settings)), Outputs(settings) as out:
        await publish_values(bootstrap, settings.events_topic, values)

        async def done() -> bool:
            await out.poll()
            return sum(out.resolved.get(ip, {}).get("status") == "resolved" for ip in public) == len(public)

        await wait_for(
            done,
            240,
            interval=0.2,
            message=lambda: f"all public resolved: {out.statuses()} api: {api.summary()}",
        )
        assert len(out.enriched) + len(out.dlq) == len(values)
    return out, public, private


async def test_backlog_resolves_within_budget_without_429(kafka_bootstrap: str, tmp_path: Path) -> None:
    """5,000 public IPs resolve with zero 429s, about one request per 100 IPs, and no private IP sent."""
    async with IpApiServer(ServerConfig(window=WINDOW)) as api:
        out, public, private = await resolve_everything(kafka_bootstrap, tmp_path, api, 5_000)
        assert api.count_429 == 0 and api.violations == 0 and not api.banned
        assert api.max_in_window() <= 15
        assert api.requests <= math.ceil(len(public) / 100) + 5
        seen = api.ips_seen()
        assert not set(seen) & set(private)
        assert set(seen) == set(public)
        assert out.resolved["8.8.8.8"]["geo"]["country_code"] == "US" if "8.8.8.8" in out.resolved else True


async def test_faults_are_retried_until_everything_resolves_without_a_ban(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """With 20% 5xx, timeouts, malformed and partial bodies, every public IP still ends resolved; no ban."""
    faults = Faults(
        error_rate=0.2, timeout_rate=0.05, timeout_seconds=3.0, malformed_rate=0.05, partial_rate=0.05
    )
    async with IpApiServer(ServerConfig(window=WINDOW), faults=faults) as api:
        out, public, private = await resolve_everything(
            kafka_bootstrap,
            tmp_path,
            api,
            1_000,
            http_timeout=2.0,
            retry_interval=1.0,
            retry_base=1.0,
            retry_cap=5.0,
        )
        assert not api.banned and api.violations == 0
        assert api.max_in_window() <= 15
        assert not set(api.ips_seen()) & set(private)
        assert all(out.resolved[ip]["provider"] == "ipapi" for ip in public)
