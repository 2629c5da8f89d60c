"""The enriched record's shapes: the envelope's public view, several IPs, ECS fields, private and failed
fields, the per-field status, and the router choosing key and shape (pure: no loop, no broker)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.hotpath.extract import extract, networks, normalise_with_port
from pipeline.hotpath.routing import NearCache, Route, Router
from pipeline.hotpath.shapes import ECS, ENVELOPE, Views, ecs, ecs_parts, public_view
from pipeline.messages import enriched
from pipeline.models import EntryStatus, GeoData, GeoEntry
from tests.support import realistic

WHERE = ("ip-events", 3, 1207)
GOOGLE = GeoData(
    "US",
    "United States",
    "Virginia",
    "Ashburn",
    39.03,
    -77.5,
    15169,
    "GOOGLE",
    "Google LLC",
    "Google Public DNS",
)
PUBLIC_KEYS = [
    "status",
    "country_code",
    "country_name",
    "region",
    "city",
    "latitude",
    "longitude",
    "asn",
    "as_name",
    "isp",
    "org",
    "proxy",  # the flags: the entry's geo keys after the place, whatever GeoData holds
    "hosting",
    "mobile",
    "source",
    "data_version",
    "updated_at",
]


def entry(ip: str) -> bytes:
    """A resolved entry for a global address, a private one for anything in 10/8 or 192.168/16."""
    if ip.startswith(("10.", "192.168.")):
        return GeoEntry(ip, EntryStatus.PRIVATE, updated_at=5.0).to_json()
    return GeoEntry(
        ip,
        EntryStatus.RESOLVED,
        geo=GOOGLE,
        provider="ipapi",
        attempts=2,
        first_seen=1.0,
        updated_at=5.0,
        next_retry_at=9.0,
        data_version="ipapi",
        last_seen=4.0,
    ).to_json()


def test_public_view_is_flat_and_leaves_the_retry_bookkeeping_out() -> None:
    """status, the geo keys, source, data_version, updated_at; no attempts/next_retry_at/last_error/seen."""
    view = json.loads(public_view(entry("8.8.8.8")))
    assert list(view) == PUBLIC_KEYS
    assert (view["country_code"], view["source"], view["updated_at"]) == ("US", "ipapi", 5.0)


def test_new_geo_keys_flow_into_the_view_and_the_ecs_status() -> None:
    """Keys a provider adds to the entry's geo (proxy, hosting, mobile) appear without a code change."""
    data = json.loads(entry("8.8.8.8"))
    data["geo"] |= {"proxy": True, "hosting": False, "mobile": None}
    raw = json.dumps(data).encode()
    view = json.loads(public_view(raw))
    assert (view["proxy"], view["hosting"], view["mobile"]) == (True, False, None)
    assert list(view)[-3:] == ["source", "data_version", "updated_at"]
    status = ecs_parts(raw).status  # ECS leaves unknown values out
    assert (status["proxy"], status["hosting"], "mobile" in status) == (True, False, False)


def test_an_entry_written_before_the_flags_shows_them_as_null() -> None:
    """An older entry (no proxy/hosting/mobile in its geo) gets the same view keys, the flags null."""
    data = json.loads(entry("8.8.8.8"))
    for flag in ("proxy", "hosting", "mobile"):
        data["geo"].pop(flag)
    view = json.loads(public_view(json.dumps(data).encode()))
    assert list(view) == PUBLIC_KEYS
    assert (view["proxy"], view["hosting"], view["mobile"]) == (None, None, None)


def test_views_are_derived_once_per_entry_bytes() -> None:
    """The same entry bytes give the same view object: a hit does no JSON work."""
    views, raw = Views(), entry("8.8.8.8")
    assert views.view(raw) is views.view(raw) and views.ecs(raw) is views.ecs(raw)


