"""What an enriched record looks like (GEO_OUTPUT_FORMAT), built from entry JSON and the event. Pure.

- `envelope/2` (the default): `{"ip", "geo": <public view>, "event": <input verbatim>}`, plus `"ips"` (one
  item per IP) when an event has more than one IP or a field failed. The public view is the entry
  flattened: `status`, every key of the entry's `geo` object (so keys providers add later, such as
  `proxy`, `hosting`, `mobile`, flow through), `source` (the provider), `data_version`, `updated_at`. The
  retry bookkeeping (`attempts`, `next_retry_at`, `last_error`, `first_seen`, `last_seen`) stays on the
  resolved topic and the HTTP API. Built by concatenation: no JSON is encoded per event.
- `ecs/1`: the event itself with Elastic Common Schema fields beside each IP field (`source.geo.*`,
  `source.as.*`; a top-level field `F` gets `F_geo` and `F_as`), and the pipeline's own status per field in
  `geo_pipeline`. The parts are inserted as text into the producer's own bytes (`ecs_spliced`: nothing is
  encoded per event); only an event that already holds a name we add is encoded again (`ecs`).

Views and fragments are derived once per entry bytes (`Views`): a near-cache entry keeps its bytes object,
so a hit costs one dict lookup here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from typing import Any, NamedTuple

from pipeline.config.ipfields import FieldSpec
from pipeline.hotpath.extract import Found
from pipeline.hotpath.parsing import Spans, parse_object
from pipeline.models import GeoData

ENVELOPE = "envelope/2"  # the envelope's contract version: 2 flattened `geo` to the public view
ECS = "ecs/1"
FORMAT_HEADER = "geo-format"  # every enriched record carries the shape and version it is in this header
VIEWS_MAX = 20_000  # entries remembered with their views (refs shared with the near cache); cleared when full
# the entry's own fields the public view shows after the geo keys, renamed where they read better
_TAIL = (("provider", "source"), ("data_version", "data_version"), ("updated_at", "updated_at"))
_GEO_KEYS = tuple(f.name for f in fields(GeoData))  # the view's place and flag keys, in the entry's order
# entry geo key -> ECS geo field; the location is built from latitude/longitude
_ECS_GEO = (
    ("country_code", "country_iso_code"),
    ("country_name", "country_name"),
    ("region", "region_name"),
    ("city", "city_name"),
)
_ECS_USED = frozenset(
    ("country_code", "country_name", "region", "city", "latitude", "longitude", "asn", "as_name")
)
# one encoder for every record (json.dumps with options builds one per call); no circularity check: what
# it encodes is parsed JSON plus per-entry dicts, a tree by construction (the check costs ~10%)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)


def _dumps(value: Any) -> bytes:
    return _ENCODER.encode(value).encode()


def _entry(entry: bytes) -> dict[str, Any]:
    try:
        data = json.loads(entry)
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def public_view(entry: bytes) -> bytes:
    """The envelope's `geo`: the entry's status, its geo keys flat, source, data version and time."""
    data = _entry(entry)
    geo = data.get("geo")
    view: dict[str, Any] = {"status": data.get("status")}
    view.update(dict.fromkeys(_GEO_KEYS))  # every field this version knows, null when an old entry lacks it
    view.update(geo if isinstance(geo, dict) else {})
    for name, shown in _TAIL:
        view[shown] = data.get(name)
    return _dumps(view)


class EcsParts(NamedTuple):
    """One entry's ECS parts: `geo` and `as` objects (None when empty) and the status object, as dicts
    shared by every event that carries the entry (the encoder only reads them), and as JSON text (the
    spliced form)."""

    geo: dict[str, Any] | None
    as_: dict[str, Any] | None
    status: dict[str, Any]
    geo_json: str | None
    as_json: str | None
    status_json: str


def ecs_parts(entry: bytes) -> EcsParts:
    data = _entry(entry)
    raw = data.get("geo")
    geo: dict[str, Any] = raw if isinstance(raw, dict) else {}
    ecs: dict[str, Any] = {shown: geo[name] for name, shown in _ECS_GEO if geo.get(name) is not None}
    if isinstance(geo.get("latitude"), int | float) and isinstance(geo.get("longitude"), int | float):
        ecs["location"] = {"lat": geo["latitude"], "lon": geo["longitude"]}
    as_: dict[str, Any] = {}
    if geo.get("asn") is not None:
        as_["number"] = geo["asn"]
    if geo.get("as_name") is not None:
        as_["organization"] = {"name": geo["as_name"]}
    status = {"ip": data.get("ip"), "status": data.get("status")}
    status.update({name: value for name, value in geo.items() if name not in _ECS_USED})  # isp, org, flags
    status.update({shown: data.get(name) for name, shown in _TAIL})
    status = {k: v for k, v in status.items() if v is not None or k in ("ip", "status")}  # ECS: no nulls
    return EcsParts(
        ecs or None,
        as_ or None,
        status,
        _ENCODER.encode(ecs) if ecs else None,
        _ENCODER.encode(as_) if as_ else None,
        _ENCODER.encode(status),
    )


class Views:
    """Per entry bytes: its public view and its ECS parts, each derived on first use.

    The public view never shows the entry's IP, and a burst of new IPs makes entries that differ only
    there (first sights with the same offline answer, in one batch): a view missed by its entry is looked
    up again by the entry after its IP field, so those share one view instead of a JSON decode and encode
    per new IP (a fifth of a first sight's routing).
    """

    def __init__(self) -> None:
        self._views: dict[bytes, bytes] = {}
        self._by_rest: dict[bytes, bytes] = {}  # the entry after its leading IP field -> its view
        self._ecs: dict[bytes, EcsParts] = {}

    def view(self, entry: bytes) -> bytes:
        found = self._views.get(entry)
        if found is None:
            if len(self._views) >= VIEWS_MAX:
                self._views.clear()
            rest = _after_ip(entry)
            found = self._by_rest.get(rest) if rest is not None else None
            if found is None:
                found = public_view(entry)
                if rest is not None:
                    if len(self._by_rest) >= VIEWS_MAX:
                        self._by_rest.clear()
                    self._by_rest[rest] = found
            self._views[entry] = found
        return found

    def ecs(self, entry: bytes) -> EcsParts:
        found = self._ecs.get(entry)
        if found is None:
            if len(self._ecs) >= VIEWS_MAX:
                self._ecs.clear()
            found = self._ecs[entry] = ecs_parts(entry)
        return found


def _after_ip(entry: bytes) -> bytes | None:
    """The entry's bytes after its first field when that is `"ip":"..."` (every entry we write starts
    so), else None. Two entries with the same rest hold the same fields apart from that first IP."""
    if not entry.startswith(b'{"ip":"'):
        return None
    end = entry.find(b'"', 7)
    if end < 0 or b"\\" in entry[7:end]:  # an escape inside the IP: not one of ours, do not guess
        return None
    return entry[end + 1 :]


def envelope_many(
    found: Sequence[Found], entries: dict[str, bytes], views: Views, event_json: bytes, skipped: int
) -> bytes:
    """The envelope of an event with several IPs (or a failed field): the first IP as `ip`/`geo`, and
    `ips` listing every one in field order, `{"field", "index"?, "ip", "geo"}` or `{"field", "error"}`;
    `ips_skipped` counts array elements past the cap."""
    first = next(f for f in found if f.ip is not None)
    assert first.ip is not None
    items = []
    for f in found:
        head = (
            b'{"field":'
            + _dumps(f.spec.name)
            + (b',"index":%d' % f.element if f.element is not None else b"")
        )
        if f.ip is None:
            items.append(head + b',"error":' + _dumps(f.error) + b"}")
        else:
            items.append(head + b',"ip":"' + f.ip.encode() + b'","geo":' + views.view(entries[f.ip]) + b"}")
    tail = b',"ips_skipped":%d' % skipped if skipped else b""
    return (
        b'{"ip":"'
        + first.ip.encode()
        + b'","geo":'
        + views.view(entries[first.ip])
        + b',"ips":['
        + b",".join(items)
        + b"]"
        + tail
        + b',"event":'
        + event_json
        + b"}"
    )


def ecs(
    event: dict[str, Any], found: Sequence[Found], entries: dict[str, bytes], views: Views, skipped: int
) -> bytes:
    """The ECS shape: `event` (modified in place) with `geo`/`as` beside each IP field and `geo_pipeline`
    `{"format", "fields": {field: status | [status per element] | {"error"}}, "ips_skipped"?}`, encoded
    once (the per-entry parts are shared dicts, encoded by the C encoder with the event)."""
    statuses: dict[str, Any] = {}
    targets: dict[FieldSpec, tuple[dict[str, Any], str, str]] = {}
    arrays = False
    for f in found:
        spec = f.spec
        target = targets.get(spec)
        if target is None:
            target = targets[spec] = _target(event, spec)
        parent, geo_key, as_key = target
        if f.ip is None:
            status: Any = {"error": f.error}
            geo: Any = None
            as_: Any = None
        else:
            geo, as_, status = views.ecs(entries[f.ip])[:3]
        if f.element is None:
            statuses[spec.name] = status
            if geo is not None:
                parent[geo_key] = geo
            if as_ is not None:
                parent[as_key] = as_
        else:  # an array field: lists aligned with its elements (null where one failed or had nothing)
            arrays = True
            statuses.setdefault(spec.name, []).append(status)
            parent.setdefault(geo_key, []).append(geo)
            parent.setdefault(as_key, []).append(as_)
    if arrays:  # an array's lists with nothing in them are left out
        for parent, geo_key, as_key in targets.values():
            for name in (geo_key, as_key):
                if isinstance(parent.get(name), list) and not any(x is not None for x in parent[name]):
                    del parent[name]
    pipeline: dict[str, Any] = {"format": ECS, "fields": statuses}
    if skipped:
        pipeline["ips_skipped"] = skipped
    event["geo_pipeline"] = pipeline
    return _ENCODER.encode(event).encode()


def ecs_spliced(
    text: str,
    event: dict[str, Any],
    spans: Spans,
    found: Sequence[Found],
    entries: dict[str, bytes],
    views: Views,
    skipped: int,
) -> bytes | None:
    """The ECS shape without encoding the event again: the fields `ecs` would add are inserted as text
    before the closing brace of each field's parent (found by `spans`, parsing.parse_object) and of the
    event, so the producer's bytes stay as they were. None when a name we would add is already there
    (the caller then builds the event with `ecs`, which replaces it)."""
    if "geo_pipeline" in event:
        return None
    end = len(text) - 1  # the event's closing brace (the text is stripped)
    inserts: list[tuple[int, str]] = []
    statuses: list[str] = []
    i, n = 0, len(found)
    while i < n:
        spec = found[i].spec
        j = i + 1
        while j < n and found[j].spec is spec:  # an array field's elements follow each other
            j += 1
        geo_name, as_name, geo_key, as_key, name = _names(spec)
        if spec.top_level:
            parent, at = event, end
        else:
            place = _parent_span(text, event, spans, spec.path[:-1])
            if place is None:
                return None
            parent, at = place
        if geo_name in parent or as_name in parent:
            return None
        if found[i].element is None:
            f = found[i]
            if f.ip is None:
                geo_json = as_json = None
                status = '{"error":' + _ENCODER.encode(f.error) + "}"
            else:
                part = views.ecs(entries[f.ip])
                geo_json, as_json, status = part.geo_json, part.as_json, part.status_json
        else:  # an array field: lists aligned with its elements, left out when nothing is in them
            parts = [None if f.ip is None else views.ecs(entries[f.ip]) for f in found[i:j]]
            geo_json = _aligned([p.geo_json if p else None for p in parts])
            as_json = _aligned([p.as_json if p else None for p in parts])
            status = (
                "["
                + ",".join(
                    p.status_json if p else '{"error":' + _ENCODER.encode(f.error) + "}"
                    for p, f in zip(parts, found[i:j], strict=True)
                )
                + "]"
            )
        if geo_json:
            inserts.append((at, "," + geo_key + ":" + geo_json))
        if as_json:
            inserts.append((at, "," + as_key + ":" + as_json))
        statuses.append(name + ":" + status)
        i = j
    tail = f',"ips_skipped":{skipped}' if skipped else ""
    inserts.append(
        (end, ',"geo_pipeline":{"format":"' + ECS + '","fields":{' + ",".join(statuses) + "}" + tail + "}")
    )
    inserts.sort(key=_position)  # stable: inserts at one place keep their order
    out: list[str] = []
    last = 0
    for at, piece in inserts:
        out += (text[last:at], piece)
        last = at
    out.append(text[last:])
    return "".join(out).encode()


def _position(insert: tuple[int, str]) -> int:
    return insert[0]


def _aligned(items: list[str | None]) -> str | None:
    return "[" + ",".join(x or "null" for x in items) + "]" if any(items) else None


# spec -> its geo and as member names, the same as JSON text, and its own name as JSON text
_NAMES: dict[FieldSpec, tuple[str, str, str, str, str]] = {}


def _names(spec: FieldSpec) -> tuple[str, str, str, str, str]:
    """A field's ECS member names (`geo`/`as`, or `F_geo`/`F_as` at the top), the same as JSON text, and
    its own name as JSON text: configured fields are a few, each encoded once."""
    found = _NAMES.get(spec)
    if found is None:
        geo, as_ = (f"{spec.name}_geo", f"{spec.name}_as") if spec.top_level else ("geo", "as")
        encode = _ENCODER.encode
        found = _NAMES[spec] = (geo, as_, encode(geo), encode(as_), encode(spec.name))
    return found


def _parent_span(
    text: str, event: dict[str, Any], spans: Spans, path: tuple[str, ...]
) -> tuple[dict[str, Any], int] | None:
    """(the parent object, the index of its closing brace in `text`) for a nested field's parent path;
    deeper parents are found by walking their ancestors' text again."""
    parent: Any = event
    span = None
    for depth, name in enumerate(path):
        parent = parent.get(name) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            return None
        if depth == 0:
            span = spans.get(name)
        elif span is not None:
            span = parse_object(text, span[0])[1].get(name)
        if span is None:
            return None
    assert span is not None
    return parent, span[1] - 1


def _target(event: dict[str, Any], spec: FieldSpec) -> tuple[dict[str, Any], str, str]:
    """Where a field's ECS objects go: beside it in its parent (`source.geo`), or for a top-level field
    `F`, `F_geo` and `F_as` at the top. A fresh list for an array field (a second list would be a bug)."""
    if spec.top_level:
        target = (event, f"{spec.name}_geo", f"{spec.name}_as")
    else:
        parent = event
        for name in spec.path[:-1]:
            parent = parent[name]  # the path led to a value: every step is an object
        target = (parent, "geo", "as")
    parent, geo_key, as_key = target
    parent.pop(geo_key, None)  # the producer's own geo/as at that place is replaced, not merged
    parent.pop(as_key, None)
    return target


def _put(parent: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        parent[key] = value
