"""Wire formats: every topic record round-trips, decoders never raise, and every record stays bounded."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.messages import (
    DLQ_KEY_MAX,
    DLQ_ORIGINAL_MAX,
    MAX_RECORD_BYTES,
    Asked,
    ResolveRequest,
    ResultMessage,
    RetryMessage,
    Seen,
    dead_letter,
    dead_letter_key,
    decode_asked,
    decode_resolve_request,
    decode_results_message,
    decode_seen,
    encode_asked,
    encode_resolve_request,
    encode_result,
    encode_retry,
    encode_seen,
)
from pipeline.models import GeoData, PermanentFailure, Resolved, TransientFailure

PURE = settings(database=None)
GARBAGE = [None, b"", b"{", b"[]", b"null", b'"x"', b"\xff", b"{}", b'{"attempt": "x"}', b"[" * 5000]


def test_seen_round_trips() -> None:
    """A seen record decodes to when and by whom the IP was seen."""
    assert decode_seen(encode_seen(1700000000.1234, "host:1")) == Seen(1700000000.123, "host:1")


def test_seen_says_whether_the_worker_had_no_entry_and_older_records_count_as_first_sights() -> None:
    """A touch (first=False) survives the round trip; a record without the flag is a first sight."""
    assert decode_seen(encode_seen(1.0, "w", first=False)) == Seen(1.0, "w", first=False)
    assert decode_seen(b'{"at": 1.0, "by": "old"}') == Seen(1.0, "old", first=True)


def test_resolve_request_round_trips() -> None:
    """A resolve request decodes to its IP, attempt and emitter."""
    request = ResolveRequest("8.8.8.8", 3, "host:1")
    assert decode_resolve_request(encode_resolve_request(request)) == request


@pytest.mark.parametrize(
    "raw",
    [
        b'{"ip": "8.8.8.8", "attempt": 0}',
        b'{"ip": "8.8.8.8", "attempt": true}',
        b'{"ip": 8, "attempt": 1}',
        b'{"attempt": 1}',
        b'{"ip": "8.8.8.8", "attempt": "one"}',
    ],
)
def test_resolve_request_with_a_bad_field_does_not_decode(raw: bytes) -> None:
    """An attempt below 1, a boolean attempt, a non-string IP or a missing field is not a request."""
    assert decode_resolve_request(raw) is None


@pytest.mark.parametrize(
    "result",
    [
        Resolved(GeoData(country_code="US", asn=15169, latitude=1.5), "ipapi"),
        PermanentFailure("reserved range", "ipapi"),
        TransientFailure("HTTP 503", "ipapi"),
        TransientFailure("HTTP 503", "ipapi", GeoData(country_code="DE")),
    ],
    ids=["resolved", "permanent", "transient", "partial"],
)
def test_result_round_trips(result: Resolved | PermanentFailure | TransientFailure) -> None:
    """A provider's answer decodes to the same attempt and result."""
    assert decode_results_message(encode_result(2, result)) == ResultMessage(2, result)


def test_retry_round_trips() -> None:
    """A timer retry decodes with its due time."""
    assert decode_results_message(encode_retry(1700000000.5)) == RetryMessage(1700000000.5)


def test_asked_round_trips_and_ignores_its_by_field() -> None:
    """An asked record decodes to attempt, time and answered flag."""
    assert decode_asked(encode_asked(4, 12.5, "w", answered=True)) == Asked(4, 12.5, True)


@pytest.mark.parametrize("raw", GARBAGE)
def test_every_decoder_returns_none_for_garbage(raw: bytes | None) -> None:
    """No decoder raises on garbage, a tombstone or absurd nesting: each returns None."""
    assert decode_seen(raw) is None
    assert decode_resolve_request(raw) is None
    assert decode_results_message(raw) is None
    assert decode_asked(raw) is None


@PURE
@given(st.binary(max_size=300))
def test_property_decoders_never_raise(raw: bytes) -> None:
    """Any bytes at all: decoders return a value or None, never an exception."""
    decode_seen(raw)
    decode_resolve_request(raw)
    decode_results_message(raw)
    decode_asked(raw)


def test_dead_letter_of_an_oversized_key_and_value_is_bounded_with_sizes_and_hashes() -> None:
    """A 400 KiB key with a 900 KiB value dead-letters into a record under Kafka's limit that keeps a prefix
    of each, their sizes and their SHA-256, and the letter's own key is dropped (too long to be one)."""
    key, raw = b"k" * (400 * 1024), b"\xff" * (900 * 1024)
    record = dead_letter(raw, "not UTF-8", "ip-events", 1, 7, key=key)
    assert len(record) < MAX_RECORD_BYTES
    doc = json.loads(record)
    assert base64.b64decode(doc["key_b64"]) == key[:DLQ_KEY_MAX]
    assert (doc["key_size"], doc["key_truncated"], doc["key_sha256"]) == (
        len(key),
        True,
        hashlib.sha256(key).hexdigest(),
    )
    assert base64.b64decode(doc["original_b64"]) == raw[:DLQ_ORIGINAL_MAX]
    assert (doc["original_size"], doc["original_sha256"]) == (len(raw), hashlib.sha256(raw).hexdigest())
    assert dead_letter_key(key) is None and dead_letter_key(b"short") == b"short"


def test_dead_letter_of_a_small_key_keeps_it_as_the_record_key_only() -> None:
    """A normal key stays the dead letter's key and is not repeated in the value."""
    doc = json.loads(dead_letter(b"x", "invalid ip: not an IP address", "t", 0, 1, key=b"k"))
    assert "key_b64" not in doc


@PURE
@given(raw=st.binary(max_size=2000), key=st.one_of(st.none(), st.binary(max_size=3000)))
def test_property_dead_letters_are_json_and_keep_the_original(raw: bytes, key: bytes | None) -> None:
    """Any input bytes and key give a JSON dead letter whose base64 decodes back to the input."""
    doc = json.loads(dead_letter(raw, "reason", "t", 0, 1, key=key))
    assert base64.b64decode(doc["original_b64"]) == raw
