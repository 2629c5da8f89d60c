"""parse_event, the Router and the near cache: valid inputs normalised and passed through, bad inputs named
exactly, hits served from the near cache, first sights enriched at once and sent to the owner once."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import BadEvent, PipelineError
from pipeline.hotpath import parsing
from pipeline.hotpath.routing import UNKNOWN_HASH, NearCache, ParsedEvent, Route, Router, parse_event
from pipeline.hotpath.shapes import public_view
from pipeline.messages import DLQ_ORIGINAL_MAX, DLQ_PREVIEW_CHARS, dead_letter, enriched
from pipeline.models import EntryStatus, GeoData, GeoEntry, country_label
from tests.unit.hotpath.test_parsing import objects

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
    # a port is dropped (a load balancer's access log writes client:port); the event keeps it
    (b'{"ip":"1.2.3.4:80"}', "1.2.3.4", b'{"ip":"1.2.3.4:80"}'),
    (b'{"ip":"[2001:DB8::1]:443"}', "2001:db8::1", b'{"ip":"[2001:DB8::1]:443"}'),
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
    (b'{"ip":"1.2.3.4:99999"}', MAX, "invalid ip: port not allowed"),
    (b'{"ip":"[2001:db8::1]:x"}', MAX, "invalid ip: brackets not allowed"),
    (b"203.0.113.9:51234", MAX, "invalid ip: port not allowed"),  # a bare message is one address
    (b'"203.0.113.9:51234"', MAX, "invalid ip: port not allowed"),
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


def test_dead_letter_of_a_huge_original_keeps_a_prefix_and_its_size() -> None:
    """An original longer than DLQ_ORIGINAL_MAX keeps that prefix, flagged, so the record fits Kafka."""
    raw = b"x" * (DLQ_ORIGINAL_MAX + 10)
    record = json.loads(dead_letter(raw, "message too large", "t", 0, 1))
    assert base64.b64decode(record["original_b64"]) == raw[:DLQ_ORIGINAL_MAX]
    assert (record["original_truncated"], record["original_size"]) == (True, len(raw))
    assert len(dead_letter(raw, "message too large", "t", 0, 1)) < 1024 * 1024


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


FULL = GeoData(country_code="US", country_name="United States", city="Mountain View", asn=15169)
WHERE = ("ip-events", 3, 42)


# --- enriched -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event_json",
    [
        b'{"ip":"8.8.8.8"}',
        b'{"z": 1,  "ip" : "::ffff:8.8.8.8", "a":[1, {"b":null}], "s":"caf\\u00e9 \xc3\xa9", "q":"\\"}"}',
    ],
)
def test_enriched_is_valid_json_with_the_event_unchanged(event_json: bytes) -> None:
    """enriched() concatenates into valid JSON whose "event" equals the input object and "geo" the entry."""
    entry = GeoEntry("8.8.8.8", EntryStatus.RESOLVED, geo=FULL, provider="ipapi", attempts=1)
    out = enriched(b"8.8.8.8", entry.to_json(), event_json)
    doc = json.loads(out)
    assert doc["ip"] == "8.8.8.8"
    assert doc["event"] == json.loads(event_json)
    assert doc["geo"] == json.loads(entry.to_json())
    assert GeoEntry.from_dict(doc["geo"]) == entry
    assert event_json in out  # the event bytes are embedded verbatim


def test_enriched_ipv6_key() -> None:
    """An IPv6 key is embedded as a JSON string as is."""
    entry = GeoEntry("2001:4860:4860::8888", EntryStatus.PENDING)
    doc = json.loads(enriched(b"2001:4860:4860::8888", entry.to_json(), b'{"ip":"2001:4860:4860::8888"}'))
    assert doc["ip"] == "2001:4860:4860::8888"
    assert doc["geo"]["status"] == "pending"


# --- the router and the near cache ----------------------------------------------------------------------

RESEND = 600.0


def provisional(ip: str, now: float) -> bytes:
    """A stand-in for the offline first-sight entry: pending, with a country."""
    geo = GeoData(country_code="DE", country_name="Germany")
    return GeoEntry(ip, EntryStatus.PENDING, geo=geo, provider="offline", first_seen=now).to_json()


def router(capacity: int = 10) -> Router:
    return Router(NearCache(capacity), MAX, provisional, lambda key: len(key) * 1000 + key[-1], RESEND)


def test_route_serves_a_known_ip_from_the_near_cache() -> None:
    """A valid event whose IP the near cache knows is enriched with that entry, keyed by the normalised IP."""
    r = router()
    entry = GeoEntry("8.8.8.8", EntryStatus.RESOLVED, geo=FULL, provider="ipapi", attempts=1).to_json()
    r.near.learn(b"8.8.8.8", entry)
    kind, key, value, key_hash, owed = r.route(b'{"ip":"::ffff:8.8.8.8","n":1}', b"any", WHERE, 100.0)
    assert (kind, key, key_hash, owed) == (Route.HIT, b"8.8.8.8", 7000 + ord("8"), ())
    assert value == enriched(b"8.8.8.8", public_view(entry), b'{"ip":"::ffff:8.8.8.8","n":1}')


def test_route_enriches_a_first_sight_at_once_with_the_provisional_entry() -> None:
    """An IP the near cache does not know is enriched at once with its provisional (offline) entry and
    marked NEW, so the hot path also sends it to the table's owner."""
    kind, key, value, h, owed = router().route(b" 2001:DB8::1 ", None, WHERE, 100.0)
    doc = json.loads(value)
    assert (kind, key, owed) == (Route.NEW, b"2001:db8::1", ((b"2001:db8::1", h, Route.NEW),))
    assert doc["geo"]["status"] == "pending" and doc["geo"]["country_code"] == "DE"
    assert doc["event"] == {"ip": "2001:DB8::1"}


