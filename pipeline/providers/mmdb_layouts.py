"""The record layouts of common MaxMind-format databases, and one record turned into checked GeoData fields.

Three layouts cover the free databases people run, two more MaxMind's anonymizer and connection-type data:

- MAXMIND (GeoLite2/GeoIP2 City and Country, DB-IP Lite City and Country, which copies MaxMind's schema):
  `country.iso_code`, `country.names.en`, `subdivisions[0].names.en`, `city.names.en`,
  `location.latitude`, `location.longitude`.
- ASN (GeoLite2-ASN, DB-IP ASN Lite, GeoIP2-ISP): `autonomous_system_number`,
  `autonomous_system_organization`, and GeoIP2-ISP's `isp` and `organization` when present.
- IPINFO (IPinfo Lite, flat): `country_code`, `country`, `asn` ("AS15169"), `as_name`. IPinfo's older
  "country_asn" files put the code in `country` and the name in `country_name`; both are read. IPinfo's
  privacy detection files (flat too) carry `vpn`, `proxy`, `tor`, `relay`, `hosting` ("true" or "").
- ANONYMOUS (GeoIP2-Anonymous-IP, GeoIP Anonymous Plus): `is_anonymous_vpn`, `is_public_proxy`,
  `is_tor_exit_node`, `is_residential_proxy`, `is_hosting_provider` (each present only when true).
- CONNECTION (GeoIP2-Connection-Type): `connection_type` ("Cellular", "Cable/DSL", "Corporate", ...).

The three flags (`proxy`, `hosting`, `mobile`) are read as each file states them; a flag no key speaks for
is None, never False (an address missing from an anonymizer list is not thereby known to be clean):
proxy = any of the VPN/proxy/Tor/residential-proxy (IPinfo: vpn/proxy/tor/relay) keys that is present;
hosting = `is_hosting_provider` (IPinfo: `hosting`); mobile = `connection_type` is "Cellular" (any other
type: False). The ASN layout reads `connection_type` too, for ISP files that carry it.

A database file is data from outside, so every value is checked like untrusted input: text loses control
and format characters and is capped, a country code must be two ASCII letters, coordinates must be finite
and in range (both or neither), an AS number must fit 32 bits. A value that fails is dropped, not guessed.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import Any

from pipeline.models import MAX_ASN, iso_country

# Longest text kept from a database. Real values are far shorter (AS organisation names, the longest, stay
# under about 100 characters); the cap bounds what one hostile record can add to every entry, enriched
# event and near-cache slot (about 1 KiB each) that carries it.
MAX_TEXT_CHARS = 128
_AS_TEXT = re.compile(r"AS(\d{1,10})", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


class Layout(StrEnum):
    """How a database file shapes its records."""

    MAXMIND = "maxmind"
    ASN = "asn"
    IPINFO = "ipinfo"
    ANONYMOUS = "anonymous"
    CONNECTION = "connection"


class LayoutError(ValueError):
    """A file whose layout cannot be told, or whose type and records disagree."""


# The GeoData fields each layout can answer: a file is skipped once all of them are known
LAYOUT_FIELDS: dict[Layout, frozenset[str]] = {
    Layout.MAXMIND: frozenset({"country_code", "country_name", "region", "city", "latitude", "longitude"}),
    Layout.ASN: frozenset({"asn", "as_name", "isp", "org"}),
    Layout.IPINFO: frozenset({"country_code", "country_name", "asn", "as_name", "proxy", "hosting"}),
    Layout.ANONYMOUS: frozenset({"proxy", "hosting"}),
    Layout.CONNECTION: frozenset({"mobile"}),
}
# keys that say "a VPN, proxy or Tor exit", per layout (each True, False, or absent)
ANONYMOUS_PROXY_KEYS = ("is_anonymous_vpn", "is_public_proxy", "is_tor_exit_node", "is_residential_proxy")
IPINFO_PROXY_KEYS = ("vpn", "proxy", "tor", "relay")
MOBILE_CONNECTION = "cellular"  # MaxMind's connection_type for mobile networks (compared case-insensitively)


def clean_text(value: object, limit: int = MAX_TEXT_CHARS) -> str | None:
    """Printable text of at most `limit` characters, or None: whitespace runs become one space, control,
    format (bidi overrides, zero-width) and other non-printing characters are removed."""
    if not isinstance(value, str):
        return None
    if value.isascii() and value.isprintable():  # nearly every real value: nothing to remove
        text = value.strip()
    else:
        kept = (
            " " if ch.isspace() else ch
            for ch in value[: limit * 4]  # bounded work for a hostile multi-megabyte string
            if ch.isspace() or not unicodedata.category(ch).startswith("C")
        )
        text = _SPACES.sub(" ", "".join(kept)).strip()
    return text[:limit].rstrip() or None


def coordinates(latitude: object, longitude: object) -> tuple[float, float] | None:
    """Latitude and longitude when both are finite numbers in range, else None."""
    if not isinstance(latitude, int | float) or not isinstance(longitude, int | float):
        return None
    if isinstance(latitude, bool) or isinstance(longitude, bool):
        return None
    lat, lon = float(latitude), float(longitude)
    if math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180:
        return lat, lon
    return None


def as_number(value: object) -> int | None:
    """An AS number 0..2**32-1 from an integer or from text like "AS15169", else None."""
    if isinstance(value, str):
        match = _AS_TEXT.fullmatch(value.strip())
        value = int(match.group(1)) if match else None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ASN:
        return value
    return None


def extract(layout: Layout, record: Mapping[str, Any]) -> dict[str, Any]:
    """The checked GeoData fields one record of `layout` knows; fields it lacks are absent."""
    if layout is Layout.MAXMIND:
        found = _maxmind(record)
    elif layout is Layout.ASN:
        found = {
            "asn": as_number(record.get("autonomous_system_number")),
            "as_name": clean_text(record.get("autonomous_system_organization")),
            "isp": clean_text(record.get("isp")),
            "org": clean_text(record.get("organization")),
            "mobile": mobile(record.get("connection_type")),
        }
    elif layout is Layout.ANONYMOUS:
        found = {
            "proxy": any_flag(record, ANONYMOUS_PROXY_KEYS, truth),
            "hosting": truth(record.get("is_hosting_provider")),
        }
    elif layout is Layout.CONNECTION:
        found = {"mobile": mobile(record.get("connection_type"))}
    else:
        found = _ipinfo(record)
    return {k: v for k, v in found.items() if v is not None}


def truth(value: object) -> bool | None:
    """A MaxMind boolean: True or False as written, None for a missing or non-boolean value."""
    return value if isinstance(value, bool) else None


def ipinfo_truth(value: object) -> bool | None:
    """An IPinfo flag: a boolean, or its text form ("true"/"false", "" for false); None otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", ""):
        return value.strip().lower() == "true"
    return None


