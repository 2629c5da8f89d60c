"""The vendor emulator driven by the real download code (providers/updates/fetch.py) over loopback:
MaxMind's basic auth, redirect and SHA-256 file, DB-IP's monthly file, IPinfo's token, and the faults."""

from __future__ import annotations

import time

import pytest

from pipeline.config.secret import Secret
from pipeline.config.settings import Settings
from pipeline.devtools.vendor_emulator import VendorEmulator
from pipeline.providers.updates.builds import BuildError, unpack
from pipeline.providers.updates.fetch import FetchError, fetch
from pipeline.providers.updates.sources import parse_source


def _settings(url: str, key: str = "test-key", token: str = "test-token") -> Settings:
    return Settings.from_env(
        {},
        providers=("mmdb", "offline"),
        data_sources=("maxmind:GeoLite2-City", "dbip:city", "ipinfo:lite"),
        maxmind_account_id="42",
        maxmind_license_key=Secret(key),
        ipinfo_token=Secret(token),
        maxmind_url=url,
        dbip_url=url,
        ipinfo_url=url,
    )


async def _get(settings: Settings, spec: str) -> bytes:
    source = parse_source(spec)
    fetched = await fetch(source, source.requests(settings, time.time()), 10, 64 * 1024 * 1024)
    return unpack(fetched.body, fetched.request.archive, 64 * 1024 * 1024)


async def test_each_vendor_serves_a_database_the_updater_unpacks() -> None:
    """MaxMind (auth, redirect, checksum), DB-IP (this month's .mmdb.gz) and IPinfo (token) each give one
    .mmdb, one download counted per edition."""
    async with VendorEmulator() as vendor:
        settings = _settings(vendor.url)
        for spec in ("maxmind:GeoLite2-City", "dbip:city", "ipinfo:lite"):
            data = await _get(settings, spec)
            assert b"MaxMind.com" in data  # the metadata marker every .mmdb ends with
    assert dict(vendor.downloads) == {"GeoLite2-City": 1, "dbip-city-lite": 1, "ipinfo-lite": 1}


async def test_a_wrong_licence_key_is_one_clear_error_naming_the_setting_and_never_the_key() -> None:
    """A 401 becomes a FetchError marked auth that names GEO_MAXMIND_LICENSE_KEY and holds no secret."""
    async with VendorEmulator() as vendor:
        with pytest.raises(FetchError) as caught:
            await _get(_settings(vendor.url, key="wrong-key-123"), "maxmind:GeoLite2-City")
        with pytest.raises(FetchError) as token:
            await _get(_settings(vendor.url, token="wrong-token-456"), "ipinfo:lite")
    assert caught.value.auth and "GEO_MAXMIND_LICENSE_KEY" in str(caught.value)
    assert "wrong-key-123" not in str(caught.value)
    assert token.value.auth and "wrong-token-456" not in str(token.value) and "REDACTED" in str(token.value)
    assert vendor.refused == 2 and not vendor.downloads


async def test_past_the_vendor_cap_the_answer_is_429() -> None:
    """Downloads past the emulator's daily cap get 429, counted as limited, not served."""
    async with VendorEmulator(daily_cap=1) as vendor:
        settings = _settings(vendor.url)
        await _get(settings, "dbip:city")
        with pytest.raises(FetchError) as caught:
            await _get(settings, "dbip:city")
    assert caught.value.status == 429 and vendor.limited == 1 and vendor.downloads["dbip-city-lite"] == 1


async def test_a_truncated_body_and_a_corrupt_build_are_refused() -> None:
    """A body cut short fails the download; a well-packed non-database unpacks but is no .mmdb."""
    async with VendorEmulator() as vendor:
        settings = _settings(vendor.url)
        vendor.truncate = True
        with pytest.raises((FetchError, BuildError)):
            await _get(settings, "maxmind:GeoLite2-City")
        vendor.truncate, vendor.corrupt = False, True
        data = await _get(settings, "maxmind:GeoLite2-City")
    assert b"MaxMind.com" not in data


async def test_a_new_build_changes_what_is_served() -> None:
    """`new_build` (or the rebuild interval) gives another file with a later build epoch."""
    async with VendorEmulator() as vendor:
        settings = _settings(vendor.url)
        first = await _get(settings, "dbip:city")
        vendor.new_build()
        second = await _get(settings, "dbip:city")
    assert first != second and vendor.build == 1