def test_route_sends_an_ip_once_per_pending_period_not_once_per_event() -> None:
    """Later events of a new IP are hits on its provisional entry; after the pending period without an
    answer from the owner the next event sends the IP again, once."""
    r = router()
    kinds = [r.route(b"8.8.8.8", None, WHERE, now)[0] for now in (100.0, 101.0, 102.0)]
    assert kinds == [Route.NEW, Route.HIT, Route.HIT]
    assert r.route(b"8.8.8.8", None, WHERE, 100.0 + RESEND)[0] is Route.NEW
    assert r.route(b"8.8.8.8", None, WHERE, 101.0 + RESEND)[0] is Route.HIT


def test_route_stops_resending_once_the_owner_published_the_ip() -> None:
    """Once the resolved topic brought the owner's entry, the IP is never sent as seen again."""
    r = router()
    r.route(b"8.8.8.8", None, WHERE, 100.0)
    r.near.learn(b"8.8.8.8", GeoEntry("8.8.8.8", EntryStatus.PENDING).to_json())
    assert r.route(b"8.8.8.8", None, WHERE, 100.0 + 10 * RESEND)[0] is Route.HIT


def test_route_serves_a_near_cache_miss_from_the_replica_as_a_hit_and_keeps_it_near() -> None:
    """An IP the near cache lost but the replica holds is a hit with the table's entry, not a first
    sight: no provisional entry, nothing sent to the owner; the next event finds it in the near cache."""
    entry = GeoEntry("8.8.8.8", EntryStatus.RESOLVED, geo=FULL, provider="ipapi", attempts=1).to_json()
    replica = {b"8.8.8.8": entry}
    r = Router(NearCache(1), MAX, provisional, lambda key: 7, RESEND, recall=replica.get)
    r.begin()
    kind, _, value, _, _ = r.route(b"8.8.8.8", None, WHERE, 100.0)
    assert (kind, json.loads(value)["geo"]["status"], r.recalled) == (Route.HIT, "resolved", 1)
    assert r.route(b"8.8.8.8", None, WHERE, 101.0)[0] is Route.HIT and r.recalled == 1
    assert r.route(b"1.1.1.1", None, WHERE, 102.0)[0] is Route.NEW  # in neither: a first sight


