"""Write .mmdb files in the record shapes of the real free databases, with a chosen build epoch.

One place for those shapes, so the tests' known-answer files and the benchmark's large files are built
alike. Records follow each vendor's published layout, including the fields the pipeline ignores, because
they are part of what a reader decodes and so of what a lookup costs:

- GeoLite2-City / GeoLite2-Country: MaxMind's nested maps, names in MaxMind's eight locales.
- DB-IP Lite city: the same nesting with DB-IP's differences (no `registered_country`, no geoname ids
  below the country, ten locales for continent and country, English only for city and subdivision, and
  `location` holding only the coordinates), as DB-IP's format pages and their sample output show.
- GeoLite2-ASN and DB-IP ASN Lite: `autonomous_system_number` (uint32), `autonomous_system_organization`.
- IPinfo Lite: flat text fields; the AS number is text ("AS15169").
- GeoIP2-Anonymous-IP: booleans `is_anonymous`, `is_anonymous_vpn`, `is_hosting_provider`,
  `is_public_proxy`, `is_residential_proxy`, `is_tor_exit_node`, each written only when true, and only
  for listed networks.
- GeoIP2-Connection-Type: `connection_type` ("Cellular", "Cable/DSL", "Corporate", "Satellite", ...).
- IPinfo privacy detection: flat `vpn`, `proxy`, `tor`, `relay`, `hosting` ("true" or ""), `service`.

Needs `mmdb-writer` (the `test` extra). It cannot write MaxMind's IPv4 aliases in IPv6 trees
(`::ffff:0:0/96`, `2002::/16`); maxminddb looks IPv4 addresses up under `::/96`, where it does write them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netaddr import IPNetwork

GEOLITE2_LANGUAGES = ("de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN")
DBIP_LANGUAGES = ("de", "en", "es", "fa", "fr", "ja", "ko", "pt-BR", "ru", "zh-CN")
# metadata database_type of each vendor's file (DB-IP's and IPinfo's as their files are seen to carry)
GEOLITE2_CITY = "GeoLite2-City"
GEOLITE2_COUNTRY = "GeoLite2-Country"
GEOLITE2_ASN = "GeoLite2-ASN"
DBIP_CITY_LITE = "DBIP-City-Lite"
DBIP_ASN_LITE = "DBIP-ASN-Lite (compat=GeoLite2-ASN)"
IPINFO_LITE = "ipinfo lite.mmdb"
GEOIP2_ANONYMOUS_IP = "GeoIP2-Anonymous-IP"
GEOIP2_CONNECTION_TYPE = "GeoIP2-Connection-Type"
IPINFO_PRIVACY = "ipinfo privacy.mmdb"


@dataclass(frozen=True)
class Place:
    """Where a network is, as a database would say it (English names)."""

    country_code: str
    country_name: str
    continent_code: str
    continent_name: str
    region: str | None = None
    city: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    geoname_id: int = 1  # one id for the place's city, subdivision and country maps: readers ignore them


def names(english: str, languages: Iterable[str]) -> dict[str, str]:
    """A `names` map: the English name, and a distinct stand-in for every other locale."""
    return {lang: english if lang == "en" else f"{english} ({lang})" for lang in languages}


def geolite2_country_record(place: Place) -> dict[str, Any]:
    country = {
        "geoname_id": place.geoname_id,
        "iso_code": place.country_code,
        "names": names(place.country_name, GEOLITE2_LANGUAGES),
    }
    return {
        "continent": {
            "code": place.continent_code,
            "geoname_id": place.geoname_id,
            "names": names(place.continent_name, GEOLITE2_LANGUAGES),
        },
        "country": country,
        "registered_country": country,
    }


def geolite2_city_record(place: Place) -> dict[str, Any]:
    record = geolite2_country_record(place)
    if place.city:
        record["city"] = {"geoname_id": place.geoname_id, "names": names(place.city, GEOLITE2_LANGUAGES)}
    if place.latitude is not None and place.longitude is not None:
        record["location"] = {
            "accuracy_radius": 20,
            "latitude": place.latitude,
            "longitude": place.longitude,
            "time_zone": "Etc/UTC",
        }
    if place.region:
        region = {"geoname_id": place.geoname_id, "iso_code": "XX", "names": names(place.region, ["en"])}
        record["subdivisions"] = [region]
    return record


def dbip_city_record(place: Place) -> dict[str, Any]:
    record: dict[str, Any] = {
        "continent": {
            "code": place.continent_code,
            "geoname_id": place.geoname_id,
            "names": names(place.continent_name, DBIP_LANGUAGES),
        },
        "country": {
            "geoname_id": place.geoname_id,
            "is_in_european_union": place.continent_code == "EU",
            "iso_code": place.country_code,
            "names": names(place.country_name, DBIP_LANGUAGES),
        },
    }
    if place.city:
        record["city"] = {"names": {"en": place.city}}
    if place.latitude is not None and place.longitude is not None:
        record["location"] = {"latitude": place.latitude, "longitude": place.longitude}
    if place.region:
        record["subdivisions"] = [{"names": {"en": place.region}}]
    return record


def asn_record(asn: int, organization: str) -> dict[str, Any]:
    """GeoLite2-ASN and DB-IP ASN Lite share this record."""
    return {"autonomous_system_number": asn, "autonomous_system_organization": organization}


def ipinfo_lite_record(place: Place, asn: int, as_name: str, as_domain: str) -> dict[str, Any]:
    return {
        "as_domain": as_domain,
        "as_name": as_name,
        "asn": f"AS{asn}",
        "continent": place.continent_name,
        "continent_code": place.continent_code,
        "country": place.country_name,
        "country_code": place.country_code,
    }


@dataclass(frozen=True)
class Anonymity:
    """What an anonymizer database says of a network (MaxMind's flags; IPinfo's privacy columns)."""

    vpn: bool = False
    hosting: bool = False
    public_proxy: bool = False
    tor: bool = False
    residential_proxy: bool = False
    relay: bool = False  # IPinfo only: a location-preserving relay (iCloud Private Relay and the like)


def anonymous_ip_record(anon: Anonymity) -> dict[str, Any]:
    """GeoIP2-Anonymous-IP: `is_anonymous` and each flag that is true; false flags are not written."""
    flags = {
        "is_anonymous_vpn": anon.vpn,
        "is_hosting_provider": anon.hosting,
        "is_public_proxy": anon.public_proxy,
        "is_residential_proxy": anon.residential_proxy,
        "is_tor_exit_node": anon.tor,
    }
    record = {key: True for key, value in flags.items() if value}
    if anon.vpn or anon.public_proxy or anon.tor or anon.residential_proxy:
        record["is_anonymous"] = True
    return record


def connection_type_record(connection_type: str) -> dict[str, Any]:
    return {"connection_type": connection_type}


def ipinfo_privacy_record(anon: Anonymity, service: str = "") -> dict[str, Any]:
    """IPinfo's privacy detection: every column written, "true" or "" (its JSON and MMDB downloads)."""

    def text(flag: bool) -> str:
        return "true" if flag else ""

    return {
        "hosting": text(anon.hosting),
        "proxy": text(anon.public_proxy),
        "relay": text(anon.relay),
        "service": service,
        "tor": text(anon.tor),
        "vpn": text(anon.vpn),
    }


