"""An entry's later life on the real broker: newer offline data re-answers old answers in chunks, and IPs
nobody sees any more stop costing anything, then are forgotten with tombstones."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pipeline.app import build, running
from pipeline.cache import timers
from pipeline.devtools.workloads import public_ips
from tests.support.kafka import wait_for
from tests.support.pipeline import Outputs, make_settings, publish_values, read_topic, wait_all

pytestmark = pytest.mark.integration


async def test_newer_offline_data_re_answers_old_entries_in_chunks(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the offline data changes version, every entry it answered is answered again from the new
    data, published, and the sweeps that did it never sent more than a chunk each."""
    monkeypatch.setattr(timers, "SWEEP_EVERY", 1.0)
    monkeypatch.setattr(timers, "SWEEP_CHUNK", 40)
    sent: list[int] = []
    real = timers.VersionSweep.run_sweep

    async def counted(self: timers.VersionSweep) -> int:
        n = await real(self)
        sent.append(n)
        return n

    monkeypatch.setattr(timers.VersionSweep, "run_sweep", counted)
    settings = make_settings(kafka_bootstrap, tmp_path / "w", providers=("offline",))
    ips = public_ips(150, seed=61)
    geo = build(settings)
    source = geo.resolver._offline["offline"].source
    old_version = source.version
    async with running(geo), Outputs(settings) as out:
        await publish_values(
            kafka_bootstrap, settings.events_topic, [json.dumps({"ip": ip}).encode() for ip in ips]
        )
        await wait_all(out, ips, lambda e: e["status"] == "resolved", 60, "resolved by the offline data")
        assert {out.resolved[ip]["data_version"] for ip in ips} == {old_version}
        source.version = "iptocc:9999.0"  # as after an upgrade: same addresses, newer data
        source._lookup = lambda ip: "CA"
        await wait_all(out, ips, lambda e: e["data_version"] == "iptocc:9999.0", 90, "re-answered")
    assert all(out.resolved[ip]["geo"]["country_code"] == "CA" for ip in ips)
    assert all(out.resolved[ip]["status"] == "resolved" for ip in ips)
    assert max(sent) <= 40 and sum(sent) >= len(ips)
    assert geo.stats.reanswered == len(ips)


async def test_ips_nobody_sees_are_no_longer_refreshed_then_forgotten_with_tombstones(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a short stale and forget time, resolved entries whose IP is never seen again are not refreshed
    (no new lookups) and are then deleted: a tombstone on the changelog and on the resolved topic, and the
    table no longer holds them; an IP seen all along is kept (never tombstoned, still in the table)."""
    settings = make_settings(
        kafka_bootstrap,
        tmp_path / "w",
        providers=("offline",),
        retry_interval=1.0,
        refresh_after=1.0,
        stale_after=3.0,
        forget_after=6.0,
    )
    gone, kept = public_ips(40, seed=67), public_ips(1, seed=68)[0]
    geo = build(settings)
    asked: Counter[str] = Counter()  # lookups per IP: `kept` is refreshed all along, so a total says little
    call = geo.resolver._call

    async def counted(ips: Sequence[str]) -> Any:
        asked.update(ips)
        return await call(ips)

    monkeypatch.setattr(geo.resolver, "_call", counted)
    async with running(geo), Outputs(settings) as out:
        await publish_values(
            kafka_bootstrap, settings.events_topic, [json.dumps({"ip": ip}).encode() for ip in gone]
        )

        done = asyncio.Event()

        async def keep_seeing() -> None:  # one event of `kept` every half second: an IP in constant use
            while not done.is_set():
                await publish_values(
                    kafka_bootstrap, settings.events_topic, [json.dumps({"ip": kept}).encode()]
                )
                # the input's pace, not synchronisation; ended by `done`, never cancelled: a cancel that
                # landed inside a publish left its producer's connections for the garbage collector
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), 0.5)

        seeing = asyncio.ensure_future(keep_seeing())
        try:
            await wait_all(out, gone, lambda e: e["status"] == "resolved", 60, "resolved")

            async def forgotten() -> bool:
                await out.poll()
                return set(gone) <= out.tombstones

            await wait_for(forgotten, 60, interval=0.2, message=lambda: f"tombstones {len(out.tombstones)}")
            asked_when_forgotten = {ip: asked[ip] for ip in gone}
            # `kept` was seen all along: past two forget intervals after its first sight, it is still there
            until = time.monotonic() + 2 * settings.forget_after
            await wait_for(lambda: time.monotonic() > until, 3 * settings.forget_after, interval=0.2)
            await out.poll()
        finally:
            done.set()
            await seeing
        assert all(geo.table.get(ip.encode()) is None for ip in gone)
        # refreshes come refresh_after apart and stop once an IP is stale_after unseen: the first lookup and
        # at most stale_after / refresh_after refreshes (refreshed until forgotten, it would be about six)
        most = 1 + int(settings.stale_after / settings.refresh_after)
        assert max(asked[ip] for ip in gone) <= most, f"stale entries kept being refreshed: {asked}"
        assert {ip: asked[ip] for ip in gone} == asked_when_forgotten, "forgotten IPs were looked up"
        assert asked[kept] > 1, "the IP seen all along was never refreshed"
        assert kept not in out.tombstones, "an IP in constant use was forgotten"
        assert geo.table.get(kept.encode()) is not None
    changelog = await read_topic(kafka_bootstrap, f"{settings.app_id}-geo-cache-changelog")
    last = {r.key.decode(): r.value for r in changelog}
    assert all(last[ip] is None for ip in gone)
    assert geo.stats.forgotten >= len(gone)
