"""Hostile ip-api answers: a table of named attacks, then properties over arbitrary JSON in every field."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.models import GeoData, LookupResult, PermanentFailure, Resolved, TransientFailure
from pipeline.providers.ipapi import parse_batch
from pipeline.providers.ipapi_answers import ELLIPSIS, MAX_ASN, MAX_TEXT, PERMANENT_MESSAGES, clean_text

IP = "8.8.8.8"
TEXT_FIELDS = ("country", "regionName", "city", "isp", "org", "as", "asname")
FIELDS = (*TEXT_FIELDS, "countryCode", "lat", "lon")
GOOGLE: dict[str, Any] = {
    "status": "success", "country": "United States", "countryCode": "US", "regionName": "Virginia",
    "city": "Ashburn", "lat": 39.03, "lon": -77.5, "isp": "Google LLC", "org": "Google Public DNS",
    "as": "AS15169 Google LLC", "asname": "GOOGLE", "query": IP,
}  # fmt: skip
# what no stored text may contain: C0, DEL, C1, line/paragraph separators, bidi controls, lone surrogates
FORBIDDEN = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
REASON_MAX = len("ip-api: ") + MAX_TEXT


class Raw(str):
    """A value spliced into the body as literal JSON text (for what json.dumps cannot write)."""


def answer_for(overrides: dict[str, Any], base: dict[str, Any] = GOOGLE) -> LookupResult:
    """The result for IP when the answer is `base` with `overrides` (Raw values spliced in verbatim)."""
    item = {**base, **{k: (f"@raw{k}@" if isinstance(v, Raw) else v) for k, v in overrides.items()}}
    text = json.dumps([item])
    for key, value in overrides.items():
        if isinstance(value, Raw):
            text = text.replace(f'"@raw{key}@"', value)
    return parse_batch([IP], text.encode())[IP]


def invalid(problem: str) -> TransientFailure:
    return TransientFailure(f"ip-api: invalid item: {problem}", "ipapi")


def geo(**changes: Any) -> Resolved:
    """Google's answer as Resolved, with `changes` to its GeoData."""
    base = GeoData("US", "United States", "Virginia", "Ashburn", 39.03, -77.5, 15169, "GOOGLE", "Google LLC",
                   "Google Public DNS")  # fmt: skip
    return Resolved(GeoData(**{**base.to_dict(), **changes}), "ipapi")


