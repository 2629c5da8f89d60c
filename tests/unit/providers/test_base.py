"""Providers without a network: offline provider, chain fallback rules, tick capacity."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib.metadata import version

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.cache.timers import tick_capacity
from pipeline.config.limits import FREE_TIER_REQUESTS, FREE_TIER_WINDOW
from pipeline.models import GeoData, LookupResult, PermanentFailure, Resolved, TransientFailure
from pipeline.providers.base import (
    IptoccSource,
    OfflineProvider,
    OfflineSource,
    ProviderChain,
    country_name,
    merge_fallback,
    offline_result,
)
from pipeline.providers.ipapi import MAX_BATCH

PURE = settings(database=None)
FULL = GeoData(country_code="US", country_name="United States", city="Mountain View", asn=15169)
OFFLINE_US = GeoData(country_code="US", country_name="United States")


class FakeProvider:
    """A provider answering from a fixed table, recording every batch it was asked."""

    def __init__(self, name: str, answers: dict[str, LookupResult], max_batch: int = 100) -> None:
        self.name = name
        self.max_batch = max_batch
        self.answers = answers
        self.calls: list[list[str]] = []

    async def resolve(self, ips: Sequence[str]) -> dict[str, LookupResult]:
        self.calls.append(list(ips))
        return {ip: self.answers[ip] for ip in ips if ip in self.answers}


def run(chain: ProviderChain | OfflineProvider, ips: Sequence[str]) -> dict[str, LookupResult]:
    return asyncio.run(chain.resolve(ips))


# --- OfflineProvider ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "code", "name"),
    [
        ("8.8.8.8", "US", "United States"),
        ("1.1.1.1", "AU", "Australia"),
        ("2001:4860:4860::8888", "US", "United States"),
    ],
)
def test_offline_provider_answers_known_public_ip_with_country_name(ip: str, code: str, name: str) -> None:
    """The offline provider resolves a known public IP to its registry country and the country's name."""
    result = run(OfflineProvider(), [ip])[ip]
    assert result == Resolved(
        GeoData(country_code=code, country_name=name), "offline", OfflineProvider().source.version
    )
    assert result.version is not None and result.version.startswith("iptocc:")


def test_offline_provider_without_data_is_transient() -> None:
    """An address the registry data does not cover is a transient failure, not a guess."""
    result = OfflineProvider().lookup("10.0.0.1")
    assert isinstance(result, TransientFailure)
    assert result.provider == "offline" and result.geo is None


def test_offline_provider_answers_every_ip_of_a_batch() -> None:
    """resolve returns exactly one result per requested IP."""
    ips = ["8.8.8.8", "1.1.1.1", "10.0.0.1"]
    assert set(run(OfflineProvider(), ips)) == set(ips)


def test_iptocc_source_answers_geo_or_none_and_names_its_package_version() -> None:
    """The iptocc source gives country and name for a known IP, None for an unknown one, and its version
    is the installed iptocc package version."""
    source: OfflineSource = IptoccSource()
    assert source.name == "iptocc"
    assert source.version == f"iptocc:{version('iptocc')}"
    assert source.lookup("1.1.1.1") == GeoData(country_code="AU", country_name="Australia")
    assert source.lookup("10.0.0.1") is None


def test_iptocc_source_answers_one_country_with_one_shared_answer() -> None:
    """Two IPs of one country get the same (immutable) answer object, equal to a freshly built one, and
    another country its own."""
    source = IptoccSource()
    first, second = source.lookup("8.8.8.8"), source.lookup("8.8.4.4")
    assert first is second and first == GeoData(country_code="US", country_name="United States")
    assert source.lookup("1.1.1.1") == GeoData(country_code="AU", country_name="Australia")


@pytest.mark.parametrize(
    ("geo", "expected"),
    [
        (OFFLINE_US, Resolved(OFFLINE_US, "src")),
        (None, TransientFailure("miss", "src")),
        (GeoData(asn=15169), TransientFailure("miss", "src")),
    ],
    ids=["country", "none", "no-country"],
)
def test_offline_result_is_resolved_only_with_a_country(geo: GeoData | None, expected: LookupResult) -> None:
    """An offline answer resolves only with a country; otherwise it is a geo-less transient miss."""
    assert offline_result(geo, "src", "miss") == expected


