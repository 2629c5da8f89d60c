"""Record layouts of .mmdb databases and the checks every value from a database goes through."""

from __future__ import annotations

import math

import pytest

from pipeline.models import iso_country
from pipeline.providers.mmdb_layouts import (
    MAX_ASN,
    MAX_TEXT_CHARS,
    Layout,
    LayoutError,
    as_number,
    clean_text,
    coordinates,
    detect_layout,
    extract,
    layout_of_record,
    layout_of_type,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mountain View", "Mountain View"),
        ("  São Paulo ", "São Paulo"),
        ("東京", "東京"),
        ("Evil\x00Corp\x1b[31m", "EvilCorp[31m"),
        ("line\nbreak\tand\u2028more", "line break and more"),
        ("\u202egoogle\u202c", "google"),
        ("zero\u200bwidth", "zerowidth"),
        ("\x00\x01\x7f", None),
        ("   ", None),
        ("", None),
        (42, None),
        (None, None),
        (b"bytes", None),
    ],
)
def test_clean_text_strips_control_and_format_characters(value: object, expected: str | None) -> None:
    """Text loses control and format characters, whitespace runs become one space; non-text is None."""
    assert clean_text(value) == expected


def test_clean_text_caps_length_also_for_huge_hostile_strings() -> None:
    """A string longer than the cap is cut to MAX_TEXT_CHARS, also a multi-megabyte one full of controls."""
    assert clean_text("x" * 10_000) == "x" * MAX_TEXT_CHARS
    assert clean_text("\x01y" * 2_000_000) == "y" * MAX_TEXT_CHARS
    assert clean_text("abc def", limit=5) == "abc d"
    assert clean_text("abcd efg", limit=5) == "abcd"  # no trailing space left by the cut


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("US", "US"),
        ("de", "DE"),
        ("USA", None),
        ("U", None),
        ("U1", None),
        ("ÜS", None),
        (" S", None),
        (7, None),
    ],
)
def test_country_code_must_be_two_ascii_letters(value: object, expected: str | None) -> None:
    """A country code is two ASCII letters, returned upper-case; anything else is dropped."""
    assert iso_country(value) == expected


@pytest.mark.parametrize(
    ("lat", "lon", "expected"),
    [
        (37.386, -122.0838, (37.386, -122.0838)),
        (90, -180, (90.0, -180.0)),
        (90.5, 0.0, None),
        (0.0, 180.01, None),
        (math.nan, 0.0, None),
        (0.0, math.inf, None),
        ("1.0", 2.0, None),
        (True, 2.0, None),
        (1.0, None, None),
    ],
)
def test_coordinates_are_finite_numbers_in_range_or_nothing(
    lat: object, lon: object, expected: object
) -> None:
    """Latitude and longitude come as a pair of finite numbers in range, or not at all."""
    assert coordinates(lat, lon) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (15169, 15169),
        (0, 0),
        (MAX_ASN, MAX_ASN),
        (MAX_ASN + 1, None),
        (-1, None),
        (True, None),
        ("AS15169", 15169),
        ("as13335", 13335),
        ("AS4294967296", None),
        ("15169", None),
        ("AS15169 Google", None),
        (15169.0, None),
    ],
)
def test_as_number_fits_32_bits(value: object, expected: int | None) -> None:
    """An AS number is an integer 0..2**32-1, given as a number or as "AS<digits>" text."""
    assert as_number(value) == expected


