"""The streaming path end to end on the real broker with RocksDB tables: ingest, cache, outputs, DLQ."""

from __future__ import annotations

import json
from pathlib import Path

import iptocc
import pytest

from pipeline.addresses import AddressKind, classify, normalise_ip
from pipeline.app import build, running
from pipeline.errors import BadEvent
from pipeline.hotpath.routing import parse_event
from pipeline.hotpath.shapes import public_view
from tests.support.kafka import wait_for
from tests.support.pipeline import CountingProvider, Outputs, make_settings, publish, workload

pytestmark = pytest.mark.integration


def expected_valid(events: list[bytes]) -> list[bytes]:
    valid = []
    for raw in events:
        try:
            parse_event(raw, 65536)
        except BadEvent:
            continue
        valid.append(raw)
    return valid


def public_ips(events: list[bytes]) -> set[str]:
    ips = {parse_event(raw, 65536).ip for raw in expected_valid(events)}
    return {ip for ip in ips if classify(ip) is AddressKind.GLOBAL}


@pytest.mark.slow
async def test_every_event_is_enriched_or_dead_lettered_and_each_ip_resolved_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """20,000 events over 2,000 IPs: in = enriched + dlq, events pass through verbatim, each public IP is
    looked up exactly once and ends resolved with the offline country."""
    settings = make_settings(kafka_bootstrap, tmp_path / "w1")
    events = workload(20_000, 2_000)
    valid, publics = expected_valid(events), public_ips(events)
    provider = CountingProvider()
    geo = build(settings, providers=[provider])
    async with running(geo), Outputs(settings) as out:
        await publish(kafka_bootstrap, settings.events_topic, events)
        await _drain(out, len(events), publics)
    assert len(out.enriched) == len(valid)
    assert len(out.dlq) + len(out.enriched) == len(events)
    assert all(d["reason"] and d["topic"] == settings.events_topic for d in out.dlq)
    assert {d["original_b64"] for d in out.dlq} >= {"bm90LWFuLWlw"}  # b"not-an-ip" kept byte for byte
    for item in out.enriched:
        event = item["event"]
        assert item["ip"] == normalise_ip(event["ip"])
        assert item["geo"]["status"] in {"pending", "resolved", "unresolved", "private"}
    assert set(provider.calls) == publics
    assert max(provider.calls.values()) == 1
    for ip in publics:
        entry = out.resolved[ip]
        assert entry["status"] in {"resolved", "unresolved"}
        assert entry["geo"]["country_code"] == (iptocc.country_code(ip) or None)


