"""The ip-api batch protocol, pure: building a batch, its URL, parsing the answer and the rate headers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config.secret import Secret
from pipeline.config.settings import Settings
from pipeline.models import GeoData, PermanentFailure, Resolved, TransientFailure
from pipeline.providers.ipapi import (
    DEFAULT_FIELDS,
    IpApiProvider,
    batch_url,
    build_batch,
    merge_fields,
    parse_batch,
    parse_rate_headers,
)
from tests.support.ipapi_items import GOOGLE, KEY

# -- building ---------------------------------------------------------------------------------------------


def test_build_batch_merges_required_fields_and_keeps_order() -> None:
    """Every item asks for status, message and query on top of the caller's fields, without duplicates."""
    items = build_batch(["1.1.1.1", "8.8.8.8"], "country,query,lat", "")
    assert items == [
        {"query": "1.1.1.1", "fields": "status,message,query,country,lat"},
        {"query": "8.8.8.8", "fields": "status,message,query,country,lat"},
    ]


@pytest.mark.parametrize(
    ("given_fields", "expected"),
    [("", DEFAULT_FIELDS), ("  ", DEFAULT_FIELDS), ("66846719", str(66846719 | 57344)), ("2", "57346")],
)
def test_merge_fields_handles_empty_and_numeric_masks(given_fields: str, expected: str) -> None:
    """An empty field list means the default set; a numeric mask gains the status/message/query bits."""
    assert merge_fields(given_fields) == expected


def test_the_default_fields_ask_for_the_flags_and_are_the_settings_default() -> None:
    """ip-api is asked for proxy, hosting and mobile unless GEO_IPAPI_FIELDS says otherwise, and the flags
    it answers land in the result."""
    assert {"proxy", "hosting", "mobile"} <= set(DEFAULT_FIELDS.split(","))
    assert Settings.from_env({}).ipapi_fields == DEFAULT_FIELDS
    item = {"status": "success", "countryCode": "US", "proxy": True, "hosting": False, "mobile": True,
            "query": "8.8.8.8"}  # fmt: skip
    result = parse_batch(["8.8.8.8"], json.dumps([item]).encode())["8.8.8.8"]
    assert result == Resolved(GeoData("US", proxy=True, hosting=False, mobile=True), "ipapi")


def test_build_batch_sets_lang_only_when_given() -> None:
    """`lang` is sent per item when set and left out (English) when empty."""
    assert build_batch(["1.1.1.1"], "country", "de")[0]["lang"] == "de"
    assert "lang" not in build_batch(["1.1.1.1"], "country", "")[0]


def test_build_batch_refuses_more_than_100() -> None:
    """101 IPs raise ValueError instead of earning an HTTP 422; 100 is fine."""
    assert len(build_batch([f"1.1.1.{i}" for i in range(100)])) == 100
    with pytest.raises(ValueError):
        build_batch([f"1.1.{i // 250}.{i % 250}" for i in range(101)])


@given(st.lists(st.ip_addresses().map(str), max_size=100), st.text(alphabet="abcdefgCQ,", max_size=40))
def test_build_batch_property_one_item_per_ip_with_required_fields(ips: list[str], fields: str) -> None:
    """For any batch of at most 100, there is one item per IP and each asks for status, message, query."""
    items = build_batch(ips, fields)
    assert [item["query"] for item in items] == ips
    for item in items:
        assert {"status", "message", "query"} <= set(item["fields"].split(","))


# -- URLs and secrets -------------------------------------------------------------------------------------


def test_batch_url_free_pro_and_override() -> None:
    """Free is plain HTTP without a key; a key selects pro over HTTPS; a base URL gets /batch appended."""
    assert batch_url(None, None) == "http://ip-api.com/batch"
    assert batch_url("", None) == "http://ip-api.com/batch"
    assert batch_url(None, Secret("abc")) == "https://pro.ip-api.com/batch?key=abc"
    assert batch_url("http://127.0.0.1:8080", None) == "http://127.0.0.1:8080/batch"
    assert batch_url("http://127.0.0.1:8080/", Secret("k")) == "http://127.0.0.1:8080/batch?key=k"
    assert batch_url("http://h/batch", None) == "http://h/batch"


