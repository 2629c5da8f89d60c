""".mmdb files with known answers, in each supported vendor layout, for unit and integration tests.

`write_layout(directory, "geolite2-city")` writes a small database in that layout covering the networks of
`NETWORKS` (IPv4 and IPv6); `expected(layout, ip)` is the GeoData an `MmdbSource` must answer from it
alone. `publish` replaces a file the way updaters do (write aside, rename over), so hot-reload tests see
what production sees. Record shapes come from `pipeline.devtools.mmdb_files`, shared with the benchmark.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.devtools.mmdb_files import (
    DBIP_ASN_LITE,
    DBIP_CITY_LITE,
    GEOIP2_ANONYMOUS_IP,
    GEOIP2_CONNECTION_TYPE,
    GEOLITE2_ASN,
    GEOLITE2_CITY,
    GEOLITE2_COUNTRY,
    GEOLITE2_LANGUAGES,
    IPINFO_LITE,
    IPINFO_PRIVACY,
    Anonymity,
    Place,
    anonymous_ip_record,
    asn_record,
    connection_type_record,
    dbip_city_record,
    geolite2_city_record,
    geolite2_country_record,
    ipinfo_lite_record,
    ipinfo_privacy_record,
    write_mmdb,
)
from pipeline.models import GeoData
from pipeline.providers.mmdb_layouts import Layout

EPOCH = 1_700_000_000  # build epoch of the first version of every test file
MOUNTAIN_VIEW = Place(
    "US", "United States", "NA", "North America", "California", "Mountain View", 37.4, -122.1
)
LONDON = Place("GB", "United Kingdom", "EU", "Europe", "England", "London", 51.5142, -0.0931)
BERLIN = Place("DE", "Germany", "EU", "Europe", "Land Berlin", "Berlin", 52.5196, 13.4069)
SYDNEY = Place("AU", "Australia", "OC", "Oceania", "New South Wales", "Sydney", -33.8688, 151.209)


@dataclass(frozen=True)
class Network:
    """One network of the test databases, with its place and its AS."""

    cidr: str
    place: Place
    asn: int
    as_name: str
    as_domain: str


NETWORKS = (
    Network("8.8.8.0/24", MOUNTAIN_VIEW, 15169, "GOOGLE", "google.com"),
    Network("81.2.69.0/24", LONDON, 20712, "Andrews & Arnold Ltd", "aa.net.uk"),
    Network("1.1.1.0/24", SYDNEY, 13335, "CLOUDFLARENET", "cloudflare.com"),
    Network("2001:4860::/32", MOUNTAIN_VIEW, 15169, "GOOGLE", "google.com"),
    Network("2a02:2e0::/29", BERLIN, 12306, "Plus.line AG", "plusline.net"),
)
# an address inside each network, by network
KNOWN_IPS = {
    "8.8.8.8": NETWORKS[0],
    "81.2.69.142": NETWORKS[1],
    "1.1.1.1": NETWORKS[2],
    "2001:4860:4860::8888": NETWORKS[3],
    "2a02:2e0:3fe:1001::1": NETWORKS[4],
}
MISSING_IPS = ("9.9.9.9", "2c0f:fb50::1")  # in no test database
# the anonymizer files list these networks only (the others are absent from them: their flags are None)
ANONYMITY = {
    "8.8.8.0/24": Anonymity(hosting=True),
    "1.1.1.0/24": Anonymity(vpn=True, hosting=True),
    "81.2.69.0/24": Anonymity(tor=True),
    "2001:4860::/32": Anonymity(public_proxy=True, relay=True),
}
# and the connection-type file these (2a02:2e0::/29 is absent: mobile None)
CONNECTION_TYPES = {
    "8.8.8.0/24": "Corporate",
    "1.1.1.0/24": "Cable/DSL",
    "81.2.69.0/24": "Cellular",
    "2001:4860::/32": "Cellular",
}


@dataclass(frozen=True)
class Vendor:
    """How one vendor's database is written and what a lookup in it must answer."""

    database_type: str
    layout: Layout
    record: Callable[[Network], dict[str, Any] | None]  # None: the file does not list the network
    answer: Callable[[Network], GeoData | None]
    languages: tuple[str, ...] = ("en",)


def _place(network: Network) -> GeoData:
    p = network.place
    return GeoData(p.country_code, p.country_name, p.region, p.city, p.latitude, p.longitude)


def _country(network: Network) -> GeoData:
    return GeoData(network.place.country_code, network.place.country_name)


def _asn(network: Network) -> GeoData:
    return GeoData(asn=network.asn, as_name=network.as_name)


def _anonymous(network: Network) -> dict[str, Any] | None:
    anon = ANONYMITY.get(network.cidr)
    return anonymous_ip_record(anon) if anon else None