@pytest.mark.parametrize(
    ("database_type", "expected"),
    [
        ("GeoLite2-City", Layout.MAXMIND),
        ("GeoLite2-Country", Layout.MAXMIND),
        ("GeoIP2-City", Layout.MAXMIND),
        ("DBIP-City-Lite", Layout.MAXMIND),
        ("DBIP-Country-Lite", Layout.MAXMIND),
        ("DBIP-Location (compat=City)", Layout.MAXMIND),
        ("GeoLite2-ASN", Layout.ASN),
        ("DBIP-ASN-Lite (compat=GeoLite2-ASN)", Layout.ASN),
        ("ipinfo lite.mmdb", Layout.IPINFO),
        ("ipinfo country_asn.mmdb", Layout.IPINFO),
        ("ipinfo privacy.mmdb", Layout.IPINFO),
        ("GeoIP2-Anonymous-IP", Layout.ANONYMOUS),
        ("GeoIP-Anonymous-Plus", Layout.ANONYMOUS),
        ("GeoIP2-Connection-Type", Layout.CONNECTION),
        ("GeoIP2-ISP", None),
        ("custom", None),
        (None, None),
    ],
)
def test_layout_of_database_type(database_type: object, expected: Layout | None) -> None:
    """The metadata's database_type names the layout for the known vendors' files, nothing for others."""
    assert layout_of_type(database_type) == expected


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"country": {"iso_code": "US"}}, Layout.MAXMIND),
        ({"continent": {"code": "EU"}}, Layout.MAXMIND),
        ({"autonomous_system_number": 1, "isp": "x"}, Layout.ASN),
        ({"country_code": "US", "asn": "AS1"}, Layout.IPINFO),
        ({"country": "US", "country_name": "United States"}, Layout.IPINFO),
        ({"is_hosting_provider": True}, Layout.ANONYMOUS),
        ({"is_anonymous": True, "is_tor_exit_node": True}, Layout.ANONYMOUS),
        ({"connection_type": "Cellular"}, Layout.CONNECTION),
        ({"autonomous_system_number": 1, "connection_type": "Cable/DSL"}, Layout.ASN),
        ({"hosting": "true", "proxy": "", "tor": "", "vpn": "", "relay": "", "service": ""}, Layout.IPINFO),
        ({"other": 1}, None),
        ("text", None),
        (None, None),
    ],
)
def test_layout_of_record_shape(record: object, expected: Layout | None) -> None:
    """A record's shape shows its layout: nested maps, AS fields, or flat IPinfo text."""
    assert layout_of_record(record) == expected


def test_detect_layout_uses_either_signal_and_rejects_disagreement() -> None:
    """Type or record shape alone decide; a type and records that disagree, or neither, are an error."""
    asn = {"autonomous_system_number": 1}
    assert detect_layout("GeoLite2-ASN", [None]) is Layout.ASN
    assert detect_layout("custom", [None, asn]) is Layout.ASN
    with pytest.raises(LayoutError, match="means maxmind but its records look asn"):
        detect_layout("GeoLite2-City", [asn])
    with pytest.raises(LayoutError, match="unknown layout"):
        detect_layout("custom", [None, {"x": 1}])


def test_extract_maxmind_reads_the_documented_paths_only() -> None:
    """A City record yields country, English names of country, first subdivision and city, coordinates."""
    record = {
        "city": {"names": {"en": "London", "de": "London"}},
        "country": {"iso_code": "GB", "names": {"en": "United Kingdom", "fr": "Royaume-Uni"}},
        "registered_country": {"iso_code": "US"},
        "subdivisions": [{"names": {"en": "England"}}, {"names": {"en": "City of London"}}],
        "location": {"latitude": 51.5142, "longitude": -0.0931, "accuracy_radius": 5},
        "traits": {"autonomous_system_number": 1},
    }
    assert extract(Layout.MAXMIND, record) == {
        "country_code": "GB",
        "country_name": "United Kingdom",
        "region": "England",
        "city": "London",
        "latitude": 51.5142,
        "longitude": -0.0931,
    }


def test_extract_maxmind_tolerates_wrong_types_at_every_level() -> None:
    """Maps where text is expected, lists where maps are, and missing levels leave fields out, never raise."""
    record = {
        "country": {"iso_code": ["US"], "names": "United States"},
        "subdivisions": {"names": {"en": "x"}},
        "city": [{"names": {"en": "y"}}],
        "location": {"latitude": 10.0},
    }
    assert extract(Layout.MAXMIND, record) == {}
    assert extract(Layout.MAXMIND, {"subdivisions": [], "city": {"names": None}}) == {}