def test_near_cache_refresh_updates_only_what_it_holds() -> None:
    """A published entry replaces the near cache's copy of an IP it holds and adds none it does not."""
    near = NearCache(10)
    near.put(b"1.1.1.1", b"old")
    near.refresh(b"1.1.1.1", b"new")
    near.refresh(b"8.8.8.8", b"other")
    assert (near.entry(b"1.1.1.1"), near.entry(b"8.8.8.8")) == (b"new", None)
    near.refresh(b"1.1.1.1", None)
    assert near.entry(b"1.1.1.1") is None


def test_route_dead_letters_bad_input_with_the_original_key_and_where_it_came_from() -> None:
    """Bad input keeps the producer's key; the DLQ record names the reason, topic, partition and offset."""
    kind, key, value, _, _ = router().route(b'{"ip": 7}', b"k", WHERE, 100.0)
    record = json.loads(value)
    assert (kind, key) == (Route.DEAD_LETTER, b"k")
    assert (record["topic"], record["partition"], record["offset"]) == WHERE
    assert record["reason"] == "field 'ip' must be a string, not int"


def test_route_remembers_spellings_and_gives_the_same_key_for_each() -> None:
    """Different spellings of one address give one key; an invalid spelling is not remembered as valid."""
    r = router()
    keys = {r.route(raw, None, WHERE, 100.0)[1] for raw in (b"::ffff:8.8.8.8", b"8.8.8.8", b"::FFFF:8.8.8.8")}
    assert keys == {b"8.8.8.8"}
    assert r.route(b"8.8.8.08", None, WHERE, 100.0)[0] is Route.DEAD_LETTER
    assert r.route(b"8.8.8.08", None, WHERE, 100.0)[0] is Route.DEAD_LETTER


def test_near_cache_evicts_the_entry_used_longest_ago() -> None:
    """Past capacity the least recently used entry goes: reading an entry keeps it, however old."""
    near = NearCache(2)
    near.learn(b"a", b"1")
    near.learn(b"b", b"2")
    near.get(b"a")
    near.learn(b"c", b"3")
    assert (near.entry(b"a"), near.entry(b"b"), near.entry(b"c"), len(near)) == (b"1", None, b"3", 2)


def test_near_cache_learning_keeps_the_key_hash_and_clears_the_own_mark() -> None:
    """A newer entry from the resolved topic replaces the value, keeps the cached key hash and turns this
    worker's own mark (sent, unanswered) into "sent, answered" (the owner has the IP now)."""
    near = NearCache(5)
    near.put(b"a", b"old", 42, -100.0)
    near.learn(b"a", b"new")
    assert near.get(b"a") == (b"new", 42, 100.0)
    near.learn(b"b", b"x")
    assert near.get(b"b") == (b"x", UNKNOWN_HASH, 0.0)


def test_near_cache_keeps_the_newer_of_two_owner_entries() -> None:
    """Records of one IP arriving out of order (two partitions of the resolved topic): an older owner's
    entry never replaces a newer one, an equal or newer one does, and our own provisional entry always
    gives way to the owner's whatever its age."""
    old, new = (GeoEntry("1.2.3.4", EntryStatus.RESOLVED, updated_at=t).to_json() for t in (100.0, 200.0))
    near = NearCache(5)
    near.learn(b"a", new)
    near.learn(b"a", old)
    assert near.entry(b"a") == new
    near.refresh(b"a", new)
    assert near.entry(b"a") == new
    near.put(b"b", GeoEntry("1.2.3.5", EntryStatus.PENDING, updated_at=300.0).to_json(), 7, -300.0)
    near.learn(b"b", old)
    assert near.get(b"b") == (old, 7, 300.0)


def test_near_cache_tombstone_forgets_and_zero_capacity_keeps_nothing() -> None:
    """A None entry (tombstone) removes the IP; a capacity of 0 disables the cache."""
    near = NearCache(5)
    near.learn(b"a", b"1")
    near.learn(b"a", None)
    off = NearCache(0)
    off.learn(b"a", b"1")
    assert (near.get(b"a"), off.get(b"a"), len(off)) == (None, None, 0)