def _anonymous_answer(network: Network) -> GeoData | None:
    """MaxMind writes only true flags: a listed network is proxy/hosting True or None, never False."""
    anon = ANONYMITY.get(network.cidr)
    if anon is None:
        return None
    proxy = anon.vpn or anon.public_proxy or anon.tor or anon.residential_proxy
    return GeoData(proxy=True if proxy else None, hosting=True if anon.hosting else None)


def _connection(network: Network) -> dict[str, Any] | None:
    kind = CONNECTION_TYPES.get(network.cidr)
    return connection_type_record(kind) if kind else None


def _connection_answer(network: Network) -> GeoData | None:
    kind = CONNECTION_TYPES.get(network.cidr)
    return GeoData(mobile=kind == "Cellular") if kind else None


def _privacy(network: Network) -> dict[str, Any] | None:
    anon = ANONYMITY.get(network.cidr)
    return ipinfo_privacy_record(anon) if anon else None


def _privacy_answer(network: Network) -> GeoData | None:
    """IPinfo writes every column ("" for false): a listed network's flags are True or False."""
    anon = ANONYMITY.get(network.cidr)
    if anon is None:
        return None
    return GeoData(proxy=anon.vpn or anon.public_proxy or anon.tor or anon.relay, hosting=anon.hosting)


VENDORS: dict[str, Vendor] = {
    "geolite2-city": Vendor(
        GEOLITE2_CITY, Layout.MAXMIND, lambda n: geolite2_city_record(n.place), _place, GEOLITE2_LANGUAGES
    ),
    "geolite2-country": Vendor(
        GEOLITE2_COUNTRY,
        Layout.MAXMIND,
        lambda n: geolite2_country_record(n.place),
        _country,
        GEOLITE2_LANGUAGES,
    ),
    "geolite2-asn": Vendor(GEOLITE2_ASN, Layout.ASN, lambda n: asn_record(n.asn, n.as_name), _asn),
    "dbip-city-lite": Vendor(DBIP_CITY_LITE, Layout.MAXMIND, lambda n: dbip_city_record(n.place), _place),
    "dbip-asn-lite": Vendor(DBIP_ASN_LITE, Layout.ASN, lambda n: asn_record(n.asn, n.as_name), _asn),
    "ipinfo-lite": Vendor(
        IPINFO_LITE,
        Layout.IPINFO,
        lambda n: ipinfo_lite_record(n.place, n.asn, n.as_name, n.as_domain),
        lambda n: GeoData(n.place.country_code, n.place.country_name, asn=n.asn, as_name=n.as_name),
    ),
    "geoip2-anonymous-ip": Vendor(GEOIP2_ANONYMOUS_IP, Layout.ANONYMOUS, _anonymous, _anonymous_answer),
    "geoip2-connection-type": Vendor(
        GEOIP2_CONNECTION_TYPE, Layout.CONNECTION, _connection, _connection_answer
    ),
    "ipinfo-privacy": Vendor(IPINFO_PRIVACY, Layout.IPINFO, _privacy, _privacy_answer),
}
FLAG_VENDORS = ("geoip2-anonymous-ip", "geoip2-connection-type", "ipinfo-privacy")  # list some networks


def write_layout(
    directory: Path,
    vendor: str,
    *,
    build_epoch: int = EPOCH,
    networks: tuple[Network, ...] = NETWORKS,
    name: str | None = None,
    database_type: str | None = None,
) -> Path:
    """Write `vendor`'s database of `networks` as `directory/<name or vendor>.mmdb`; returns its path."""
    spec = VENDORS[vendor]
    return write_mmdb(
        directory / f"{name or vendor}.mmdb",
        spec.database_type if database_type is None else database_type,
        [(n.cidr, record) for n in networks if (record := spec.record(n)) is not None],
        build_epoch=build_epoch,
        languages=spec.languages,
    )


def expected(vendor: str, ip: str, networks: tuple[Network, ...] = NETWORKS) -> GeoData | None:
    """What a source made of `vendor`'s file alone answers for `ip` (a key of KNOWN_IPS or a miss)."""
    network = KNOWN_IPS.get(ip)
    if network is None or network.cidr not in {n.cidr for n in networks}:
        return None
    return VENDORS[vendor].answer(network)


def publish(new: Path, target: Path) -> None:
    """Move a finished file over `target` in one rename, as geoipupdate and careful cron jobs do."""
    os.replace(new, target)


def moved(network: Network, place: Place, asn: int = 64_512, as_name: str = "MOVED") -> Network:
    """`network` with another place and AS: a later build of a database that changed its answer."""
    return Network(network.cidr, place, asn, as_name, "moved.example")