def test_extract_asn_and_isp_fields() -> None:
    """An ASN record gives asn and as_name; GeoIP2-ISP's isp and organization fill isp and org."""
    asn = {"autonomous_system_number": 15169, "autonomous_system_organization": "GOOGLE"}
    assert extract(Layout.ASN, asn) == {"asn": 15169, "as_name": "GOOGLE"}
    isp = {"autonomous_system_number": 1, "isp": "Level 3", "organization": "Acme"}
    assert extract(Layout.ASN, isp) == {"asn": 1, "isp": "Level 3", "org": "Acme"}


def test_extract_ipinfo_lite_and_legacy_country_asn() -> None:
    """IPinfo Lite's country_code/country/asn/as_name map to GeoData; old country_asn files too."""
    lite = {"country_code": "US", "country": "United States", "asn": "AS15169", "as_name": "Google LLC"}
    legacy = {"country": "US", "country_name": "United States", "asn": "AS15169", "as_name": "Google LLC"}
    expected = {"country_code": "US", "country_name": "United States", "asn": 15169, "as_name": "Google LLC"}
    extras = {"as_domain": "google.com", "continent": "North America", "continent_code": "NA"}
    assert extract(Layout.IPINFO, {**lite, **extras}) == expected
    assert extract(Layout.IPINFO, legacy) == expected


@pytest.mark.parametrize(
    ("layout", "record", "expected"),
    [
        # MaxMind writes a flag only when it is true: a listed network's other flags are unknown, not False
        (Layout.ANONYMOUS, {"is_anonymous": True, "is_anonymous_vpn": True}, {"proxy": True}),
        (Layout.ANONYMOUS, {"is_anonymous": True, "is_tor_exit_node": True}, {"proxy": True}),
        (Layout.ANONYMOUS, {"is_anonymous": True, "is_residential_proxy": True}, {"proxy": True}),
        (Layout.ANONYMOUS, {"is_public_proxy": True, "is_hosting_provider": True},
         {"proxy": True, "hosting": True}),
        (Layout.ANONYMOUS, {"is_hosting_provider": True}, {"hosting": True}),
        (Layout.ANONYMOUS, {"is_anonymous_vpn": False, "is_hosting_provider": False}, {"proxy": False,
                                                                                     "hosting": False}),
        (Layout.ANONYMOUS, {"is_anonymous_vpn": "yes", "is_hosting_provider": 1}, {}),  # garbage: unknown
        (Layout.ANONYMOUS, {"is_anonymous": True}, {}),  # anonymous of no known kind: nothing said
        (Layout.CONNECTION, {"connection_type": "Cellular"}, {"mobile": True}),
        (Layout.CONNECTION, {"connection_type": " cellular "}, {"mobile": True}),
        (Layout.CONNECTION, {"connection_type": "Cable/DSL"}, {"mobile": False}),
        (Layout.CONNECTION, {"connection_type": "Corporate"}, {"mobile": False}),
        (Layout.CONNECTION, {"connection_type": ""}, {}),
        (Layout.CONNECTION, {"connection_type": 3}, {}),
        (Layout.ASN, {"autonomous_system_number": 7, "connection_type": "Cellular"},
         {"asn": 7, "mobile": True}),
        (Layout.IPINFO, {"hosting": "true", "proxy": "", "tor": "", "vpn": "true", "relay": ""},
         {"proxy": True, "hosting": True}),
        (Layout.IPINFO, {"hosting": "", "proxy": "", "tor": "", "vpn": "", "relay": "true"},
         {"proxy": True, "hosting": False}),
        (Layout.IPINFO, {"hosting": False, "vpn": False}, {"proxy": False, "hosting": False}),
        (Layout.IPINFO, {"hosting": "maybe", "vpn": 1}, {}),
        (Layout.IPINFO, {"country_code": "US", "asn": "AS1"}, {"country_code": "US", "asn": 1}),  # Lite
        (Layout.MAXMIND, {"country": {"iso_code": "US"}}, {"country_code": "US"}),
    ],
)  # fmt: skip
def test_flags_are_what_the_file_states_and_unknown_otherwise(
    layout: Layout, record: dict[str, object], expected: dict[str, object]
) -> None:
    """proxy, hosting and mobile follow the documented mapping; a key that is absent or not a boolean (or
    IPinfo's "true"/"") leaves its flag out (None in the entry), never False."""
    assert extract(layout, record) == expected