def test_entries_that_differ_only_in_their_ip_share_one_view() -> None:
    """Two IPs with the same answer get one view object, equal to each entry's own public view; an entry
    that differs elsewhere, or does not start with its IP, gets its own."""
    views = Views()
    a, b = entry("8.8.8.8"), entry("8.8.4.4")
    assert views.view(a) is views.view(b) and views.view(b) == public_view(b)
    other = json.loads(a)
    other["updated_at"] = 6.0
    changed = json.dumps(other, separators=(",", ":")).encode()
    assert views.view(changed) == public_view(changed) != views.view(a)
    ip_last = json.dumps({**{k: v for k, v in other.items() if k != "ip"}, "ip": "1.1.1.1"}).encode()
    assert views.view(ip_last) == public_view(ip_last)


def router(fields: tuple[str, ...], fmt: str = "envelope", key: str = "ip", **kw: Any) -> Router:
    return Router(
        NearCache(100),
        65536,
        lambda ip, now: entry(ip),
        lambda k: len(k),
        600.0,
        fields=fields,
        output_format=fmt,
        key_mode=key,
        **kw,
    )


def test_the_default_envelope_is_todays_shape_with_the_public_view() -> None:
    """`ip` alone: {"ip", "geo": view, "event": verbatim}, keyed by IP, one seen record per new IP."""
    raw = b'{"ip":"::ffff:8.8.8.8", "jail":"sshd"}'
    kind, key, value, h, owed = router(("ip",)).route(raw, b"k", WHERE, 1.0)
    assert value == enriched(b"8.8.8.8", public_view(entry("8.8.8.8")), raw)
    assert (kind, key, h, owed) == (Route.NEW, b"8.8.8.8", 7, ((b"8.8.8.8", 7, Route.NEW),))


def test_an_envelope_with_several_ips_lists_each_field_and_keeps_the_first_on_top() -> None:
    """Two fields: `ip`/`geo` are the first IP's, `ips` has one item per IP with its field; the event is
    verbatim; a private address is a class (status private), not a failure; the key is the input's."""
    raw = b'{"source":{"ip":"8.8.8.8:51234"},"destination":{"ip":"192.168.1.10"}}'
    r = router(("source.ip", "destination.ip"), key="input")
    kind, key, value, h, owed = r.route(raw, b"flow-7", WHERE, 1.0)
    doc = json.loads(value)
    assert (kind, key, h) == (Route.NEW, b"flow-7", len(b"flow-7"))
    assert [o[0] for o in owed] == [b"8.8.8.8", b"192.168.1.10"]
    assert (doc["ip"], doc["geo"]["country_code"], doc["event"]) == ("8.8.8.8", "US", json.loads(raw))
    assert [(i["field"], i["ip"], i["geo"]["status"]) for i in doc["ips"]] == [
        ("source.ip", "8.8.8.8", "resolved"),
        ("destination.ip", "192.168.1.10", "private"),
    ]
    assert (r.hits, r.new, sum(r.failed.values())) == (0, 2, 0)


def test_an_ip_in_two_fields_is_looked_up_once() -> None:
    """source.ip repeated in related.ip: one near-cache lookup, one seen record, shown in both places."""
    raw = b'{"source":{"ip":"8.8.8.8"},"related":{"ip":["8.8.8.8","1.1.1.1"]}}'
    r = router(("source.ip", "related.ip"))
    _, key, value, _, owed = r.route(raw, None, WHERE, 1.0)
    assert key == b"8.8.8.8" and [o[0] for o in owed] == [b"8.8.8.8", b"1.1.1.1"]
    assert [(i["field"], i.get("index")) for i in json.loads(value)["ips"]] == [
        ("source.ip", None),
        ("related.ip", 0),
        ("related.ip", 1),
    ]
    assert r.route(raw, None, WHERE, 2.0)[4] == () and (r.hits, r.new) == (2, 2)