def test_country_name_falls_back_to_upper_case_code() -> None:
    """Known codes map to names (case-insensitive); unknown codes come back as the upper-case code."""
    assert country_name("de") == "Germany"
    assert country_name("xk") == "XK"


# --- ProviderChain --------------------------------------------------------------------------------------


def test_chain_transient_first_with_fallback_geo_stays_transient_and_carries_geo() -> None:
    """A transient failure of the first provider is kept (so it retries) with the fallback's geo attached."""
    first = FakeProvider("ipapi", {"8.8.8.8": TransientFailure("HTTP 429", "ipapi")})
    second = FakeProvider("offline", {"8.8.8.8": Resolved(OFFLINE_US, "offline")})
    results = run(ProviderChain([first, second]), ["8.8.8.8"])
    assert results == {"8.8.8.8": TransientFailure("HTTP 429", "ipapi", OFFLINE_US)}
    assert second.calls == [["8.8.8.8"]]


def test_chain_permanent_from_first_is_not_overridden_or_forwarded() -> None:
    """A permanent failure from the first provider ends the chain: the fallback is never asked."""
    first = FakeProvider("ipapi", {"192.0.0.9": PermanentFailure("reserved range", "ipapi")})
    second = FakeProvider("offline", {"192.0.0.9": Resolved(OFFLINE_US, "offline")})
    results = run(ProviderChain([first, second]), ["192.0.0.9"])
    assert results == {"192.0.0.9": PermanentFailure("reserved range", "ipapi")}
    assert second.calls == []


def test_chain_resolved_from_first_is_kept() -> None:
    """A full answer from the first provider is returned as is; the fallback is not asked."""
    first = FakeProvider("ipapi", {"8.8.8.8": Resolved(FULL, "ipapi")})
    second = FakeProvider("offline", {"8.8.8.8": Resolved(OFFLINE_US, "offline")})
    assert run(ProviderChain([first, second]), ["8.8.8.8"]) == {"8.8.8.8": Resolved(FULL, "ipapi")}
    assert second.calls == []


def test_chain_mixed_batch_only_transient_ips_go_to_fallback() -> None:
    """In one batch, only the transiently failed IPs are sent to the next provider."""
    first = FakeProvider(
        "ipapi",
        {
            "8.8.8.8": Resolved(FULL, "ipapi"),
            "1.1.1.1": TransientFailure("timeout", "ipapi"),
            "192.0.0.9": PermanentFailure("reserved range", "ipapi"),
            "9.9.9.9": TransientFailure("timeout", "ipapi"),
        },
    )
    second = FakeProvider(
        "offline",
        {
            "1.1.1.1": Resolved(GeoData(country_code="AU"), "offline"),
            "9.9.9.9": TransientFailure("no country in offline data", "offline"),
        },
    )
    ips = ["8.8.8.8", "1.1.1.1", "192.0.0.9", "9.9.9.9"]
    results = run(ProviderChain([first, second]), ips)
    assert second.calls == [["1.1.1.1", "9.9.9.9"]]
    assert results == {
        "8.8.8.8": Resolved(FULL, "ipapi"),
        "1.1.1.1": TransientFailure("timeout", "ipapi", GeoData(country_code="AU")),
        "192.0.0.9": PermanentFailure("reserved range", "ipapi"),
        "9.9.9.9": TransientFailure("timeout", "ipapi"),  # both failed: the primary's failure is kept
    }


def test_chain_missing_result_becomes_transient_no_result() -> None:
    """An IP the providers returned nothing for still gets a result: a transient 'no result'."""
    first = FakeProvider("ipapi", {})
    results = run(ProviderChain([first]), ["8.8.8.8"])
    assert results == {"8.8.8.8": TransientFailure("no result", "ipapi")}


def test_chain_with_real_offline_fallback() -> None:
    """With the real offline provider as fallback, a transient ip-api failure carries the iptocc country."""
    first = FakeProvider("ipapi", {"1.1.1.1": TransientFailure("HTTP 503", "ipapi")})
    results = run(ProviderChain([first, OfflineProvider()]), ["1.1.1.1"])
    version = OfflineProvider().source.version
    assert results["1.1.1.1"] == TransientFailure(
        "HTTP 503", "ipapi", GeoData(country_code="AU", country_name="Australia"), True, version
    )


