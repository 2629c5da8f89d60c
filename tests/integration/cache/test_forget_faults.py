"""Forgetting under kill -9 on the real broker: a worker killed between the store's delete and the
tombstones must still send them once restarted, so no IP is left published while its table entry is gone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.app import ensure_topics
from pipeline.devtools.workloads import public_ips
from pipeline.kafka.topics import changelog_topic
from tests.support.chaos import Crew, audit_table
from tests.support.kafka import wait_for
from tests.support.pipeline import Outputs, make_settings, publish_values, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FORGET_IPS = 2_000
KILLS = 3


async def test_kill_9_while_forgetting_leaves_no_ip_published_without_its_entry(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """With short stale and forget times, one worker is killed with SIGKILL three times while tombstones
    go out and restarted on its data dir: afterwards no IP the table forgot still has a value as its last
    record on the resolved topic (consumers would keep it) or on the changelog (a rebuild restores it)."""
    settings = make_settings(
        kafka_bootstrap,
        tmp_path,
        partitions=2,
        retry_interval=1.0,
        refresh_after=1.0,
        stale_after=4.0,
        forget_after=8.0,
    )
    ips = public_ips(FORGET_IPS, seed=71)
    await ensure_topics(settings)
    crew = Crew(settings, tmp_path / "crew", 1)
    kills_mid_forget = 0
    try:
        await crew.ready()
        async with Outputs(settings) as out:
            await publish_values(
                kafka_bootstrap, settings.events_topic, [json.dumps({"ip": ip}).encode() for ip in ips]
            )

            async def published() -> bool:
                await out.poll()
                return len(out.resolved) == len(ips)

            await wait_for(published, 60, interval=0.1, message=lambda: f"published {len(out.resolved)}")
            for _ in range(KILLS):
                before = len(out.tombstones)

                async def forgetting(before: int = before) -> bool:
                    await out.poll()
                    return len(out.tombstones) > before or not out.resolved

                await wait_for(forgetting, 60, interval=0.05, message="tombstones rising")
                if not out.resolved:
                    break  # all forgotten before this kill: nothing left to interrupt
                kills_mid_forget += 1
                crew.kill(0)
                crew.restart(0)
                await crew.ready()

            # the last restart replays what its predecessor left uncommitted: forgetting goes on after it
            after = len(out.tombstones)

            async def going_on(after: int = after) -> bool:
                await out.poll()
                return len(out.tombstones) > after or not out.resolved

            await wait_for(going_on, 60, interval=0.1, message="tombstones after the last restart")
        await crew.stop(0)  # SIGTERM: flushes what it sent; the table is read at rest
        audit = audit_table(crew.workers[0].data_dir)
    finally:
        crew.close()
    mine = set(ips)
    resolved = {r.key.decode(): r.value for r in await read_topic(kafka_bootstrap, settings.resolved_topic)}
    changelog = {
        r.key.decode(): r.value for r in await read_topic(kafka_bootstrap, changelog_topic(settings))
    }
    in_table = set(audit.entries) & mine
    forgotten = mine - in_table
    still_published = sorted(ip for ip in forgotten if resolved.get(ip) is not None)  # consumers keep these
    restorable = sorted(ip for ip in forgotten if changelog.get(ip) is not None)  # a rebuild brings back
    print(
        f"\nforget under kill -9: {crew.kills} kills ({kills_mid_forget} mid-forget) of {len(ips)} IPs; "
        f"forgotten {len(forgotten)}, of which still published {len(still_published)} and still in the "
        f"changelog {len(restorable)}; {audit.line()}"
    )
    assert kills_mid_forget >= 1, "no kill landed while tombstones went out"
    assert forgotten, "nothing was forgotten"
    assert still_published == [], f"{len(still_published)} IPs forgotten by the table but still published"
    assert restorable == [], f"{len(restorable)} IPs forgotten by the table whose changelog ends with a value"
