"""Offline data kept current on the real broker, against the vendor emulator: one download per cluster,
the same build on every worker, a late worker served from the topic, faults that change nothing, and the
daily cap across restarts.

The "workers" here are the updater each worker runs (`DataUpdater` with its own data dir and its own
`MmdbSource`, as app.build wires them); a full worker taking a build up is the last test."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.app import build, ensure_topics, running
from pipeline.cli import data as data_command
from pipeline.config.secret import Secret
from pipeline.config.settings import Settings
from pipeline.devtools.vendor_emulator import FIRST_EPOCH, VendorEmulator
from pipeline.providers.mmdb import MmdbSource
from pipeline.providers.updates import builds, schedule
from pipeline.providers.updates.service import DataUpdater, managed_paths
from pipeline.web.metrics import GeoCollector
from tests.support.kafka import wait_for
from tests.support.pipeline import Outputs, make_settings, publish_values

pytestmark = pytest.mark.integration
SOURCE = "maxmind-GeoLite2-City"
DAY = 86400


def _settings(bootstrap: str, url: str, data_dir: Path, app_id: str | None = None, **more: Any) -> Settings:
    values: dict[str, Any] = {
        "providers": ("mmdb", "offline"),
        "data_sources": ("maxmind:GeoLite2-City",),
        "maxmind_account_id": "42",
        "maxmind_license_key": Secret("test-key"),
        "maxmind_url": url,
        "data_update_interval": 3600.0,  # later checks come from request() (what `data update` does)
        "data_update_jitter": 0.0,
    }
    values.update(more)
    return make_settings(bootstrap, data_dir, app_id=app_id, **values)


class Member:
    """One worker's updater and the mmdb source it hands builds to."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.source = MmdbSource([], managed=managed_paths(settings))

        async def installed(path: Path) -> None:
            self.source.maybe_reload()

        self.updater = DataUpdater(settings, on_installed=installed, label=str(settings.data_dir))

    def epoch(self) -> str:
        return self.source.version


@contextlib.asynccontextmanager
async def members(settings: Settings, tmp: Path, names: list[str]) -> AsyncIterator[list[Member]]:
    group = [Member(Settings.from_env({}, **{**vars(settings), "data_dir": tmp / n})) for n in names]
    await ensure_topics(settings)
    for m in group:
        await m.updater.start()
    try:
        yield group
    finally:
        for m in group:
            await m.updater.stop()


def on_build(group: list[Member], build: int) -> bool:
    return all(f"@{FIRST_EPOCH + build * DAY}" in m.epoch() for m in group)


def status(group: list[Member]) -> dict[str, Any]:
    return group[0].updater.topic.status(SOURCE)


