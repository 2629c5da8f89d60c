"""What an event carries does not depend on a worker's memory: with a near cache of 100 entries, every event
of 1,000 IPs the table resolved carries the table's entry, before and after a restart (the worker's replica
of the resolved topic on disk serves what the near cache lost, and a restart reads only the delta)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline.app import GeoApp, build, ensure_topics, running
from pipeline.config.settings import Settings
from pipeline.devtools.fake_ipapi import IpApiServer, ServerConfig
from pipeline.devtools.workloads import public_ips, publish
from tests.support.kafka import wait_for
from tests.support.pipeline import WINDOW, Outputs, make_settings

pytestmark = pytest.mark.integration

IPS = 1_000
NEAR = 100  # near-cache entries: a tenth of the IPs in use


def small_near_cache(kafka_bootstrap: str, tmp_path: Path, api: IpApiServer) -> Settings:
    """One worker asking the fake ip-api, its near cache of NEAR entries."""
    return make_settings(
        kafka_bootstrap,
        tmp_path / "w",
        providers=("ipapi", "offline"),
        ipapi_url=api.url,
        budget_window=WINDOW,
        near_cache_size=NEAR,
    )


async def produce_round(settings: Settings, ips: list[str], n: int) -> None:
    events = [json.dumps({"ip": ip, "round": n}).encode() for ip in ips]
    await publish(settings.kafka_bootstrap, settings.events_topic, events)


async def round_statuses(out: Outputs, n: int, timeout: float = 120, count: int = IPS) -> Counter[str]:
    """Follow the enriched topic until every event of round `n` is there; their statuses, counted."""

    def of_round() -> list[dict[str, Any]]:
        return [doc for doc in out.enriched if doc["event"].get("round") == n]

    async def all_there() -> bool:
        await out.poll()
        return len(of_round()) >= count

    await wait_for(all_there, timeout, interval=0.1, message=lambda: f"round {n}: {len(of_round())}/{count}")
    return Counter(doc["geo"]["status"] for doc in of_round())


async def resolved_everywhere(geo: GeoApp, out: Outputs, ips: list[str]) -> None:
    """Wait until the resolved topic and this worker's replica both hold every IP as resolved."""

    async def done() -> bool:
        await out.poll()
        if not all(out.resolved.get(ip, {}).get("status") == "resolved" for ip in ips):
            return False
        return all(b'"status":"resolved"' in (geo.hotpath.replica.get(ip.encode()) or b"") for ip in ips)

    await wait_for(done, 120, interval=0.2, message=lambda: f"resolved: {out.statuses()}")


async def test_every_event_of_a_known_ip_carries_the_tables_entry_whatever_the_near_cache_size(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """GEO_NEAR_CACHE_SIZE=100 and 1,000 IPs resolved through the fake ip-api: when the 1,000 are produced
    again, and again after a worker restart, all 2 x 1,000 events carry status `resolved`; the restart
    reads only the delta of the resolved topic, not all of it again."""
    ips = public_ips(IPS, seed=181)
    async with IpApiServer(ServerConfig(window=WINDOW)) as api:
        settings = small_near_cache(kafka_bootstrap, tmp_path, api)
        await ensure_topics(settings)  # before Outputs subscribes: an auto-created topic breaks the contract
        async with Outputs(settings) as out:
            geo = build(settings)
            async with running(geo):
                await produce_round(settings, ips, 0)
                await round_statuses(out, 0)
                await resolved_everywhere(geo, out, ips)
                await produce_round(settings, ips, 1)
                again = await round_statuses(out, 1)
                # the stats count a batch after its commit, a moment after its outputs are readable
                await wait_for(lambda: geo.stats.consumed >= 2 * IPS, 30, message=geo.stats.line)
                assert len(geo.near) <= NEAR
                assert geo.stats.recalled >= IPS - NEAR
            published = out.resolved_count
            restarted = build(settings)
            async with running(restarted):
                assert restarted.hotpath.replica.rebuilt is False
                await produce_round(settings, ips, 2)
                after_restart = await round_statuses(out, 2)
                caught_up = restarted.hotpath.catch_up_records
    assert again == Counter({"resolved": IPS})
    assert after_restart == Counter({"resolved": IPS})
    assert caught_up < published  # the delta, not the whole topic again


async def test_after_a_restart_the_hot_path_serves_known_ips_while_the_table_recovers(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A restarted worker whose table recovery is held back enriches every event of 200 resolved IPs with
    status `resolved` from its replica before the app has finished starting."""
    ips = public_ips(200, seed=182)
    async with IpApiServer(ServerConfig(window=WINDOW)) as api:
        settings = small_near_cache(kafka_bootstrap, tmp_path, api)
        await ensure_topics(settings)
        async with Outputs(settings) as out:
            geo = build(settings)
            async with running(geo):
                await produce_round(settings, ips, 0)
                await round_statuses(out, 0, count=len(ips))
                await resolved_everywhere(geo, out, ips)
            restarted = build(settings)
            app: Any = restarted.app
            release = asyncio.Event()
            recovery_completed = app._wait_for_table_recovery_completed  # what Faust's on_started awaits

            async def held_back() -> bool:
                await release.wait()
                return bool(await recovery_completed())

            app._wait_for_table_recovery_completed = held_back
            starting = asyncio.create_task(app.start())
            try:
                hotpath = restarted.hotpath
                await wait_for(
                    lambda: hotpath._consumer is not None and bool(hotpath._consumer.assignment()),
                    60,
                    message="the restarted hot path to be assigned",
                )
                await produce_round(settings, ips, 1)
                statuses = await round_statuses(out, 1, count=len(ips))
                still_starting = not starting.done()
            finally:
                release.set()
                await starting
                await app.stop()
    assert still_starting
    assert statuses == Counter({"resolved": len(ips)})
