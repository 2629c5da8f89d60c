"""Geo providers behind one Protocol, and the chain that composes them.

A provider turns a batch of normalised, global IPs into one `LookupResult` per IP. It never raises for a
lookup problem: failures are results, so the resolver can publish every outcome and lose nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version as package_version
from typing import TYPE_CHECKING, Protocol

from pipeline.models import GeoData, LookupResult, Resolved, TransientFailure


class GeoProvider(Protocol):
    """Anything that can resolve a batch of IPs (at most `max_batch` at a time)."""

    name: str
    max_batch: int

    async def resolve(self, ips: Sequence[str]) -> dict[str, LookupResult]:
        """Return a result for every IP in `ips`; failures are results, not exceptions."""
        ...


class OfflineSource(Protocol):
    """Geography from data on this host, answered synchronously and fast enough for the hot path.

    `version` names the data that answers (it may change when the data is reloaded), so an entry can
    record where its geography came from.
    """

    name: str

    @property
    def version(self) -> str: ...

    def lookup(self, ip: str) -> GeoData | None:
        """What the data knows about a normalised IP, or None; never raises for a lookup problem."""
        ...

    def lookup_with_version(self, ip: str) -> tuple[GeoData | None, str]:
        """`lookup` and the version of the data that answered it (consistent across a reload)."""
        ...


def offline_result(
    geo: GeoData | None, provider: str, miss_reason: str, version: str | None = None
) -> LookupResult:
    """An offline answer as a provider result: Resolved when it has the country, else a transient miss."""
    if geo is None or not geo.country_code:
        return TransientFailure(miss_reason, provider)
    return Resolved(geo, provider, version)


class IptoccSource:
    """Country and its name from the registry data of the `iptocc` package; versioned by that package."""

    name = "iptocc"

    def __init__(self) -> None:
        import iptocc  # imported here so a worker without it fails only when the source is chosen

        self._lookup = iptocc.country_code
        self.version = f"iptocc:{package_version('iptocc')}"
        # country code -> its answer: a few hundred codes, and building a GeoData per lookup cost thirty
        # times the lookup (a new IP's offline answer is on the hot path)
        self._answers: dict[str, GeoData] = {}

    def lookup(self, ip: str) -> GeoData | None:
        code = self._lookup(ip)
        if not code:
            return None
        found = self._answers.get(code)
        if found is None:
            found = self._answers[code] = GeoData(country_code=code, country_name=country_name(code))
        return found

    def lookup_with_version(self, ip: str) -> tuple[GeoData | None, str]:
        return self.lookup(ip), self.version  # the package's data never changes while it is imported


class OfflineProvider:
    """Country from registry data shipped in the `iptocc` package: no network, millions of lookups a second.

    It knows only the country, so its answers are a fallback: the chain keeps the entry due for the remote
    provider. As the only provider (air-gapped installs) its answers are final until the refresh age.
    """

    name = "offline"
    max_batch = 100_000  # in-process lookups: no request budget to respect

    def __init__(self) -> None:
        self.source = IptoccSource()

    def lookup(self, ip: str) -> LookupResult:
        return offline_result(
            self.source.lookup(ip), self.name, "no country in offline data", self.source.version
        )

    async def resolve(self, ips: Sequence[str]) -> dict[str, LookupResult]:
        return {ip: self.lookup(ip) for ip in ips}


if TYPE_CHECKING:

    def _fits(source: IptoccSource, provider: OfflineProvider) -> tuple[OfflineSource, GeoProvider]:
        """mypy's proof that iptocc is an offline source and the offline provider a provider."""
        return source, provider


class ProviderChain:
    """Ask providers in order; a transient failure of one is retried on the next, remembering the first.

    With (ipapi, offline): when ip-api fails transiently the offline country fills the entry, but the
    result stays transient, so the entry remains due for an ip-api retry. A permanent failure or a full
    answer from the first provider ends the chain.
    """

    def __init__(self, providers: Sequence[GeoProvider]) -> None:
        if not providers:
            raise ValueError("a provider chain needs at least one provider")
        self.providers = list(providers)
        self.name = "+".join(p.name for p in self.providers)
        self.max_batch = min(p.max_batch for p in self.providers)

    async def resolve(self, ips: Sequence[str]) -> dict[str, LookupResult]:
        first = self.providers[0]
        results = await first.resolve(ips)
        await self._fill_from_rest(
            results, [ip for ip in ips if isinstance(results.get(ip), TransientFailure)]
        )
        return {ip: results.get(ip) or TransientFailure("no result", first.name) for ip in ips}

    async def fallback(self, ips: Sequence[str], reason: str) -> dict[str, LookupResult]:
        """Answer without the first provider (it cannot be asked now): each IP fails transiently with
        `reason`, carrying what the other providers know, so its entry stays due for the first one."""
        first = self.providers[0]
        failure = TransientFailure(f"{first.name} not asked: {reason}", first.name, asked=False)
        results: dict[str, LookupResult] = dict.fromkeys(ips, failure)
        await self._fill_from_rest(results, ips)
        return results

    async def _fill_from_rest(self, results: dict[str, LookupResult], failed: Sequence[str]) -> None:
        """Ask the other providers, in order, for the IPs the first failed transiently: each keeps its
        failure (so it stays due for the first) and takes their geography."""
        if not failed:
            return
        for provider in self.providers[1:]:
            answers = await provider.resolve(failed)
            for ip in failed:
                results[ip] = merge_fallback(results[ip], answers.get(ip))