async def test_three_workers_one_download_each_build_everywhere_and_faults_change_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Three updaters: one download per build, every one on the new build; a later worker with the vendor
    gone loads it from the topic; a corrupt build and a 401 are reported and change nothing."""
    async with VendorEmulator() as vendor:
        settings = _settings(kafka_bootstrap, vendor.url, tmp_path / "base")
        async with members(settings, tmp_path, ["w1", "w2", "w3"]) as group:
            await wait_for(lambda: on_build(group, 0), 60, message=lambda: [m.epoch() for m in group])
            assert sum(vendor.downloads.values()) == 1
            assert sum(m.updater.leader for m in group) == 1

            vendor.new_build()
            asked = await group[1].updater.request()
            await wait_for(lambda: on_build(group, 1), 60, message=lambda: [m.epoch() for m in group])
            assert sum(vendor.downloads.values()) == 2
            first_manifest = group[0].updater.topic.manifest(SOURCE)

            vendor.new_build()
            vendor.corrupt = True
            asked = await group[2].updater.request()
            await wait_for(lambda: status(group).get("at", 0) > asked, 60, message=lambda: status(group))
            assert status(group)["outcome"] == "failed"
            assert "not a valid MaxMind DB" in status(group)["detail"]
            assert on_build(group, 1) and group[0].updater.topic.manifest(SOURCE) == first_manifest

            vendor.corrupt, vendor.key = False, "rotated-key"
            asked = await group[0].updater.request()
            await wait_for(lambda: status(group).get("at", 0) > asked, 60, message=lambda: status(group))
            assert status(group)["outcome"] == "refused"
            assert "GEO_MAXMIND_LICENSE_KEY" in status(group)["detail"]
            assert "rotated" not in json.dumps(status(group)) and "test-key" not in json.dumps(status(group))
            assert on_build(group, 1) and vendor.refused == 1
            served = sum(vendor.downloads.values())
    assert served == 3  # build 0, build 1, the corrupt one; the 401 served nothing
    # the vendor is gone: a worker joining now loads the current build from the topic alone
    async with members(settings, tmp_path, ["late"]) as late:
        await wait_for(lambda: on_build(late, 1), 60, message=lambda: late[0].epoch())
    topic_keys = late[0].updater.topic.values
    chunk_keys = [k for k in topic_keys if k.startswith(f"chunk/{SOURCE}/".encode())]
    assert chunk_keys and all(k.startswith(first_manifest.prefix.encode()) for k in chunk_keys)  # old gone


async def test_the_daily_cap_holds_across_restarts(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Failing downloads are retried with back-off until the cap; restarted workers do not download
    again that day: the count lives on the topic."""
    async with VendorEmulator() as vendor:
        vendor.truncate = True
        settings = _settings(
            kafka_bootstrap, vendor.url, tmp_path / "base", data_daily_cap=3, data_retry_base=0.2,
            data_update_interval=1.0,
        )
        day = schedule.day_of(time.time())
        async with members(settings, tmp_path, ["a", "b"]) as group:
            capped = lambda: status(group).get("outcome") == "capped"  # noqa: E731
            await wait_for(capped, 60, message=lambda: status(group))
            assert group[0].updater.topic.count(SOURCE, day) == 3
        async with members(settings, tmp_path, ["a", "b", "c"]) as again:
            await wait_for(
                lambda: any(m.updater.checks >= 3 for m in again), 60,
                message=lambda: [m.updater.checks for m in again],
            )
        served = sum(vendor.downloads.values())
    assert served == 3 and again[0].updater.topic.count(SOURCE, day) == 3


async def test_a_worker_answers_again_from_a_new_build(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A full worker with GEO_DATA_SOURCES: first sights answered from the downloaded build; after a new
    build the entries that build 0 answered are answered again from build 1 (the version sweep)."""
    async with VendorEmulator() as vendor:
        settings = _settings(kafka_bootstrap, vendor.url, tmp_path / "w")
        geo = build(settings)  # the chain mmdb,offline: entries answered from the downloaded file
        source = geo.resolver._offline["mmdb"]
        assert geo.updater is not None
        async with running(geo), Outputs(settings) as out:
            await wait_for(lambda: f"@{FIRST_EPOCH}" in source.version, 60, message=lambda: source.version)
            await publish_values(kafka_bootstrap, settings.events_topic, [b'{"ip": "8.8.8.8"}'])

            async def country(code: str) -> bool:
                await out.poll()
                entry = out.resolved.get("8.8.8.8") or {}
                return (entry.get("geo") or {}).get("country_code") == code

            await wait_for(lambda: country("US"), 60, message="8.8.8.8 from build 0")
            vendor.new_build()
            await geo.updater.request()
            newer = f"@{FIRST_EPOCH + DAY}"
            await wait_for(lambda: newer in source.version, 60, message=lambda: source.version)
            await wait_for(lambda: country("DE"), 60, message="8.8.8.8 answered again from build 1")
            scraped = {m.name: m for m in GeoCollector(geo).collect()}
        [age] = scraped["geo_data_age_seconds"].samples
        assert age.labels == {"source": SOURCE} and 0 < age.value < 10 * DAY  # the emulator's: days old
        assert [s.value for s in scraped["geo_data_expired"].samples] == [0.0]
    assert builds.CHUNK_BYTES < 1024 * 1024


async def test_data_update_one_shot_publishes_then_stops_at_the_cap(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`geo-pipeline data update` with no worker running: it takes the lease, downloads once, publishes
    and installs (exit 0); run again past the cap it downloads nothing and exits 1 naming the cap."""
    async with VendorEmulator() as vendor:
        settings = _settings(kafka_bootstrap, vendor.url, tmp_path / "cli", data_daily_cap=1)
        assert await data_command.update(settings, 60) == 0
        assert (tmp_path / "cli" / "offline-data" / f"{SOURCE}.mmdb").is_file()
        first = capsys.readouterr().out
        assert await data_command.update(settings, 60) == 1
        second = capsys.readouterr().out
    assert sum(vendor.downloads.values()) == 1
    assert f"{SOURCE}: published" in first and "downloads today 1/1" in first
    assert f"{SOURCE}: capped daily cap reached (1/1" in second
