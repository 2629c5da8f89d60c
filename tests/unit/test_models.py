"""JSON forms of cache entries and lookup results round-trip exactly."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.models import (
    FINAL_STATUSES,
    EntryStatus,
    GeoData,
    GeoEntry,
    LookupResult,
    PermanentFailure,
    Resolved,
    TransientFailure,
    result_from_dict,
    result_to_dict,
)

PURE = settings(database=None)
FULL = GeoData(
    country_code="US",
    country_name="United States",
    region="California",
    city="Mountain View",
    latitude=37.4056,
    longitude=-122.0775,
    asn=15169,
    as_name="GOOGLE",
    isp="Google LLC",
    org="Google Public DNS",
)


@pytest.mark.parametrize(
    "entry",
    [
        GeoEntry(
            "8.8.8.8",
            EntryStatus.RESOLVED,
            geo=FULL,
            provider="ipapi",
            attempts=3,
            first_seen=1.5,
            updated_at=2.25,
            next_retry_at=1_700_000_000.125,
            last_error=None,
        ),
        GeoEntry("2001:4860:4860::8888", EntryStatus.PENDING, next_retry_at=10.0),
        GeoEntry("10.0.0.1", EntryStatus.PRIVATE, last_error="private"),
        GeoEntry("192.0.0.9", EntryStatus.INVALID, provider="ipapi", attempts=1, last_error="reserved range"),
        GeoEntry(
            "1.1.1.1",
            EntryStatus.PARTIAL,
            geo=GeoData(country_code="AU", country_name="Australia"),
            provider="ipapi",
            attempts=2,
            next_retry_at=99.0,
            last_error="HTTP 429",
        ),
    ],
    ids=lambda e: e.status.value,
)
def test_geo_entry_json_round_trip(entry: GeoEntry) -> None:
    """GeoEntry.from_json(entry.to_json()) == entry for every status."""
    raw = entry.to_json()
    assert isinstance(raw, bytes)
    assert GeoEntry.from_json(raw) == entry
    assert json.loads(raw)["status"] == entry.status.value


def test_geo_entry_from_json_tolerates_missing_optional_fields_and_unknown_geo_keys() -> None:
    """A minimal record gets defaults, and unknown geo keys (newer writers) are ignored."""
    raw = b'{"ip":"8.8.8.8","status":"unresolved","geo":{"country_code":"US","zip":"1"}}'
    entry = GeoEntry.from_json(raw)
    assert entry == GeoEntry("8.8.8.8", EntryStatus.UNRESOLVED, geo=GeoData(country_code="US"))


def test_only_private_is_final() -> None:
    """Only PRIVATE is final: even INVALID is asked again some day (a provider's "invalid" can be wrong)."""
    assert {EntryStatus.PRIVATE} == FINAL_STATUSES


@pytest.mark.parametrize(
    "result",
    [
        Resolved(FULL, "ipapi"),
        Resolved(GeoData(country_code="AU", country_name="Australia"), "offline"),
        PermanentFailure("reserved range", "ipapi"),
        TransientFailure("HTTP 503", "ipapi"),
        TransientFailure("HTTP 429", "ipapi", GeoData(country_code="US", country_name="United States")),
    ],
    ids=["resolved", "resolved-offline", "permanent", "transient", "transient-with-geo"],
)
def test_result_dict_round_trip(result: LookupResult) -> None:
    """result_from_dict(result_to_dict(r)) == r for each kind, also through JSON text."""
    data = result_to_dict(result)
    assert result_from_dict(data) == result
    assert result_from_dict(json.loads(json.dumps(data))) == result


def test_result_from_dict_rejects_unknown_kind() -> None:
    """An unknown result kind raises ValueError; a record without a kind raises KeyError."""
    with pytest.raises(ValueError):
        result_from_dict({"kind": "maybe", "provider": "ipapi"})
    with pytest.raises(KeyError):
        result_from_dict({"provider": "ipapi"})


finite = st.floats(allow_nan=False, allow_infinity=False)
geo_data = st.builds(
    GeoData,
    country_code=st.one_of(st.none(), st.text(min_size=2, max_size=2)),
    country_name=st.one_of(st.none(), st.text(max_size=20)),
    city=st.one_of(st.none(), st.text(max_size=20)),
    latitude=st.one_of(st.none(), finite),
    longitude=st.one_of(st.none(), finite),
    asn=st.one_of(st.none(), st.integers(min_value=0, max_value=2**32)),
    proxy=st.one_of(st.none(), st.booleans()),
    hosting=st.one_of(st.none(), st.booleans()),
    mobile=st.one_of(st.none(), st.booleans()),
)
entries = st.builds(
    GeoEntry,
    ip=st.sampled_from(["8.8.8.8", "2001:db8::1", "10.0.0.1"]),
    status=st.sampled_from(list(EntryStatus)),
    geo=geo_data,
    provider=st.one_of(st.none(), st.text(max_size=10)),
    attempts=st.integers(min_value=0, max_value=1000),
    first_seen=finite,
    updated_at=finite,
    next_retry_at=st.one_of(st.none(), finite),
    last_error=st.one_of(st.none(), st.text(max_size=30)),
)
lookup_results = st.one_of(
    st.builds(Resolved, geo=geo_data, provider=st.text(max_size=10)),
    st.builds(PermanentFailure, reason=st.text(max_size=20), provider=st.text(max_size=10)),
    st.builds(
        TransientFailure,
        reason=st.text(max_size=20),
        provider=st.text(max_size=10),
        geo=st.one_of(st.none(), geo_data),
    ),
)


@PURE
@given(entries)
def test_property_geo_entry_json_round_trip(entry: GeoEntry) -> None:
    """Any entry with finite numbers survives to_json/from_json unchanged."""
    assert GeoEntry.from_json(entry.to_json()) == entry


@PURE
@given(lookup_results)
def test_property_result_round_trip(result: LookupResult) -> None:
    """Any lookup result survives result_to_dict -> JSON -> result_from_dict unchanged."""
    assert result_from_dict(json.loads(json.dumps(result_to_dict(result)))) == result


@pytest.mark.parametrize(
    ("field", "value"),
    [("country_code", 7), ("city", ["x"]), ("latitude", "1.5"), ("asn", 1.5), ("asn", True), ("org", None),
     ("proxy", "true"), ("hosting", 1), ("mobile", [True])],
)
def test_geo_data_from_dict_drops_values_of_the_wrong_type(field: str, value: object) -> None:
    """A field of the wrong type in a foreign or corrupt record becomes None instead of entering an entry."""
    assert getattr(GeoData.from_dict({field: value, "country_name": "Germany"}), field) is None
    assert GeoData.from_dict({field: value, "country_name": "Germany"}).country_name == "Germany"


@given(
    st.builds(
        GeoEntry,
        ip=st.just("8.8.8.8"),
        status=st.sampled_from(list(EntryStatus)),
        geo=st.builds(GeoData, country_code=st.none() | st.just("US"), asn=st.none() | st.integers(0, 99)),
        attempts=st.integers(0, 9),
        next_retry_at=st.none() | st.floats(0, 1e10),
    )
)
def test_to_json_is_what_dataclasses_asdict_would_write(entry: GeoEntry) -> None:
    """The hand-built dict has asdict's keys, order and values: the JSON on the topics did not change."""
    from dataclasses import asdict

    reference = asdict(entry)
    reference["status"] = entry.status.value
    assert entry.to_json() == json.dumps(reference, separators=(",", ":")).encode()