def test_a_failed_field_is_marked_and_counted_and_the_event_goes_on() -> None:
    """One field without a valid IP: the event is enriched with the others, the field says why."""
    raw = b'{"src_ip":"203.0.113.9","dest_ip":"999.1.1.1"}'
    r = router(("src_ip", "dest_ip"))
    kind, _, value, _, _ = r.route(raw, None, WHERE, 1.0)
    items = json.loads(value)["ips"]
    assert kind is Route.NEW and items[1] == {"field": "dest_ip", "error": "invalid ip: not an IP address"}
    assert r.failed == {"invalid_ip": 1}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"other":1}', "missing fields 'src_ip', 'dest_ip': none holds an IP"),
        (b'{"src_ip":"nope","dest_ip":"10.0.0.1/8"}', "invalid ip: not an IP address"),
        (b'{"src_ip":5}', "field 'src_ip' must be a string, not int"),
        (b"[1]", "JSON value must be an object or an IP string, not list"),
    ],
)
def test_an_event_without_any_valid_ip_is_dead_lettered_with_the_reason(raw: bytes, reason: str) -> None:
    """No field holds a valid IP: the dead-letter topic gets the original and the reason, as today."""
    kind, key, value, _, owed = router(("src_ip", "dest_ip")).route(raw, b"k", WHERE, 1.0)
    assert (kind, key, owed, json.loads(value)["reason"]) == (Route.DEAD_LETTER, b"k", (), reason)


def test_ecs_adds_geo_and_as_beside_each_field_and_the_status_in_one_place() -> None:
    """ECS: source.geo.*/source.as.* for a global address, nothing beside a private one (its status
    says private), a failed element null in the aligned arrays, and geo_pipeline per field."""
    event = {
        "@timestamp": "2026-12-01T10:00:00Z",
        "source": {"ip": "8.8.8.8", "port": 51234},
        "destination": {"ip": "10.1.2.3"},
        "related": {"ip": ["8.8.8.8", "bogus"]},
    }
    r = router(("source.ip", "destination.ip", "related.ip"), "ecs", "input")
    _, key, value, _, _ = r.route(json.dumps(event).encode(), None, WHERE, 1.0)
    doc = json.loads(value)
    assert key is None and doc["@timestamp"] == event["@timestamp"] and doc["source"]["port"] == 51234
    assert doc["source"]["geo"] == {
        "country_iso_code": "US",
        "country_name": "United States",
        "region_name": "Virginia",
        "city_name": "Ashburn",
        "location": {"lat": 39.03, "lon": -77.5},
    }
    assert doc["source"]["as"] == {"number": 15169, "organization": {"name": "GOOGLE"}}
    assert doc["destination"] == {"ip": "10.1.2.3"}
    assert doc["related"]["geo"][1] is None and doc["related"]["as"][0]["number"] == 15169
    status = doc["geo_pipeline"]
    assert status["format"] == ECS and r.format_version == ECS
    assert status["fields"]["destination.ip"]["status"] == "private"
    assert status["fields"]["source.ip"] | {} == {
        "ip": "8.8.8.8",
        "status": "resolved",
        "isp": "Google LLC",
        "org": "Google Public DNS",
        "source": "ipapi",
        "data_version": "ipapi",
        "updated_at": 5.0,
    }
    assert status["fields"]["related.ip"][1] == {"error": "invalid ip: not an IP address"}


def test_ecs_top_level_fields_get_their_own_targets_and_a_bare_ip_is_an_ip_event() -> None:
    """Suricata's src_ip/dest_ip get src_ip_geo/dest_ip_geo (never one `geo` for both); a bare IP line
    (fail2ban) is the event {"ip": ...} with ip_geo."""
    r = router(("src_ip", "dest_ip"), "ecs")
    doc = json.loads(r.route(b'{"src_ip":"8.8.8.8","dest_ip":"1.1.1.1","geo":"kept"}', None, WHERE, 1.0)[2])
    assert doc["src_ip_geo"]["country_iso_code"] == doc["dest_ip_geo"]["country_iso_code"] == "US"
    assert doc["src_ip_as"]["number"] == 15169 and doc["geo"] == "kept"
    bare = json.loads(r.route(b"203.0.113.7", None, WHERE, 1.0)[2])
    assert bare["ip"] == "203.0.113.7" and bare["ip_geo"]["country_iso_code"] == "US"