def write_mmdb(
    path: str | os.PathLike[str],
    database_type: str,
    networks: Iterable[tuple[str | IPNetwork, Any]],
    *,
    build_epoch: int,
    ip_version: int = 6,
    languages: Iterable[str] = ("en",),
) -> Path:
    """Write `networks` (CIDR, record) to `path` as a MaxMind DB; IPv4 ones go under ::/96 in an IPv6 tree.

    Integers are written as uint32, as MaxMind writes AS numbers and geoname ids (wrap a value in an
    `mmdb_writer.MmdbU64` etc. to force another type). A later network inside an earlier one overrides it.
    Needs the test extra (mmdb-writer), imported here so that the dev tools built on these records (the
    vendor emulator, the MMDB benchmark) import without it.
    """
    from mmdb_writer import MMDBWriter
    from netaddr import IPNetwork, IPSet

    class _Writer(MMDBWriter):
        """mmdb-writer stamps the current time as build epoch; the tests need to choose it."""

        def __init__(self, build_epoch: int, **options: Any) -> None:
            super().__init__(**options)
            self.build_epoch = build_epoch

        def _build_meta(self) -> dict[str, Any]:
            return {**super()._build_meta(), "build_epoch": self.build_epoch}

    writer = _Writer(
        build_epoch,
        ip_version=ip_version,
        ipv4_compatible=ip_version == 6,
        database_type=database_type,
        languages=list(languages),
        description=f"{database_type} written by geo-pipeline",
        int_type="u32",
    )
    for network, record in networks:
        writer.insert_network(IPSet([IPNetwork(network)]), record)
    writer.to_db_file(os.fspath(path))
    return Path(path)
