"""parse_event and dead_letter: valid inputs normalised and passed through, bad inputs named exactly."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import BadEvent, PipelineError
from pipeline.ingest import DLQ_PREVIEW_CHARS, ParsedEvent, dead_letter, parse_event

MAX = 64 * 1024
PURE = settings(database=None)

# (raw bytes, normalised ip, event JSON bytes)
VALID: list[tuple[bytes, str, bytes]] = [
    (b"8.8.8.8", "8.8.8.8", b'{"ip":"8.8.8.8"}'),
    (b"  1.1.1.1\n", "1.1.1.1", b'{"ip":"1.1.1.1"}'),
    (b"10.0.0.1", "10.0.0.1", b'{"ip":"10.0.0.1"}'),  # private is valid input; the policy finalises it
    (b"2001:4860:4860::8888", "2001:4860:4860::8888", b'{"ip":"2001:4860:4860::8888"}'),
    (b"::ffff:1.2.3.4", "1.2.3.4", b'{"ip":"::ffff:1.2.3.4"}'),
    (b'"8.8.4.4"', "8.8.4.4", b'{"ip":"8.8.4.4"}'),
    (b'"::FFFF:8.8.8.8"', "8.8.8.8", b'{"ip":"::FFFF:8.8.8.8"}'),
    (b'{"ip":"1.1.1.1"}', "1.1.1.1", b'{"ip":"1.1.1.1"}'),
    (b'{"ip":"2001:DB8:0:0::1"}', "2001:db8::1", b'{"ip":"2001:DB8:0:0::1"}'),
    (b'{"ip":"::ffff:8.8.8.8","jail":"sshd"}', "8.8.8.8", b'{"ip":"::ffff:8.8.8.8","jail":"sshd"}'),
    (
        b'{"z": 1,  "ip" : "9.9.9.9", "a":[1, 2.50, {"b":null}], "s":"\\u00e9\xc3\xa9", "t":true}',
        "9.9.9.9",
        b'{"z": 1,  "ip" : "9.9.9.9", "a":[1, 2.50, {"b":null}], "s":"\\u00e9\xc3\xa9", "t":true}',
    ),
    (b'  {"ip":"1.1.1.1"}\r\n', "1.1.1.1", b'{"ip":"1.1.1.1"}'),  # surrounding whitespace is trimmed
]


@pytest.mark.parametrize(("raw", "ip", "event_json"), VALID)
def test_parse_event_valid_inputs(raw: bytes, ip: str, event_json: bytes) -> None:
    """Bare IP text, JSON strings and JSON objects give the normalised IP and the expected event JSON."""
    assert parse_event(raw, MAX) == ParsedEvent(ip, event_json)


def test_parse_event_object_fields_pass_through_byte_for_byte() -> None:
    """A JSON object's bytes are kept verbatim: field order, spacing, escapes and number spelling survive."""
    raw = b'{"host":"web-1", "ip":"8.8.8.8","count":1.0e0,"nested":{"k":[3, 2, 1]},"msg":"caf\\u00e9"}'
    parsed = parse_event(raw, MAX)
    assert parsed.event_json == raw
    assert json.loads(parsed.event_json)["nested"] == {"k": [3, 2, 1]}


def test_parse_event_exactly_max_bytes_is_accepted() -> None:
    """A message of exactly max_bytes is accepted; the limit is inclusive."""
    raw = b'{"ip":"8.8.8.8","pad":"' + b"x" * 10 + b'"}'
    assert parse_event(raw, len(raw)).ip == "8.8.8.8"


# (raw bytes, max bytes, reason)
BAD: list[tuple[bytes | None, int, str]] = [
    (None, MAX, "empty message (null value)"),
    (b"x" * 11, 10, "message too large (11 bytes > 10)"),
    (b'{"ip":"8.8.8.8"}', 5, "message too large (16 bytes > 5)"),
    (b"\xff\xfe8.8.8.8", MAX, "not UTF-8"),
    (b'{"ip":"8.8.8.8","x":"\xc3"}', MAX, "not UTF-8"),
    (b"", MAX, "empty message"),
    (b" \t\r\n", MAX, "empty message"),
    (b"{bad", MAX, "invalid JSON"),
    (b'{"ip":"1.1.1.1"} trailing', MAX, "invalid JSON"),
    (b'"1.1.1.1', MAX, "invalid JSON"),
    (b"[1, 2]", MAX, "JSON value must be an object or an IP string, not list"),
    (b'["8.8.8.8"]', MAX, "JSON value must be an object or an IP string, not list"),
    (b"42", MAX, "JSON value must be an object or an IP string, not int"),
    (b"-1", MAX, "JSON value must be an object or an IP string, not int"),
    (b"2130706433", MAX, "JSON value must be an object or an IP string, not int"),
    (b"3.5", MAX, "JSON value must be an object or an IP string, not float"),
    (b"true", MAX, "JSON value must be an object or an IP string, not bool"),
    (b"false", MAX, "JSON value must be an object or an IP string, not bool"),
    (b"null", MAX, "JSON value must be an object or an IP string, not NoneType"),
    (b"{}", MAX, "missing field 'ip'"),
    (b'{"addr":"8.8.8.8"}', MAX, "missing field 'ip'"),
    (b'{"IP":"8.8.8.8"}', MAX, "missing field 'ip'"),
    (b'{"ip":134744072}', MAX, "field 'ip' must be a string, not int"),
    (b'{"ip":null}', MAX, "field 'ip' must be a string, not NoneType"),
    (b'{"ip":["8.8.8.8"]}', MAX, "field 'ip' must be a string, not list"),
    (b'{"ip":"999.1.1.1"}', MAX, "invalid ip: not an IP address"),
    (b'{"ip":"010.1.1.1"}', MAX, "invalid ip: leading zeros"),
    (b'{"ip":"1.2.3.4:80"}', MAX, "invalid ip: port not allowed"),
    (b'{"ip":""}', MAX, "invalid ip: empty"),
    (b'"10.0.0.0/8"', MAX, "invalid ip: CIDR block not allowed"),
    (b'"nope"', MAX, "invalid ip: not an IP address"),
    (b"hello", MAX, "invalid ip: not an IP address"),
    (b"1.2.3", MAX, "invalid ip: non-canonical IPv4"),
]