def test_batch_url_quotes_the_key_and_only_pro_carries_it() -> None:
    """A key with URL-special characters is quoted, and a keyless URL has no key parameter."""
    assert batch_url(None, Secret(KEY)).endswith("?key=s3cr3t-K3Y%2F%2B%3D")
    assert "key" not in batch_url(None, None)


def test_secret_and_provider_never_show_the_key() -> None:
    """Neither the Secret nor the provider built with it reveals the key in str() or repr()."""
    secret = Secret(KEY)
    assert KEY not in str(secret) and KEY not in repr(secret) and KEY not in f"{secret}"
    provider = IpApiProvider(None, None, api_key=secret)  # type: ignore[arg-type]
    assert KEY not in repr(provider) and KEY not in str(provider)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-Rl": "14", "X-Ttl": "57"}, (14, 57.0)),
        ({"x-rl": "0", "x-ttl": "3"}, (0, 3.0)),
        ({}, (None, None)),
        ({"X-Rl": "many", "X-Ttl": "nan"}, (None, None)),
        ({"X-Rl": "-2", "X-Ttl": "-1"}, (0, 0.0)),
        ({"X-Ttl": "inf"}, (None, None)),
    ],
)
def test_parse_rate_headers(headers: dict[str, str], expected: tuple[int | None, float | None]) -> None:
    """X-Rl/X-Ttl are read in any case; missing or garbage values are None, negatives clamp to 0."""
    assert parse_rate_headers(headers) == expected


# -- parsing ----------------------------------------------------------------------------------------------


def body(*items: object) -> bytes:
    return json.dumps(list(items)).encode()


def test_parse_success_maps_every_field() -> None:
    """A success item becomes Resolved with country, region, city, coordinates, ASN and names."""
    result = parse_batch(["8.8.8.8"], body(GOOGLE))["8.8.8.8"]
    assert result == Resolved(
        GeoData("US", "United States", "Virginia", "Ashburn", 39.03, -77.5, 15169, "GOOGLE", "Google LLC",
                "Google Public DNS"),
        "ipapi",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("as_field", "asname", "asn", "as_name"),
    [("AS15169 Google LLC", None, 15169, "Google LLC"), ("AS13335", "", 13335, None), ("", None, None, None),
     ("as64512  Private\tNet ", None, 64512, "Private Net"), (None, "X", None, "X")],
)  # fmt: skip
def test_parse_as_field(
    as_field: str | None, asname: str | None, asn: int | None, as_name: str | None
) -> None:
    """The `as` field "AS15169 Google LLC" gives ASN 15169, named by asname or else by the rest (cleaned)."""
    item = {"status": "success", "countryCode": "US", "as": as_field, "asname": asname, "query": "1.1.1.1"}
    result = parse_batch(["1.1.1.1"], body(item))["1.1.1.1"]
    assert isinstance(result, Resolved)
    assert (result.geo.asn, result.geo.as_name) == (asn, as_name)


def test_parse_success_without_country_is_resolved_with_none() -> None:
    """A success with empty countryCode (unallocated space) is Resolved with country None, not retried."""
    item = {"status": "success", "countryCode": "", "country": "", "city": " ", "query": "1.2.3.4"}
    result = parse_batch(["1.2.3.4"], body(item))["1.2.3.4"]
    assert result == Resolved(GeoData(), "ipapi")


@pytest.mark.parametrize("message", ["private range", "reserved range", "invalid query", "Private Range"])
def test_parse_permanent_fail_messages(message: str) -> None:
    """Private range, reserved range and invalid query are permanent failures."""
    result = parse_batch(["10.0.0.1"], body({"status": "fail", "message": message, "query": "10.0.0.1"}))
    assert result["10.0.0.1"] == PermanentFailure(message.lower(), "ipapi")


@pytest.mark.parametrize(
    "item", [{"status": "fail", "message": "quota"}, {"status": "fail"}, {"status": "?"}]
)
def test_parse_other_fails_are_transient(item: dict[str, str]) -> None:
    """Any other failure message, or an unknown status, is transient."""
    result = parse_batch(["9.9.9.9"], body({**item, "query": "9.9.9.9"}))["9.9.9.9"]
    assert isinstance(result, TransientFailure)