HOSTILE = [
    ("oversized org (200 KB) is truncated", {"org": "A" * 200_000}, geo(org="A" * 255 + ELLIPSIS)),
    ("oversized org of words", {"org": "ab " * 70_000}, geo(org=("ab " * 85).rstrip() + ELLIPSIS)),
    ("HTML/script in org stays inert text", {"org": "<script>x()</script>"}, geo(org="<script>x()</script>")),
    ("NUL and ANSI escapes in city", {"city": "Ash\x00burn\x1b[31m!\x1b[0m"}, geo(city="Ashburn!")),
    ("newlines and tabs in isp", {"isp": " Google\r\n\tLLC  "}, geo(isp="Google LLC")),
    ("bidi and line separator in isp", {"isp": "Evil\u202eCorp\u2028Ltd\u2066"}, geo(isp="EvilCorp Ltd")),
    ("C1 CSI, NEL and DEL in city", {"city": "Ash\x9b2Jburn\x85Town\x7f"}, geo(city="Ashburn Town")),
    ("lone surrogate in city", {"city": "Ash\ud800burn"}, geo(city="Ashburn")),
    ("blank and control-only text is None", {"city": " \x00\x1b[0m ", "country": ""}, geo(city=None,
                                                                                          country_name=None)),
    ("country code with markup", {"countryCode": "<b>US</b>"}, invalid("countryCode is not two letters")),
    ("three-letter country code", {"countryCode": "USA"}, invalid("countryCode is not two letters")),
    ("digit country code", {"countryCode": "12"}, invalid("countryCode is not two letters")),
    ("non-ASCII letter country code", {"countryCode": "ÜS"}, invalid("countryCode is not two letters")),
    ("lower-case country code is upper-cased", {"countryCode": " us "}, geo(country_code="US")),
    ("empty country code is None", {"countryCode": ""}, geo(country_code=None)),
    ("blank country code is None", {"countryCode": " \t"}, geo(country_code=None)),
    ("lat 1e308", {"lat": 1e308}, invalid("lat out of range")),
    ("lon -1e308", {"lon": -1e308}, invalid("lon out of range")),
    ("lat 10**400 as a JSON int", {"lat": 10**400}, invalid("lat out of range")),
    ("lon with 5,000 digits", {"lon": Raw("-" + "9" * 5000)}, invalid("lon out of range")),
    ("lat NaN", {"lat": Raw("NaN")}, invalid("lat out of range")),
    ("lon -Infinity", {"lon": Raw("-Infinity")}, invalid("lon out of range")),
    ("lat 91", {"lat": 91}, invalid("lat out of range")),
    ("lat true is not a number", {"lat": True}, invalid("lat is not a number")),
    ("lon as a string", {"lon": "-77.5"}, invalid("lon is not a number")),
    ("edges of the coordinate ranges", {"lat": -90, "lon": 180}, geo(latitude=-90.0, longitude=180.0)),
    ("negative ASN", {"as": "AS-5 Evil"}, invalid("asn out of range")),
    ("ASN AS99999999999", {"as": "AS99999999999 Evil"}, invalid("asn out of range")),
    ("ASN with 5,000 digits (cut)", {"as": "AS" + "9" * 5000}, invalid("as is not 'AS<number> <name>'")),
    ("largest ASN", {"as": "AS4294967295 Big", "asname": None}, geo(asn=MAX_ASN, as_name="Big")),
    ("superscript digit in as", {"as": "AS² Evil"}, invalid("as is not 'AS<number> <name>'")),
    ("as without a number", {"as": "Cloudflare"}, invalid("as is not 'AS<number> <name>'")),
    ("unknown status", {"status": "SUCCESS"}, invalid("status is not success or fail")),
    ("missing fields", {f: None for f in FIELDS}, Resolved(GeoData(), "ipapi")),
    ("flags as sent", {"proxy": True, "hosting": False, "mobile": True}, geo(proxy=True, hosting=False,
                                                                             mobile=True)),
    ("null flags are unknown", {"proxy": None, "hosting": None}, geo()),
    ("string flag is dropped", {"proxy": "true", "hosting": True}, geo(hosting=True)),
    ("number flags are dropped", {"hosting": 1, "mobile": 0, "proxy": False}, geo(proxy=False)),
    ("object and list flags are dropped", {"proxy": {"vpn": True}, "mobile": [True]}, geo()),
    ("huge number flag is dropped", {"mobile": Raw("1" + "0" * 5000)}, geo()),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "expected"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_values(overrides: dict[str, Any], expected: LookupResult) -> None:
    """Each hostile value is cleaned into a safe Resolved or rejected as an invalid item; none raises."""
    assert answer_for(overrides) == expected


def test_missing_fields_are_unknown() -> None:
    """A success item with only status and query is Resolved with every field None."""
    assert answer_for({}, base={"status": "success", "query": IP}) == Resolved(GeoData(), "ipapi")


WRONG_TYPES = [["US"], {"US": 1}, True, False]


@pytest.mark.parametrize("value", [*WRONG_TYPES, 7, 1.5], ids=repr)
@pytest.mark.parametrize("field", TEXT_FIELDS)
def test_wrong_types_in_text_fields(field: str, value: object) -> None:
    """A list, object, boolean or number where text belongs makes the item invalid, naming the field."""
    assert answer_for({field: value}) == invalid(f"{field} is not text")


@pytest.mark.parametrize("value", [*WRONG_TYPES, 7, 1.5], ids=repr)
def test_wrong_types_in_country_code(value: object) -> None:
    """A country code that is not a string is refused like a malformed one."""
    assert answer_for({"countryCode": value}) == invalid("countryCode is not two letters")


@pytest.mark.parametrize("value", WRONG_TYPES, ids=repr)
@pytest.mark.parametrize("field", ["lat", "lon"])
def test_wrong_types_in_coordinates(field: str, value: object) -> None:
    """A list, object or boolean where a coordinate belongs makes the item invalid."""
    assert answer_for({field: value}) == invalid(f"{field} is not a number")


@pytest.mark.parametrize("value", [*WRONG_TYPES, None, 1], ids=repr)
def test_wrong_types_in_status(value: object) -> None:
    """A status that is not the string success or fail makes the item invalid."""
    assert answer_for({"status": value}) == invalid("status is not success or fail")


@pytest.mark.parametrize("value", WRONG_TYPES, ids=repr)
def test_wrong_types_in_fail_message(value: object) -> None:
    """A fail item whose message is not text is an invalid item, not a permanent failure."""
    fail = {"status": "fail", "query": IP}
    assert answer_for({"message": value}, base=fail) == invalid("message is not text")


@pytest.mark.parametrize("value", [*WRONG_TYPES, None, 8.8], ids=repr)
def test_wrong_types_in_query_fall_back_to_position(value: object) -> None:
    """An item whose query is not text is matched by position when there is one item per IP."""
    assert answer_for({"query": value}) == geo()
    two = parse_batch([IP, "1.1.1.1"], json.dumps([{**GOOGLE, "query": value}]).encode())
    assert set(two.values()) == {TransientFailure("missing from response", "ipapi")}


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("private range", PermanentFailure("private range", "ipapi")),
        (" Reserved Range\n", PermanentFailure("reserved range", "ipapi")),
        ("INVALID QUERY", PermanentFailure("invalid query", "ipapi")),
        ("private range\x00", TransientFailure("ip-api: private range", "ipapi")),
        ("<b>private range</b>", TransientFailure("ip-api: <b>private range</b>", "ipapi")),
        ("private  range", TransientFailure("ip-api: private range", "ipapi")),
        ("\uff50rivate range", TransientFailure("ip-api: \uff50rivate range", "ipapi")),
        ("quota exceeded", TransientFailure("ip-api: quota exceeded", "ipapi")),
        ("\x1b[2J", TransientFailure("ip-api: fail without message", "ipapi")),
        (None, TransientFailure("ip-api: fail without message", "ipapi")),
        ("x" * 10_000, TransientFailure(f"ip-api: {'x' * 255}{ELLIPSIS}", "ipapi")),
    ],
    ids=repr,
)
def test_fail_messages(message: str | None, expected: LookupResult) -> None:
    """Only three exact messages are permanent; any other fail is transient, its reason cleaned and capped."""
    assert answer_for({"message": message}, base={"status": "fail", "query": IP}) == expected


