"""Every record form an older version wrote still decodes: entries (0.1.x without data_version and last_seen,
0.2.0 without the proxy/hosting/mobile flags) and the seen, resolve, results and asked records.

The old records are literal JSON text as those versions wrote it (compact, in their field order), never
produced by today's encoders, so a change of today's format cannot silently rewrite them.
"""

from __future__ import annotations

import json

import pytest

from pipeline.messages import (
    Asked,
    ReanswerMessage,
    ResolveRequest,
    ResultMessage,
    RetryMessage,
    Seen,
    decode_asked,
    decode_resolve_request,
    decode_results_message,
    decode_seen,
)
from pipeline.models import EntryStatus, GeoData, GeoEntry, PermanentFailure, Resolved, TransientFailure

NULL_GEO = (
    b'{"country_code":null,"country_name":null,"region":null,"city":null,"latitude":null,"longitude":null,'
    b'"asn":null,"as_name":null,"isp":null,"org":null}'
)
GOOGLE_GEO = (
    b'{"country_code":"US","country_name":"United States","region":"California","city":"Mountain View",'
    b'"latitude":37.422,"longitude":-122.085,"asn":15169,"as_name":"GOOGLE","isp":"Google LLC",'
    b'"org":"Google Public DNS"}'
)
GOOGLE = GeoData("US", "United States", "California", "Mountain View", 37.422, -122.085, 15169, "GOOGLE",
                 "Google LLC", "Google Public DNS")  # fmt: skip

OLD_ENTRIES = [
    (
        "0.1 resolved",
        b'{"ip":"8.8.8.8","status":"resolved","geo":' + GOOGLE_GEO + b',"provider":"ipapi","attempts":1,'
        b'"first_seen":1700000000.5,"updated_at":1700000100.25,"next_retry_at":1702592100.25,"last_error":null}',
        GeoEntry("8.8.8.8", EntryStatus.RESOLVED, GOOGLE, "ipapi", 1, 1700000000.5, 1700000100.25,
                 1702592100.25, None, None, 1700000000.5),
    ),
    (
        "0.1 private",
        b'{"ip":"10.0.0.1","status":"private","geo":' + NULL_GEO + b',"provider":null,"attempts":0,'
        b'"first_seen":1700000000.0,"updated_at":1700000000.0,"next_retry_at":null,"last_error":"private"}',
        GeoEntry("10.0.0.1", EntryStatus.PRIVATE, GeoData(), None, 0, 1700000000.0, 1700000000.0, None,
                 "private", None, 1700000000.0),
    ),
    (
        "0.1 pending with the offline country, integer times",
        b'{"ip":"1.1.1.1","status":"pending","geo":{"country_code":"AU","country_name":"Australia",'
        b'"region":null,"city":null,"latitude":null,"longitude":null,"asn":null,"as_name":null,"isp":null,'
        b'"org":null},"provider":"offline","attempts":0,"first_seen":1700000000,"updated_at":1700000000,'
        b'"next_retry_at":1700000600,"last_error":null}',
        GeoEntry("1.1.1.1", EntryStatus.PENDING, GeoData("AU", "Australia"), "offline", 0, 1700000000.0,
                 1700000000.0, 1700000600, None, None, 1700000000.0),
    ),
    (
        "0.2.0 partial",
        b'{"ip":"1.1.1.1","status":"partial","geo":{"country_code":"AU","country_name":"Australia",'
        b'"region":null,"city":null,"latitude":null,"longitude":null,"asn":null,"as_name":null,"isp":null,'
        b'"org":null},"provider":"offline","attempts":1,"first_seen":1700000000.0,"updated_at":1700000600.0,'
        b'"next_retry_at":1700000660.0,"last_error":"ip-api: HTTP 503","data_version":"iptocc:1.2.0",'
        b'"last_seen":1700086400.0}',
        GeoEntry("1.1.1.1", EntryStatus.PARTIAL, GeoData("AU", "Australia"), "offline", 1, 1700000000.0,
                 1700000600.0, 1700000660.0, "ip-api: HTTP 503", "iptocc:1.2.0", 1700086400.0, failures=1),
    ),
    (
        "0.3.0 unresolved in the slow lane: its attempts read as its failures",
        b'{"ip":"203.0.113.9","status":"unresolved","geo":' + NULL_GEO + b',"provider":null,"attempts":13,'
        b'"first_seen":1.0,"updated_at":2.0,"next_retry_at":86402.0,"last_error":"ipapi: HTTP 503",'
        b'"data_version":null,"last_seen":3.0}',
        GeoEntry("203.0.113.9", EntryStatus.UNRESOLVED, GeoData(), None, 13, 1.0, 2.0, 86402.0,
                 "ipapi: HTTP 503", None, 3.0, failures=13),
    ),
    (
        "0.2.0 resolved by MaxMind-format data",
        b'{"ip":"8.8.8.8","status":"resolved","geo":' + GOOGLE_GEO + b',"provider":"mmdb","attempts":1,'
        b'"first_seen":1700000000.0,"updated_at":1700000000.0,"next_retry_at":1702592000.0,"last_error":null,'
        b'"data_version":"mmdb:GeoLite2-City@1699999999+GeoLite2-ASN@1699999999","last_seen":1700000000.0}',
        GeoEntry("8.8.8.8", EntryStatus.RESOLVED, GOOGLE, "mmdb", 1, 1700000000.0, 1700000000.0,
                 1702592000.0, None, "mmdb:GeoLite2-City@1699999999+GeoLite2-ASN@1699999999", 1700000000.0),
    ),
    (
        "0.2.0 invalid",
        b'{"ip":"192.0.0.9","status":"invalid","geo":' + NULL_GEO + b',"provider":"ipapi","attempts":1,'
        b'"first_seen":1.0,"updated_at":2.0,"next_retry_at":604802.0,"last_error":"reserved range",'
        b'"data_version":null,"last_seen":3.0}',
        GeoEntry("192.0.0.9", EntryStatus.INVALID, GeoData(), "ipapi", 1, 1.0, 2.0, 604802.0,
                 "reserved range", None, 3.0),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in OLD_ENTRIES], ids=[c[0] for c in OLD_ENTRIES])