def any_flag(
    record: Mapping[str, Any], keys: Iterable[str], read: Callable[[object], bool | None]
) -> bool | None:
    """True if any of `keys` says True, False if some say False and none True, None if none says."""
    said = [value for value in (read(record.get(key)) for key in keys) if value is not None]
    return any(said) if said else None


def mobile(connection_type: object) -> bool | None:
    """Whether a `connection_type` is a cellular network; None when the record names none."""
    kind = clean_text(connection_type)
    return None if kind is None else kind.lower() == MOBILE_CONNECTION


def detect_layout(database_type: object, records: Iterable[object]) -> Layout:
    """The layout named by the metadata's `database_type` and shown by sample records.

    Either is enough alone; when both speak they must agree. Raises LayoutError otherwise.
    """
    hinted = layout_of_type(database_type)
    shown = next((s for s in map(layout_of_record, records) if s is not None), None)
    if hinted and shown and hinted is not shown:
        raise LayoutError(f"database_type {database_type!r} means {hinted} but its records look {shown}")
    layout = hinted or shown
    if layout is None:
        raise LayoutError(f"unknown layout: database_type {database_type!r}, no recognisable sample record")
    return layout


def layout_of_type(database_type: object) -> Layout | None:
    """What a metadata `database_type` says: "GeoLite2-City", "DBIP-ASN-Lite (compat=GeoLite2-ASN)",
    "ipinfo lite.mmdb" (IPinfo's files name themselves after their file)."""
    if not isinstance(database_type, str):
        return None
    kind = database_type.lower()
    if "anonymous" in kind:  # GeoIP2-Anonymous-IP, GeoIP-Anonymous-Plus
        return Layout.ANONYMOUS
    if "connection" in kind:  # GeoIP2-Connection-Type
        return Layout.CONNECTION
    if kind.startswith("ipinfo"):
        return Layout.IPINFO
    if "asn" in kind:
        return Layout.ASN
    if any(word in kind for word in ("city", "country", "location", "enterprise")):
        return Layout.MAXMIND
    return None


def layout_of_record(record: object) -> Layout | None:
    """What a record's shape says, or None for a record that shows nothing."""
    if not isinstance(record, dict):
        return None
    if "autonomous_system_number" in record:
        return Layout.ASN
    if any(key in record for key in ("is_anonymous", *ANONYMOUS_PROXY_KEYS, "is_hosting_provider")):
        return Layout.ANONYMOUS
    if isinstance(record.get("connection_type"), str) and not isinstance(record.get("country"), dict):
        return Layout.CONNECTION
    if any(isinstance(record.get(k), dict) for k in ("country", "city", "location", "continent")):
        return Layout.MAXMIND
    if any(isinstance(record.get(k), str) for k in ("country_code", "country", "asn")):
        return Layout.IPINFO
    if any(isinstance(record.get(k), str | bool) for k in (*IPINFO_PROXY_KEYS, "hosting")):
        return Layout.IPINFO  # a privacy detection file
    return None


def _maxmind(record: Mapping[str, Any]) -> dict[str, Any]:
    country = _map(record.get("country"))
    subdivisions = record.get("subdivisions")
    first = _map(subdivisions[0]) if isinstance(subdivisions, list) and subdivisions else {}
    location = _map(record.get("location"))
    point = coordinates(location.get("latitude"), location.get("longitude"))
    return {
        "country_code": iso_country(country.get("iso_code")),
        "country_name": clean_text(_english(country)),
        "region": clean_text(_english(first)),
        "city": clean_text(_english(_map(record.get("city")))),
        "latitude": point[0] if point else None,
        "longitude": point[1] if point else None,
    }


def _ipinfo(record: Mapping[str, Any]) -> dict[str, Any]:
    code, name = record.get("country_code"), record.get("country")
    if code is None and "country_name" in record:  # older "country_asn" files: code in `country`
        code, name = record.get("country"), record.get("country_name")
    return {
        "country_code": iso_country(code),
        "country_name": clean_text(name),
        "asn": as_number(record.get("asn")),
        "as_name": clean_text(record.get("as_name")),
        "proxy": any_flag(record, IPINFO_PROXY_KEYS, ipinfo_truth),
        "hosting": ipinfo_truth(record.get("hosting")),
    }


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _english(item: Mapping[str, Any]) -> object:
    return _map(item.get("names")).get("en")
