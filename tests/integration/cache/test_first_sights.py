"""First sights in batches on the real broker: the cache agent applies its input a batch at a time, and
still writes each entry's changelog record to the partition of the record it came from, skips a malformed
record alone, and loses no first sight when the worker is killed with SIGKILL in the middle of a burst."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipeline.app import build, ensure_topics, running
from pipeline.devtools.workloads import public_ips
from pipeline.kafka.partitioner import key_hash
from pipeline.kafka.topics import changelog_topic
from pipeline.messages import encode_seen
from tests.support.chaos import Crew, audit_table
from tests.support.kafka import produce, wait_for
from tests.support.pipeline import Outputs, make_settings, publish_values, read_topic

pytestmark = pytest.mark.integration

BURST = 20_000  # distinct IPs: at the old ~1,000 first sights/s, a kill lands well inside the burst


async def test_a_batch_with_repeats_and_a_malformed_record_writes_each_changelog_to_its_partition(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A backlog of seen records on two partitions, read by the agent in a batch: IPs repeated, a
    malformed record in the middle: every IP gets one entry, every changelog record of an IP lies on the
    partition its seen records came from, and only the malformed record is skipped (counted)."""
    settings = make_settings(kafka_bootstrap, tmp_path / "w", partitions=2)
    ips = public_ips(40, seed=91)
    by_partition = {p: [ip for ip in ips if key_hash(ip.encode()) % 2 == p][:3] for p in (0, 1)}
    assert all(len(chosen) == 3 for chosen in by_partition.values())
    now = time.time()
    records = []
    for round_ in range(3):  # each IP three times, interleaved across both partitions
        for p in (0, 1):
            records += [(ip.encode(), encode_seen(now, f"w{round_}", first=True)) for ip in by_partition[p]]
        if round_ == 1:
            records.append((by_partition[1][0].encode(), b"{not a seen record"))  # skipped, counted
    mine = by_partition[0] + by_partition[1]
    await ensure_topics(settings)
    await produce(kafka_bootstrap, settings.seen_topic, records)  # murmur2: each IP on its own partition
    geo = build(settings)
    async with running(geo), Outputs(settings) as out:  # the backlog is read in batches of both partitions

        async def all_published() -> bool:
            await out.poll()
            return all(ip in out.resolved for ip in mine)

        await wait_for(all_published, 60, interval=0.1, message=lambda: f"{sorted(out.resolved)}")
        assert geo.cache.stats.malformed == 1
        assert geo.cache.stats.entries_created == len(mine)
        assert geo.cache.stats.errors == 0
    changelog = [r for r in await read_topic(kafka_bootstrap, changelog_topic(settings)) if r.key]
    partitions: dict[str, set[int]] = {}
    for record in changelog:
        partitions.setdefault(record.key.decode(), set()).add(record.partition)
    assert set(mine) <= set(partitions), f"no changelog record for {set(mine) - set(partitions)}"
    misplaced = {ip: ps for ip, ps in partitions.items() if ps != {key_hash(ip.encode()) % 2}}
    assert misplaced == {}, f"changelog records on another partition than their input's: {misplaced}"
    assert all(json.loads(r.value)["ip"] == r.key.decode() for r in changelog if r.value)


@pytest.mark.slow
async def test_kill_9_in_the_middle_of_a_burst_of_first_sights_loses_none(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A burst of distinct IPs at one worker, killed with SIGKILL while it creates their entries (its open
    batch and unsent records lost) and restarted on its data dir: afterwards every IP has exactly one
    entry in the table (no index key out of step), on the changelog and on the resolved topic."""
    settings = make_settings(kafka_bootstrap, tmp_path, partitions=2)
    ips = public_ips(BURST, seed=93)
    await ensure_topics(settings)
    crew = Crew(settings, tmp_path / "crew", 1)
    try:
        await crew.ready()
        async with Outputs(settings) as out:
            await publish_values(
                kafka_bootstrap, settings.events_topic, [json.dumps({"ip": ip}).encode() for ip in ips]
            )

            async def creating() -> bool:
                await out.poll()
                return len(out.resolved) >= BURST // 10

            await wait_for(creating, 120, interval=0.05, message=lambda: f"published {len(out.resolved)}")
            at_kill = len(out.resolved)
            crew.kill(0)
            crew.restart(0)
            await crew.ready()

            async def all_published() -> bool:
                await out.poll()
                return len(out.resolved) >= BURST

            await wait_for(all_published, 240, interval=0.2, message=lambda: f"published {len(out.resolved)}")
        await crew.stop(0)  # SIGTERM: the table is read at rest
        audit = audit_table(crew.workers[0].data_dir)
    finally:
        crew.close()
    changelog = {
        r.key.decode(): r.value for r in await read_topic(kafka_bootstrap, changelog_topic(settings))
    }
    missing = sorted(set(ips) - set(audit.entries))
    unlogged = sorted(ip for ip in ips if changelog.get(ip) is None)
    print(
        f"\nkill -9 mid-burst: killed at {at_kill:,} of {BURST:,} IPs published; {audit.line()}; "
        f"missing from the table {len(missing)}, from the changelog {len(unlogged)}"
    )
    assert at_kill < BURST, "the burst was over before the kill"
    assert missing == [] and unlogged == []
    assert audit.doubles == [] and audit.drift == 0