def test_ecs_strings_that_look_like_placeholders_pass_through_unchanged() -> None:
    """An event's own strings (NUL escapes, quotes, non-ASCII) come out as they went in."""
    event = {"ip": "8.8.8.8", "msg": '\u0000x:0 "quoted" caf\u00e9 \u2028', "n": [1, 2.5, None, True]}
    doc = json.loads(router(("ip",), "ecs").route(json.dumps(event).encode(), None, WHERE, 1.0)[2])
    assert {k: doc[k] for k in event} == event


def test_an_xff_field_enriches_the_client_not_the_forged_hop() -> None:
    """nginx's forwarded chain: the client is the right-most hop outside GEO_TRUSTED_PROXIES."""
    raw = b'{"remote_addr":"10.0.0.5","http_x_forwarded_for":"8.8.8.8, 203.0.113.9, 10.0.0.7"}'
    r = router(("xff:http_x_forwarded_for", "remote_addr"), trusted=networks(["10.0.0.0/8"]))
    doc = json.loads(r.route(raw, None, WHERE, 1.0)[2])
    assert doc["ip"] == "203.0.113.9" and [i["ip"] for i in doc["ips"]] == ["203.0.113.9", "10.0.0.5"]


def test_the_format_version_names_the_shape() -> None:
    """The header value each enriched record carries: envelope/2 or ecs/1."""
    assert (router(("ip",)).format_version, router(("ip",), "ecs").format_version) == (ENVELOPE, ECS)


def test_ecs_leaves_out_an_array_fields_lists_when_no_element_has_anything() -> None:
    """related.ip holding only private addresses adds no related.geo/related.as (lists of nulls)."""
    raw = b'{"related":{"ip":["10.0.0.1","192.168.1.1"]}}'
    doc = json.loads(router(("related.ip",), "ecs").route(raw, None, WHERE, 1.0)[2])
    assert doc["related"] == {"ip": ["10.0.0.1", "192.168.1.1"]}
    assert [s["status"] for s in doc["geo_pipeline"]["fields"]["related.ip"]] == ["private", "private"]


@pytest.mark.parametrize(
    "raw",
    [
        *(v for k, v in realistic.payloads().items() if k not in ("fail2ban", "none")),
        b'{ "source" : { "ip" : "8.8.8.8" , "port":1 } ,\n "destination":{"ip":"10.0.0.1"},'
        b'"related":{"ip":[]}}',
        b'{"src_ip":"8.8.8.8","x":{"y":[1,{"z":"}"}]},"s":"caf\\u00e9 \xc3\xa9"}',
        b'{"http":{"request":{"headers":{"x-forwarded-for":"8.8.8.8, 1.1.1.1"}}}}',
    ],
)
def test_the_spliced_ecs_event_reads_as_the_encoded_one(raw: bytes) -> None:
    """Inserting into the producer's text gives the same JSON as parsing and encoding the event again,
    and keeps the producer's bytes around the inserts."""
    fields = (*realistic.FIELDS, "xff:http.request.headers.x-forwarded-for")
    r = router(fields, "ecs", "input", trusted=networks(realistic.TRUSTED))
    spliced = r.route(raw, None, WHERE, 1.0)[2]
    value = json.loads(raw)
    found, skipped = extract(value, r.specs, r._trusted, normalise_with_port)
    entries = {f.ip: entry(f.ip) for f in found if f.ip}
    assert json.loads(spliced) == json.loads(ecs(value, found, entries, Views(), skipped))
    assert raw.split(b",")[0] in spliced  # the producer's own bytes, whitespace included


def test_a_geo_the_producer_already_had_is_replaced_not_duplicated() -> None:
    """source.geo already in the event: the output has one source.geo, ours (never a duplicate key)."""
    raw = b'{"source":{"ip":"8.8.8.8","geo":{"city_name":"stale"}},"geo_pipeline":1}'
    value = router(("source.ip",), "ecs").route(raw, None, WHERE, 1.0)[2]
    doc = json.loads(value, object_pairs_hook=_no_duplicates)
    assert doc["source"]["geo"]["country_iso_code"] == "US" and doc["geo_pipeline"]["format"] == ECS


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    assert len({k for k, _ in pairs}) == len(pairs), pairs
    return dict(pairs)