def test_parse_partial_answer_marks_missing_ips_transient() -> None:
    """An IP the answer does not mention is a transient 'missing from response'."""
    results = parse_batch(["8.8.8.8", "1.1.1.1"], body(GOOGLE))
    assert isinstance(results["8.8.8.8"], Resolved)
    assert results["1.1.1.1"] == TransientFailure("missing from response", "ipapi")


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b'{"status": "success"}', b"\xff\xfe", b"null", b"[" * 100_000, body(*[{}] * 5)],
)
def test_parse_malformed_body_fails_every_ip(raw: bytes) -> None:
    """A body that is not a JSON list, nests too deep or has over twice the items asked fails every IP."""
    results = parse_batch(["8.8.8.8", "1.1.1.1"], raw)
    assert set(results.values()) == {TransientFailure("malformed response", "ipapi")}
    assert list(results) == ["8.8.8.8", "1.1.1.1"]


def test_parse_bad_items_fail_only_their_own_ip() -> None:
    """A non-object or unknown-status item fails its IP alone; an unmatched one leaves its IP missing."""
    results = parse_batch(["8.8.8.8", "1.1.1.1"], b"[1, {}]")
    assert results == {
        "8.8.8.8": TransientFailure("ip-api: invalid item: not an object", "ipapi"),
        "1.1.1.1": TransientFailure("ip-api: invalid item: status is not success or fail", "ipapi"),
    }
    results = parse_batch(["8.8.8.8", "1.1.1.1"], body("8.8.8.8", GOOGLE))
    assert isinstance(results["8.8.8.8"], Resolved)
    assert results["1.1.1.1"] == TransientFailure("missing from response", "ipapi")


def test_parse_matches_query_ignoring_case_and_ipv6_spelling() -> None:
    """An IPv6 query echoed in upper case or expanded form still matches the IP we sent."""
    ip = "2001:4860:4860::8888"
    item = {**GOOGLE, "query": "2001:4860:4860:0:0:0:0:8888".upper()}
    assert isinstance(parse_batch([ip], body(item))[ip], Resolved)


def test_parse_keys_results_by_the_spelling_we_sent() -> None:
    """Results are keyed by the caller's own spelling even when the answer spells the IP differently."""
    results = parse_batch(["2001:4860:4860:0::8888"], body({**GOOGLE, "query": "2001:4860:4860::8888"}))
    assert isinstance(results["2001:4860:4860:0::8888"], Resolved)


def test_parse_duplicate_answers_keep_the_most_useful() -> None:
    """When two items answer one IP, a success beats a failure whatever the order."""
    fail = {"status": "fail", "message": "quota", "query": "8.8.8.8"}
    assert isinstance(parse_batch(["8.8.8.8"], body(fail, GOOGLE))["8.8.8.8"], Resolved)
    assert isinstance(parse_batch(["8.8.8.8"], body(GOOGLE, fail))["8.8.8.8"], Resolved)


def test_parse_duplicate_ips_and_unknown_queries() -> None:
    """Duplicate IPs in the request give one result; items for IPs we did not ask about are ignored."""
    results = parse_batch(["8.8.8.8", "8.8.8.8"], body(GOOGLE, {**GOOGLE, "query": "4.4.4.4"}))
    assert list(results) == ["8.8.8.8"]


def test_parse_falls_back_to_position_only_when_counts_match() -> None:
    """An item without query is matched by position only when the answer has one item per IP."""
    no_query = {k: v for k, v in GOOGLE.items() if k != "query"}
    assert isinstance(parse_batch(["8.8.8.8"], body(no_query))["8.8.8.8"], Resolved)
    partial = parse_batch(["8.8.8.8", "1.1.1.1"], body(no_query))
    assert all(isinstance(r, TransientFailure) for r in partial.values())


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_parse_never_raises_and_answers_every_ip(raw: bytes) -> None:
    """Whatever the body, parse_batch returns exactly one result per requested IP."""
    assert set(parse_batch(["8.8.8.8", "::1"], raw)) == {"8.8.8.8", "::1"}


@pytest.mark.parametrize("text", [KEY, "key=s3cr3t-K3Y%2F%2B%3D", "http://h/batch?key=s3cr3t-K3Y/%2B%3D"])
def test_log_redaction_removes_every_spelling_of_the_key(text: str) -> None:
    """Text bound for a log line loses the key whether raw, fully quoted or as yarl re-encodes it."""
    provider = IpApiProvider(None, None, api_key=Secret(KEY))  # type: ignore[arg-type]
    assert "s3cr3t" not in provider._redact(f"error at {text}")