def test_every_older_entry_form_decodes_with_null_flags(raw: bytes, expected: GeoEntry) -> None:
    """An entry an older version wrote decodes to the same entry, its missing fields at their defaults
    (last_seen = first_seen, data_version and the three flags None, failures = attempts while retrying)."""
    entry = GeoEntry.from_json(raw)
    assert entry == expected
    assert (entry.geo.proxy, entry.geo.hosting, entry.geo.mobile) == (None, None, None)


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in OLD_ENTRIES], ids=[c[0] for c in OLD_ENTRIES])
def test_an_older_entry_written_again_keeps_every_field_it_had(raw: bytes, expected: GeoEntry) -> None:
    """Decoded and written by this version, an older entry keeps every key and value it had, and gains the
    newer keys (null flags; data_version, last_seen, failures)."""
    old, new = json.loads(raw), json.loads(GeoEntry.from_json(raw).to_json())
    assert {k: new[k] for k in old if k != "geo"} == {k: v for k, v in old.items() if k != "geo"}
    assert {k: new["geo"][k] for k in old["geo"]} == old["geo"]
    assert {k: new["geo"][k] for k in ("proxy", "hosting", "mobile")} == dict.fromkeys(
        ("proxy", "hosting", "mobile")
    )
    assert "data_version" in new and "last_seen" in new and "failures" in new


def test_an_entry_with_flags_round_trips_and_a_non_boolean_flag_is_dropped() -> None:
    """Flags survive to_json/from_json; a flag of another type in a foreign record is None (1 is no True)."""
    entry = GeoEntry("8.8.8.8", EntryStatus.RESOLVED, GeoData("US", proxy=True, hosting=False, mobile=None))
    assert GeoEntry.from_json(entry.to_json()) == entry
    foreign = GeoData.from_dict({"country_code": "US", "proxy": "true", "hosting": 1, "mobile": [True]})
    assert (foreign.country_code, foreign.proxy, foreign.hosting, foreign.mobile) == ("US", None, None, None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"at":1700000000.123,"by":"geo-0.1-worker"}', Seen(1700000000.123, "geo-0.1-worker", True)),
        (b'{"at":1700000000.123,"by":"w","first":false}', Seen(1700000000.123, "w", False)),
    ],
    ids=["0.1 seen (no first: a first sight)", "0.2.0 touch"],
)
def test_older_seen_records_decode(raw: bytes, expected: Seen) -> None:
    """Seen records without `first` count as first sights; 0.2.0's touches stay touches."""
    assert decode_seen(raw) == expected


def test_older_resolve_requests_decode() -> None:
    """A resolve request without `by` (0.1) decodes with an empty `by`."""
    assert decode_resolve_request(b'{"ip":"1.1.1.1","attempt":2}') == ResolveRequest("1.1.1.1", 2, "")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            b'{"type":"result","attempt":1,"result":{"kind":"resolved","provider":"ipapi","geo":'
            + GOOGLE_GEO
            + b"}}",
            ResultMessage(1, Resolved(GOOGLE, "ipapi")),
        ),
        (
            b'{"type":"result","attempt":2,"result":{"kind":"transient","provider":"ipapi",'
            b'"reason":"HTTP 429","geo":null}}',
            ResultMessage(2, TransientFailure("HTTP 429", "ipapi")),
        ),
        (
            b'{"type":"result","attempt":1,"result":{"kind":"permanent","provider":"ipapi",'
            b'"reason":"invalid query"}}',
            ResultMessage(1, PermanentFailure("invalid query", "ipapi")),
        ),
        (b'{"type":"retry","due":1700000000.5}', RetryMessage(1700000000.5)),
        (b'{"type":"reanswer"}', ReanswerMessage()),
    ],
    ids=[
        "0.1 resolved (no version)",
        "0.1 transient (no asked, no version)",
        "permanent",
        "retry",
        "reanswer",
    ],
)
def test_older_results_records_decode(raw: bytes, expected: object) -> None:
    """Results records of older versions decode; their geography has null flags."""
    assert decode_results_message(raw) == expected


def test_older_asked_records_decode() -> None:
    """An asked record without `by` and `answered` (0.1) decodes as not answered."""
    assert decode_asked(b'{"attempt":3,"at":1700000000.125}') == Asked(3, 1700000000.125, False)
