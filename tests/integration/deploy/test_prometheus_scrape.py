"""A real Prometheus server scrapes two real workers under traffic: the recording rules of
deploy/prometheus, as its HTTP API returns them, match what the workers themselves count."""

from __future__ import annotations

import re
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.kafka import wait_for
from tests.support.pipeline import make_settings, publish, workload
from tests.support.prometheus import HTTP_TIMEOUT, running_prometheus
from tests.support.workers import WorkerProcess, running_workers

pytestmark = pytest.mark.integration

EVENTS, IPS = 6_000, 300  # enough for every input partition and both workers, drained in seconds
DRAIN_TIMEOUT = 60.0  # seconds for two workers to enrich EVENTS (a few seconds measured)
FOLLOW_TIMEOUT = 30.0  # seconds for the recorded values to reach the workers' counts (1 s steps)
URL = re.compile(rb"geo-pipeline worker ready: (http://\S+)")


def api_url(worker: WorkerProcess) -> str:
    """The worker's HTTP API, from the ready line it printed."""
    found = URL.search(worker.log_path.read_bytes())
    assert found, worker.tail()
    return found.group(1).decode()


async def counters(urls: list[str]) -> dict[str, float]:
    """The workers' own counters, summed: sample name (with labels for the country counts) -> value."""
    total: dict[str, float] = {}
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session:
        for url in urls:
            async with session.get(f"{url}/metrics") as reply:
                text = await reply.text()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    key = sample.name + (f"/{sample.labels['country']}" if "country" in sample.labels else "")
                    total[key] = total.get(key, 0.0) + sample.value
    return total


async def test_recording_rules_match_the_workers_own_counters(kafka_bootstrap: str, tmp_path: Path) -> None:
    """After the traffic, Prometheus' enriched and input sums, cumulative hit ratio, ready workers and
    events by country equal the workers' own /metrics; while it flows, the enriched rate is positive."""
    settings = make_settings(kafka_bootstrap, tmp_path)
    started = time.monotonic()
    async with running_workers(settings, tmp_path, n=2) as workers:
        ready_after = time.monotonic() - started
        urls = [api_url(w) for w in workers]
        targets = [url.removeprefix("http://") for url in urls]
        async with running_prometheus(tmp_path / "prometheus", targets) as prom:
            async def both_up() -> bool:  # each target is up once Prometheus has scraped it
                return await prom.scalar('sum(up{job="geo-pipeline"})') == 2

            await wait_for(both_up, 15, interval=0.5, message="two targets up")
            values = workload(EVENTS, IPS)
            await publish(kafka_bootstrap, settings.events_topic, values)

            async def drained() -> dict[str, float] | None:
                own = await counters(urls)
                return own if own["geo_events_in_total"] == len(values) else None

            rate_seen = await wait_for(
                lambda: prom.scalar("job:geo_events_enriched:rate1m > 0"),
                DRAIN_TIMEOUT,
                interval=0.5,
                message="a positive enriched rate",
            )
            own = await wait_for(drained, DRAIN_TIMEOUT, interval=0.5, message="every event counted")
            hits, misses = own["geo_near_cache_hits_total"], own["geo_near_cache_misses_total"]
            expected = {
                "job:geo_events_in:sum": own["geo_events_in_total"],
                "job:geo_events_enriched:sum": own["geo_events_enriched_total"],
                "job:geo_first_sights:sum": misses,
                "job:geo_near_cache_hit_ratio:total": hits / (hits + misses),
                "job:geo_workers_ready:sum": 2.0,
                "sum(geo_events_by_country_total)": own["geo_events_enriched_total"],
            }

            async def recorded() -> dict[str, float | None]:
                return {expr: await prom.scalar(expr) for expr in expected}

            async def matching() -> bool:
                got = await recorded()
                return all(v is not None and abs(v - expected[k]) < 1e-9 for k, v in got.items())

            await wait_for(matching, FOLLOW_TIMEOUT, interval=0.5, message=lambda: f"{expected}")
            by_country = {
                r["metric"]["country"]: float(r["value"][1])
                for r in await prom.query(
                    'sum by (country) (geo_events_by_country_total{job="geo-pipeline"})'
                )
            }
    own_by_country = {
        k.split("/", 1)[1]: v for k, v in own.items() if k.startswith("geo_events_by_country_total/")
    }
    assert by_country == own_by_country
    assert "private" in by_country and sum(len(c) == 2 for c in by_country) >= 10  # many countries, bounded
    assert (
        rate_seen
        and own["geo_events_enriched_total"] + own.get("geo_events_dead_lettered_total", 0) == EVENTS
    )
    print(
        f"workers ready after {ready_after:.1f}s; {own['geo_events_enriched_total']:.0f} enriched, "
        f"hit ratio {hits / (hits + misses):.3f}, {len(by_country)} country labels"
    )