def merge_fallback(primary: LookupResult, fallback: LookupResult | None) -> LookupResult:
    """Keep the primary's transient failure (so it is retried) but carry the fallback's geography."""
    if isinstance(primary, TransientFailure) and isinstance(fallback, Resolved) and primary.geo is None:
        return TransientFailure(
            primary.reason, primary.provider, fallback.geo, primary.asked, fallback.version
        )
    return primary


COUNTRY_NAMES = {
    "AD": "Andorra",
    "AE": "United Arab Emirates",
    "AF": "Afghanistan",
    "AL": "Albania",
    "AM": "Armenia",
    "AO": "Angola",
    "AR": "Argentina",
    "AT": "Austria",
    "AU": "Australia",
    "AZ": "Azerbaijan",
    "BA": "Bosnia and Herzegovina",
    "BD": "Bangladesh",
    "BE": "Belgium",
    "BG": "Bulgaria",
    "BH": "Bahrain",
    "BO": "Bolivia",
    "BR": "Brazil",
    "BY": "Belarus",
    "CA": "Canada",
    "CH": "Switzerland",
    "CL": "Chile",
    "CN": "China",
    "CO": "Colombia",
    "CR": "Costa Rica",
    "CU": "Cuba",
    "CY": "Cyprus",
    "CZ": "Czechia",
    "DE": "Germany",
    "DK": "Denmark",
    "DO": "Dominican Republic",
    "DZ": "Algeria",
    "EC": "Ecuador",
    "EE": "Estonia",
    "EG": "Egypt",
    "ES": "Spain",
    "ET": "Ethiopia",
    "FI": "Finland",
    "FR": "France",
    "GB": "United Kingdom",
    "GE": "Georgia",
    "GH": "Ghana",
    "GR": "Greece",
    "GT": "Guatemala",
    "HK": "Hong Kong",
    "HR": "Croatia",
    "HU": "Hungary",
    "ID": "Indonesia",
    "IE": "Ireland",
    "IL": "Israel",
    "IN": "India",
    "IQ": "Iraq",
    "IR": "Iran",
    "IS": "Iceland",
    "IT": "Italy",
    "JO": "Jordan",
    "JP": "Japan",
    "KE": "Kenya",
    "KG": "Kyrgyzstan",
    "KH": "Cambodia",
    "KR": "South Korea",
    "KW": "Kuwait",
    "KZ": "Kazakhstan",
    "LA": "Laos",
    "LB": "Lebanon",
    "LK": "Sri Lanka",
    "LT": "Lithuania",
    "LU": "Luxembourg",
    "LV": "Latvia",
    "MA": "Morocco",
    "MD": "Moldova",
    "MK": "North Macedonia",
    "MM": "Myanmar",
    "MN": "Mongolia",
    "MX": "Mexico",
    "MY": "Malaysia",
    "NG": "Nigeria",
    "NL": "Netherlands",
    "NO": "Norway",
    "NP": "Nepal",
    "NZ": "New Zealand",
    "OM": "Oman",
    "PA": "Panama",
    "PE": "Peru",
    "PH": "Philippines",
    "PK": "Pakistan",
    "PL": "Poland",
    "PR": "Puerto Rico",
    "PT": "Portugal",
    "PY": "Paraguay",
    "QA": "Qatar",
    "RO": "Romania",
    "RS": "Serbia",
    "RU": "Russia",
    "SA": "Saudi Arabia",
    "SC": "Seychelles",
    "SE": "Sweden",
    "SG": "Singapore",
    "SI": "Slovenia",
    "SK": "Slovakia",
    "SY": "Syria",
    "TH": "Thailand",
    "TN": "Tunisia",
    "TR": "Turkey",
    "TW": "Taiwan",
    "TZ": "Tanzania",
    "UA": "Ukraine",
    "UG": "Uganda",
    "US": "United States",
    "UY": "Uruguay",
    "UZ": "Uzbekistan",
    "VE": "Venezuela",
    "VN": "Vietnam",
    "ZA": "South Africa",
    "ZM": "Zambia",
    "ZW": "Zimbabwe",
}  # ISO 3166-1 names for the countries that source most traffic; other codes fall back to the code


def country_name(code: str) -> str:
    return COUNTRY_NAMES.get(code.upper(), code.upper())