async def test_known_ips_skip_the_second_hop_and_carry_the_tables_entry(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Once an IP's entry is on the resolved topic, its events are enriched by the hot path's near cache,
    with exactly the entry the table holds, and nothing is looked up again."""
    settings = make_settings(kafka_bootstrap, tmp_path / "w")
    events = workload(600, 120, seed=7)
    ips = {parse_event(raw, 65536).ip for raw in expected_valid(events)}
    provider = CountingProvider()
    geo = build(settings, providers=[provider])
    async with running(geo), Outputs(settings) as out:
        await publish(kafka_bootstrap, settings.events_topic, events)
        await _drain(out, len(events), public_ips(events))
        await wait_for(
            lambda: all(geo.near.get(ip.encode()) for ip in ips),
            30,
            message=lambda: f"near cache holds {len(geo.near)} of {len(ips)} IPs",
        )
        hits, lookups = geo.stats.hits, sum(provider.calls.values())
        second = [json.dumps({"ip": ip, "round": 2}).encode() for ip in sorted(ips)]
        await publish(kafka_bootstrap, settings.events_topic, second, seed=3)

        def round_two() -> list[dict[str, object]]:
            return [e for e in out.enriched if e["event"].get("round") == 2]

        async def served() -> bool:
            await out.poll()
            return len(round_two()) == len(second)

        await wait_for(served, 60, interval=0.05, message=lambda: f"round two: {len(round_two())}")
        # the counters move after the commit, a moment after the records are visible
        await wait_for(lambda: geo.stats.hits - hits == len(second), 10, message=lambda: geo.stats.line())
        assert sum(provider.calls.values()) == lookups
        for item in round_two():
            assert item["geo"] == json.loads(public_view(geo.table[str(item["ip"]).encode()]))


def _settled(out: Outputs, total: int, publics: set[str]) -> bool:
    done = {ip for ip, e in out.resolved.items() if e["status"] in ("resolved", "unresolved")}
    return len(out.enriched) + len(out.dlq) >= total and publics <= done


async def _drain(out: Outputs, total: int, publics: set[str], timeout: float = 120) -> None:
    async def settled() -> bool:
        await out.poll()
        return _settled(out, total, publics)

    await wait_for(
        settled,
        timeout,
        interval=0.05,
        message=lambda: f"enriched={len(out.enriched)} dlq={len(out.dlq)} statuses={out.statuses()}",
    )


async def test_restart_keeps_the_cache_and_a_fresh_data_dir_rebuilds_it_from_the_changelog(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Restarts on the same data dir and on an empty one both answer from the cache: no lookups, every
    replayed event a near-cache hit, nothing from earlier runs enriched twice."""
    settings = make_settings(kafka_bootstrap, tmp_path / "a")
    events = workload(1_500, 300, seed=5)
    publics = public_ips(events)
    first = CountingProvider()
    async with running(build(settings, providers=[first])), Outputs(settings) as out:
        await publish(kafka_bootstrap, settings.events_topic, events)
        await _drain(out, len(events), publics)
    assert set(first.calls) == publics
    before = dict(out.resolved)

    valid = len(expected_valid(events))
    for round_no, data_dir in enumerate((tmp_path / "a", tmp_path / "fresh"), start=1):
        again = CountingProvider()
        restarted = make_settings(
            kafka_bootstrap,
            data_dir,
            app_id=settings.app_id,
            events_topic=settings.events_topic,
            dlq_topic=settings.dlq_topic,
            enriched_topic=settings.enriched_topic,
            resolved_topic=settings.resolved_topic,
            resolve_topic=settings.resolve_topic,
        )
        geo = build(restarted, providers=[again])
        async with running(geo, timeout=120), Outputs(settings) as out2:
            for ip in list(publics)[:50]:
                assert geo.table.get(ip.encode()) is not None, (
                    f"{ip} missing after restart from {data_dir.name}"
                )
            replay = [json.dumps({"ip": ip, "round": data_dir.name}).encode() for ip in sorted(publics)]
            await publish(kafka_bootstrap, settings.events_topic, replay, seed=9)

            async def replayed(
                out2: Outputs = out2, name: str = data_dir.name, want: int = len(replay)
            ) -> bool:
                await out2.poll()
                return sum(e["event"].get("round") == name for e in out2.enriched) == want

            await wait_for(replayed, 60, interval=0.05, message="replayed events enriched")
        assert again.calls == {}, f"restart from {data_dir.name} re-resolved {sum(again.calls.values())} IPs"
        # ingest waited for the near cache to catch up with geo-resolved: every replayed IP was a hit
        assert geo.hotpath.caught_up.is_set() and geo.stats.hits == len(replay)
        # a clean stop committed what was delivered: nothing from earlier runs was enriched twice
        async with Outputs(settings) as out3:
            total = valid + round_no * len(replay)

            async def all_read(out3: Outputs = out3, total: int = total) -> bool:
                await out3.poll()
                return len(out3.enriched) >= total

            await wait_for(all_read, 30, interval=0.05, message=lambda: f"enriched {len(out3.enriched)}")
            assert len(out3.enriched) == total
        hits = [e for e in out2.enriched if e["event"].get("round") == data_dir.name]
        assert hits and all(e["geo"]["status"] == before[e["ip"]]["status"] for e in hits)
        assert any(e["geo"]["status"] == "resolved" for e in hits)
        assert {ip: e["geo"] for ip, e in out2.resolved.items()} == {ip: e["geo"] for ip, e in before.items()}