def test_one_hostile_item_fails_only_its_ip() -> None:
    """A hostile item among good ones fails its own IP; its neighbours still resolve."""
    items = [{**GOOGLE, "query": ip} for ip in ("1.1.1.1", "8.8.8.8", "9.9.9.9")]
    items[1]["lat"] = 1e308
    results = parse_batch(["1.1.1.1", "8.8.8.8", "9.9.9.9"], json.dumps(items).encode())
    assert results["8.8.8.8"] == invalid("lat out of range")
    assert isinstance(results["1.1.1.1"], Resolved) and isinstance(results["9.9.9.9"], Resolved)


# -- properties -------------------------------------------------------------------------------------------

any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=40)
nasty = st.sampled_from(
    ["<b>US</b>", "us", "USA", "AS15169 Google", "AS-1 x", "AS99999999999", "A" * 2000, "\x1b[31m", "\u202e"]
)
numbers = st.integers() | st.floats() | st.sampled_from([10**400, -(10**400), 2**32, MAX_ASN, -1, 90, -180])
json_values = st.recursive(
    st.none() | st.booleans() | numbers | any_text | nasty,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)
IPS = ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888"]
long_text = st.builds(
    lambda text, n: text * n, any_text.filter(bool), st.integers(20, MAX_TEXT)
)  # cheap bulk
honest_text = any_text | nasty | long_text  # right type, any content: must come out cleaned
honest = st.fixed_dictionaries(
    {"status": st.just("success"), "query": st.sampled_from(IPS)},
    optional={
        **{name: honest_text for name in TEXT_FIELDS},
        "countryCode": st.from_regex(r"[A-Za-z]{2}", fullmatch=True),
        "lat": st.floats(-90, 90),
        "lon": st.floats(-180, 180),
        "as": st.builds("AS{} {}".format, st.integers(0, MAX_ASN), honest_text),
    },
)
noisy = st.fixed_dictionaries(  # anything anywhere: mostly invalid items
    {
        "status": st.sampled_from(["success", "fail"]) | json_values,
        "query": st.sampled_from(IPS) | json_values,
    },
    optional={name: json_values for name in (*FIELDS, "message")},
)
one_bad = st.builds(  # an honest item with one field replaced by anything
    lambda item, name, value: {**item, name: value},
    honest,
    st.sampled_from((*FIELDS, "status", "query", "message")),
    numbers | json_values,  # numbers twice as often: out-of-range coordinates and huge ints
)
items = honest | noisy | one_bad


