"""The retry timer on the real broker and RocksDB: entries the API could not answer (NULL country, or only
the offline country) come back once the API recovers."""

from __future__ import annotations

import json
from pathlib import Path

import iptocc
import pytest

from pipeline.app import build, running
from pipeline.devtools.fake_ipapi import Faults, IpApiServer, ServerConfig
from tests.support.pipeline import (
    WINDOW,
    Outputs,
    addresses,
    outage_settings,
    publish_values,
    read_topic,
    resolve_requests,
    wait_all,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_entries_left_null_by_a_rate_limited_period_are_retried_to_resolved(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """While the API answers 429 entries keep only what the offline data knows (partial, or unresolved with a
    NULL country); after it recovers the timer resolves them all,
    with no 429 after recovery, each IP asked once per attempt, private addresses never re-emitted."""
    public, private, _ = addresses(400, seed=11)
    faults = Faults(force_429=True)
    async with IpApiServer(ServerConfig(window=WINDOW), faults=faults) as api:
        settings = outage_settings(kafka_bootstrap, tmp_path / "w", api.url, WINDOW)
        geo = build(settings)
        async with running(geo), Outputs(settings) as out:
            await publish_values(
                kafka_bootstrap,
                settings.events_topic,
                [json.dumps({"ip": ip}).encode() for ip in public + private],
            )

            unanswered = ("partial", "unresolved")
            await wait_all(
                out, public, lambda e: e["status"] in unanswered and e["attempts"] >= 1, 90, "failed once"
            )
            for ip in public:
                assert out.resolved[ip]["geo"]["country_code"] == (iptocc.country_code(ip) or None)
            failed_requests = len(api.log)
            faults.force_429 = False

            await wait_all(out, public, lambda e: e["status"] == "resolved", 120, "resolved")
        after = api.log[failed_requests:]
        assert all(entry.status != 429 for entry in after)
        assert not api.banned and api.violations == 0
        asked = api.ips_seen()
        assert not set(asked) & set(private)
        for ip in public:
            attempts = out.resolved[ip]["attempts"]
            assert asked[ip] <= attempts, f"{ip} asked {asked[ip]} times in {attempts} attempts"
        # private addresses never enter the retry index: no retry request and no resolve request names one
        retries = await read_topic(kafka_bootstrap, settings.results_topic)
        retried = {r.key.decode() for r in retries if json.loads(r.value).get("type") == "retry"}
        requested = {
            r["ip"] for r in resolve_requests(await read_topic(kafka_bootstrap, settings.resolve_topic))
        }
        assert retried and retried <= set(public)
        assert requested == set(public)
        ticks = geo.stats.ticks
        assert ticks and max(t["emitted"] for t in ticks) > 0
        assert all(t["unresolved"] <= len(public) for t in ticks)