def test_chain_name_and_max_batch_come_from_members() -> None:
    """The chain's name joins the member names; its batch size is the smallest member batch."""
    chain = ProviderChain([FakeProvider("ipapi", {}, 100), FakeProvider("offline", {}, 100_000)])
    assert chain.name == "ipapi+offline"
    assert chain.max_batch == 100


def test_chain_needs_a_provider() -> None:
    """An empty chain is a configuration error raised at construction."""
    with pytest.raises(ValueError):
        ProviderChain([])


# --- merge_fallback -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("primary", "fallback", "expected"),
    [
        (
            TransientFailure("t", "ipapi"),
            Resolved(OFFLINE_US, "offline"),
            TransientFailure("t", "ipapi", OFFLINE_US),
        ),
        (TransientFailure("t", "ipapi"), None, TransientFailure("t", "ipapi")),
        (TransientFailure("t", "ipapi"), TransientFailure("x", "offline"), TransientFailure("t", "ipapi")),
        (TransientFailure("t", "ipapi"), PermanentFailure("p", "offline"), TransientFailure("t", "ipapi")),
        (
            TransientFailure("t", "ipapi", GeoData(country_code="AU")),
            Resolved(OFFLINE_US, "offline"),
            TransientFailure("t", "ipapi", GeoData(country_code="AU")),
        ),
        (Resolved(FULL, "ipapi"), Resolved(OFFLINE_US, "offline"), Resolved(FULL, "ipapi")),
        (PermanentFailure("p", "ipapi"), Resolved(OFFLINE_US, "offline"), PermanentFailure("p", "ipapi")),
    ],
    ids=[
        "transient+resolved",
        "transient+none",
        "transient+transient",
        "transient+permanent",
        "first-geo-wins",
        "resolved-kept",
        "permanent-kept",
    ],
)
def test_merge_fallback(primary: LookupResult, fallback: LookupResult | None, expected: LookupResult) -> None:
    """Only a geo-less transient primary takes a Resolved fallback's geo; all else keeps the primary."""
    assert merge_fallback(primary, fallback) == expected


# --- tick_capacity --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requests", "window", "interval", "share", "expected"),
    [
        (FREE_TIER_REQUESTS, FREE_TIER_WINDOW, 60.0, 1.0, 1500),
        (15, 60.0, 60.0, 0.5, 750),
        (15, 60.0, 30.0, 1.0, 750),
        (15, 60.0, 60.0, 1 / 8, 187),  # floored
        (15, 60.0, 60.0, 0.0, 1),  # never below one
        (1, 3600.0, 1.0, 0.001, 1),
    ],
)
def test_tick_capacity_arithmetic(
    requests: int, window: float, interval: float, share: float, expected: int
) -> None:
    """Capacity is floor(requests * batch * interval/window * share), at least 1."""
    assert MAX_BATCH == 100
    assert tick_capacity(requests, window, interval, share) == expected


@PURE
@given(
    requests=st.integers(min_value=1, max_value=10_000),
    window=st.floats(min_value=0.1, max_value=1e5),
    interval=st.floats(min_value=0.1, max_value=1e5),
    share=st.floats(min_value=0, max_value=1),
)
def test_tick_capacity_is_at_least_one_and_never_exceeds_budget(
    requests: int, window: float, interval: float, share: float
) -> None:
    """Capacity is >= 1 and never more than the budget absorbs in one interval (plus the floor of one)."""
    capacity = tick_capacity(requests, window, interval, share)
    assert capacity >= 1
    assert capacity <= max(1, requests * MAX_BATCH * interval / window * share + 1e-6)


def test_chain_fallback_answers_without_asking_the_first_provider() -> None:
    """When the first provider cannot be asked, every IP fails transiently with the reason, carrying what
    the other providers know, and the first provider sees no call."""
    first = FakeProvider("ipapi", {"8.8.8.8": Resolved(FULL, "ipapi")})
    offline = FakeProvider("offline", {"8.8.8.8": Resolved(OFFLINE_US, "offline")})
    results = asyncio.run(ProviderChain([first, offline]).fallback(["8.8.8.8", "9.9.9.9"], "breaker open"))
    assert first.calls == []
    assert results["8.8.8.8"] == TransientFailure("ipapi not asked: breaker open", "ipapi", OFFLINE_US, False)
    assert results["9.9.9.9"] == TransientFailure("ipapi not asked: breaker open", "ipapi", asked=False)