@PURE
@given(
    st.lists(st.sampled_from([b"8.8.8.8", b"1.1.1.1", b"9.9.9.9", b"bad", b"::ffff:1.1.1.1"]), max_size=60)
)
def test_property_each_ip_is_new_once_within_a_pending_period(raws: list[bytes]) -> None:
    """Whatever the order of events, each valid IP is routed NEW exactly once within one pending period
    and every valid event is enriched (HIT or NEW)."""
    r = router(capacity=100)
    routed = [r.route(raw, None, WHERE, 100.0 + i) for i, raw in enumerate(raws)]
    new_keys = [key for kind, key, *_ in routed if kind is Route.NEW]
    assert len(new_keys) == len(set(new_keys))
    valid = [raw for raw in raws if raw != b"bad"]
    assert sum(kind is not Route.DEAD_LETTER for kind, *_ in routed) == len(valid)


def test_undo_forgets_the_first_sights_of_a_batch_that_was_not_delivered() -> None:
    """After `undo` the IPs first seen in the failed batch are new again, so the replay sends them; IPs the
    owner had already published stay."""
    r = router()
    r.near.learn(b"9.9.9.9", GeoEntry("9.9.9.9", EntryStatus.RESOLVED).to_json())
    r.begin()
    assert [r.route(raw, None, WHERE, 100.0)[0] for raw in (b"8.8.8.8", b"9.9.9.9")] == [Route.NEW, Route.HIT]
    r.undo()
    r.begin()
    assert [r.route(raw, None, WHERE, 101.0)[0] for raw in (b"8.8.8.8", b"9.9.9.9")] == [Route.NEW, Route.HIT]


def test_a_known_ip_in_use_is_sent_to_the_owner_again_once_a_day() -> None:
    """An IP the owner published is a plain hit, except once a day of use, when it is a TOUCH (a hit that
    also tells the owner the IP is still seen, so it is not forgotten)."""
    r = router()
    r.near.learn(b"8.8.8.8", GeoEntry("8.8.8.8", EntryStatus.RESOLVED).to_json())
    day = 86400.0
    kinds = [r.route(b"8.8.8.8", None, WHERE, now)[0] for now in (100.0, 200.0, 100.0 + day, 200.0 + day)]
    assert kinds == [Route.HIT, Route.HIT, Route.TOUCH, Route.HIT]


def test_overdue_returns_own_first_sights_unanswered_past_the_resend_time_once() -> None:
    """First sights the owner never answered within the resend time are returned (and marked sent again,
    so not twice); answered ones and recent ones are not."""
    r = router()
    r.route(b"8.8.8.8", None, WHERE, 100.0)
    r.route(b"9.9.9.9", None, WHERE, 100.0 + RESEND / 2)
    r.route(b"1.1.1.1", None, WHERE, 100.0)
    r.near.learn(b"1.1.1.1", GeoEntry("1.1.1.1", EntryStatus.PENDING).to_json())
    assert [ip for ip, _ in r.overdue(100.0 + RESEND)] == [b"8.8.8.8"]
    assert r.overdue(100.0 + RESEND + 1) == []


def test_countries_count_enriched_events_by_the_country_of_their_entry() -> None:
    """Hits and first sights count under their entry's country, private and country-less entries under
    `private` and `unknown`, dead letters nowhere; `begin` and `undo` start the count again."""
    r = router()
    r.near.learn(b"8.8.8.8", GeoEntry("8.8.8.8", EntryStatus.RESOLVED, geo=FULL).to_json())
    r.near.learn(b"10.0.0.1", GeoEntry("10.0.0.1", EntryStatus.PRIVATE).to_json())
    r.near.learn(b"1.2.3.4", GeoEntry("1.2.3.4", EntryStatus.UNRESOLVED).to_json())
    r.begin()
    for raw in (b"8.8.8.8", b"8.8.8.8", b"10.0.0.1", b"1.2.3.4", b"5.6.7.8", b"5.6.7.8", b"bad"):
        r.route(raw, None, WHERE, 100.0)
    assert r.countries() == {"US": 2, "private": 1, "unknown": 1, "DE": 2}
    r.undo()
    assert not r.countries()
    r.route(b"8.8.8.8", None, WHERE, 100.0)
    r.begin()
    assert not r.countries()