def assert_safe(result: LookupResult) -> None:
    """No stored text over the cap or with controls, no bad country code, no out-of-range number."""
    if isinstance(result, PermanentFailure):
        assert result.reason in PERMANENT_MESSAGES
        return
    if isinstance(result, TransientFailure):
        assert len(result.reason) <= REASON_MAX and not FORBIDDEN.search(result.reason)
        return
    g = result.geo
    for value in (g.country_name, g.region, g.city, g.as_name, g.isp, g.org):
        assert value is None or (0 < len(value) <= MAX_TEXT and not FORBIDDEN.search(value))
        assert value is None or value == " ".join(value.split())
    assert g.country_code is None or re.fullmatch("[A-Z]{2}", g.country_code)
    assert g.latitude is None or (math.isfinite(g.latitude) and -90 <= g.latitude <= 90)
    assert g.longitude is None or (math.isfinite(g.longitude) and -180 <= g.longitude <= 180)
    assert g.asn is None or (type(g.asn) is int and 0 <= g.asn <= MAX_ASN)


@settings(max_examples=200, deadline=None)
@given(st.lists(items, max_size=7))  # 7 > 2 * 3 IPs: the length guard too
def test_any_values_in_every_field_are_safe(answer: list[dict[str, Any]]) -> None:
    """Arbitrary JSON in every field never raises and never yields an unsafe field or reason."""
    results = parse_batch(IPS, json.dumps(answer).encode())
    assert list(results) == IPS
    for result in results.values():
        assert_safe(result)


@given(any_text | nasty | st.text(min_size=MAX_TEXT - 5, max_size=MAX_TEXT * 3))
def test_clean_text_is_capped_control_free_and_idempotent(value: str) -> None:
    """Cleaned text is None or short, control-free and collapsed, and cleaning it again changes nothing."""
    cleaned = clean_text(value)
    assert cleaned is None or (len(cleaned) <= MAX_TEXT and not FORBIDDEN.search(cleaned))
    assert cleaned is None or clean_text(cleaned) == cleaned


@given(
    st.from_regex(r"[A-Za-z]{2}", fullmatch=True),
    st.floats(-90, 90),
    st.floats(-180, 180),
    st.integers(0, MAX_ASN),
    st.from_regex(r"[A-Za-z0-9.,&-]{1,20}( [A-Za-z0-9.,&-]{1,20}){0,3}", fullmatch=True),
)
def test_valid_items_keep_their_values(cc: str, lat: float, lon: float, asn: int, name: str) -> None:
    """An honest item within every range is Resolved with exactly its values (nothing over-rejected)."""
    item = {"status": "success", "countryCode": cc, "lat": lat, "lon": lon, "as": f"AS{asn} {name}",
            "city": name, "query": IP}  # fmt: skip
    result = parse_batch([IP], json.dumps([item]).encode())[IP]
    assert result == Resolved(GeoData(cc.upper(), None, None, name, lat, lon, asn, name), "ipapi")