@pytest.mark.parametrize(("raw", "max_bytes", "reason"), BAD)
def test_parse_event_bad_inputs_raise_bad_event_with_reason(
    raw: bytes | None, max_bytes: int, reason: str
) -> None:
    """Each kind of bad input raises BadEvent whose reason names exactly what is wrong."""
    with pytest.raises(BadEvent) as info:
        parse_event(raw, max_bytes)
    assert info.value.reason == reason
    assert isinstance(info.value, PipelineError)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_parse_event_rejects_non_standard_json_constants(constant: bytes) -> None:
    """An object containing NaN/Infinity is not JSON (RFC 8259) and goes to the dead-letter topic."""
    with pytest.raises(BadEvent):
        parse_event(b'{"ip":"8.8.8.8","score":' + constant + b"}", MAX)


@PURE
@given(st.binary(max_size=200))
def test_parse_event_never_raises_anything_but_bad_event(raw: bytes) -> None:
    """Arbitrary bytes either parse to an event whose JSON has a string ip, or raise BadEvent."""
    try:
        parsed = parse_event(raw, MAX)
    except BadEvent as exc:
        assert exc.reason
        return
    assert isinstance(json.loads(parsed.event_json)["ip"], str)


# --- dead_letter ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"ip":"999.1.1.1"}',
        b"\xff\xfe\x00binary\x80",
        b"",
        bytes(range(256)),
    ],
    ids=["json", "non-utf8", "empty", "all-bytes"],
)
def test_dead_letter_carries_reason_origin_and_exact_original_bytes(raw: bytes) -> None:
    """The DLQ record holds the reason, topic/partition/offset, and base64 that decodes to the exact input."""
    record = json.loads(dead_letter(raw, "invalid ip: not an IP address", "ip-events", 3, 12345))
    assert record["reason"] == "invalid ip: not an IP address"
    assert (record["topic"], record["partition"], record["offset"]) == ("ip-events", 3, 12345)
    assert base64.b64decode(record["original_b64"], validate=True) == raw
    assert record["original_preview"] == raw.decode("utf-8", errors="replace")


def test_dead_letter_for_null_value_has_no_original() -> None:
    """A tombstone (null value) is dead-lettered with original_b64 null and no preview."""
    record = json.loads(dead_letter(None, "empty message (null value)", "ip-events", 0, 7))
    assert record == {
        "reason": "empty message (null value)",
        "topic": "ip-events",
        "partition": 0,
        "offset": 7,
        "original_b64": None,
    }


def test_dead_letter_preview_is_truncated_but_base64_is_complete() -> None:
    """The readable preview is capped at DLQ_PREVIEW_CHARS bytes; the base64 copy is the whole input."""
    raw = b"a" * (DLQ_PREVIEW_CHARS * 3)
    record = json.loads(dead_letter(raw, "message too large", "ip-events", 1, 2))
    assert record["original_preview"] == "a" * DLQ_PREVIEW_CHARS
    assert base64.b64decode(record["original_b64"]) == raw


@PURE
@given(
    raw=st.binary(max_size=3000),
    reason=st.text(max_size=50),
    partition=st.integers(min_value=0, max_value=1000),
    offset=st.integers(min_value=0, max_value=2**62),
)
def test_dead_letter_round_trips_any_bytes(raw: bytes, reason: str, partition: int, offset: int) -> None:
    """For any input bytes and reason, the DLQ record is valid JSON and its base64 decodes back exactly."""
    out = dead_letter(raw, reason, "t", partition, offset)
    out.decode("utf-8")  # the record itself is always UTF-8
    record = json.loads(out)
    assert record["reason"] == reason
    assert (record["partition"], record["offset"]) == (partition, offset)
    assert base64.b64decode(record["original_b64"]) == raw


def test_parse_then_dead_letter_pipeline_for_bad_event() -> None:
    """A rejected input's reason and bytes reach the dead-letter record unchanged."""
    raw = b'{"ip": 12}'
    with pytest.raises(BadEvent) as info:
        parse_event(raw, MAX)
    record = json.loads(dead_letter(raw, info.value.reason, "ip-events", 2, 99))
    assert record["reason"] == "field 'ip' must be a string, not int"
    assert base64.b64decode(record["original_b64"]) == raw