@pytest.mark.parametrize(
    ("entry", "label"),
    [
        (GeoEntry("8.8.8.8", EntryStatus.RESOLVED, geo=GeoData("US", "United States")).to_json(), "US"),
        (GeoEntry("10.0.0.1", EntryStatus.PRIVATE).to_json(), "private"),
        (GeoEntry("1.2.3.4", EntryStatus.PARTIAL).to_json(), "unknown"),
        (b'{"geo":{"country_code":"us"}}', "unknown"),  # not upper case: never a new label
        (b'{"geo":{"country_code":"USA"}}', "unknown"),
        (b'{"geo":{"country_code":"\xc3\x9cX"}}', "unknown"),
        (b'{"geo":{"country_code":"1X"}}', "unknown"),
        (b'{"geo":{"country_code":"D', "unknown"),  # truncated
        (b"garbage", "unknown"),
    ],
)
def test_country_label_is_a_two_letter_code_or_one_of_two_words(entry: bytes, label: str) -> None:
    """Only two upper-case ASCII letters become a label (at most 676 of them), anything else is `unknown`
    or `private`: the metric's label set stays bounded whatever a provider answers."""
    assert country_label(entry) == label


# -- inputs consumers may read differently (issue 19, item 13a): refused to the dead-letter topic ----------

AMBIGUOUS = [
    (b'{"ip":"1.1.1.1","ip":"8.8.8.8"}', "duplicate key 'ip'", "duplicate_key"),
    (b'{"ip":"1.1.1.1","user":"a","user":"b"}', "duplicate key 'user'", "duplicate_key"),
    (b'{"ip":"1.1.1.1","n":{"k":1,"k":2}}', "duplicate key 'k'", "duplicate_key"),
    (b'{"ip":"1.1.1.1","s":"\\ud800"}', "lone surrogate", "lone_surrogate"),
    (b'{"ip":"1.1.1.1","s":["x","\\udc00y"]}', "lone surrogate", "lone_surrogate"),
    (b'{"ip":"1.1.1.1","\\udbff":1}', "lone surrogate", "lone_surrogate"),
]


@pytest.mark.parametrize(("raw", "reason", "label"), AMBIGUOUS)
def test_ambiguous_json_objects_are_dead_lettered(raw: bytes, reason: str, label: str) -> None:
    """Duplicate keys (consumers disagree on which wins) and lone surrogate escapes (not Unicode: strict
    decoders refuse them) are refused with a named reason, never passed through verbatim."""
    from pipeline.hotpath.routing import reason_label

    with pytest.raises(BadEvent) as caught:
        parse_event(raw, MAX)
    assert reason in caught.value.reason and reason_label(caught.value.reason) == label


@pytest.mark.parametrize(
    "raw",
    [
        b'{"ip":"1.1.1.1","s":"\\ud83d\\ude00"}',  # a surrogate pair: one emoji, valid
        b'{"ip":"1.1.1.1","s":"\\\\ud800"}',  # an escaped backslash then text: no escape at all
        b'{"ip":"1.1.1.1","a":{"k":1},"b":{"k":2}}',  # the same key in two objects is not a duplicate
    ],
)
def test_look_alikes_of_ambiguous_objects_pass_through(raw: bytes) -> None:
    """Valid pairs, escaped backslashes and a key repeated across objects are ordinary input."""
    assert parse_event(raw, MAX).event_json == raw


def routed(raw: bytes) -> tuple[object, ...]:
    """What a fresh Router makes of `raw`: (route, key, value, hash, owed), all of it."""
    return router().route(raw, b"k", WHERE, 100.0)


@settings(database=None, max_examples=300)
@given(st.one_of(objects(), st.binary(max_size=40), st.sampled_from([b'{"ip":"8.8.8.8:53"}', b'{"ip":"x"}'])))
def test_property_the_routers_fast_read_routes_exactly_as_the_exact_parser(raw: bytes) -> None:
    """Router.route reads the commonest event without parse_event; what comes out is the same as through
    the exact parser, dead letters and their reasons included."""
    fast = routed(raw)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parsing, "_flat_members", lambda text: None)
        exact = routed(raw)
    assert fast == exact
