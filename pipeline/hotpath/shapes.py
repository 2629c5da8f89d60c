"""What an enriched record looks like (GEO_OUTPUT_FORMAT), built from entry JSON and the event. Pure.

- `envelope/2` (the default): `{"ip", "geo": <public view>, "event": <input verbatim>}`, plus `"ips"` (one
  item per IP) when an event has more than one IP or a field failed. The public view is the entry
  flattened: `status`, every key of the entry's `geo` object (so keys providers add later, such as
  `proxy`, `hosting`, `mobile`, flow through), `source` (the provider), `data_version`, `updated_at`. The
  retry bookkeeping (`attempts`, `next_retry_at`, `last_error`, `first_seen`, `last_seen`) stays on the
  resolved topic and the HTTP API. Built by concatenation: no JSON is encoded per event.
- `ecs/1`: the event itself with Elastic Common Schema fields beside each IP field (`source.geo.*`,
  `source.as.*`; a top-level field `F` gets `F_geo` and `F_as`), and the pipeline's own status per field in
  `geo_pipeline`. The event is encoded again (JSON, key order kept); the per-entry parts are built once
  per entry and shared.

Views and fragments are derived once per entry bytes (`Views`): a near-cache entry keeps its bytes object,
so a hit costs one dict lookup here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from pipeline.config.ipfields import FieldSpec
from pipeline.hotpath.extract import Found

ENVELOPE = "envelope/2"  # the envelope's contract version: 2 flattened `geo` to the public view
ECS = "ecs/1"
FORMAT_HEADER = "geo-format"  # every enriched record carries the shape and version it is in this header
VIEWS_MAX = 20_000  # entries remembered with their views (refs shared with the near cache); cleared when full
# the entry's own fields the public view shows after the geo keys, renamed where they read better
_TAIL = (("provider", "source"), ("data_version", "data_version"), ("updated_at", "updated_at"))
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
    view.update(geo if isinstance(geo, dict) else {})
    for name, shown in _TAIL:
        view[shown] = data.get(name)
    return _dumps(view)


class EcsParts(NamedTuple):
    """One entry's ECS parts: `geo` and `as` objects (None when empty) and the status object, as dicts
    shared by every event that carries the entry (the encoder only reads them)."""

    geo: dict[str, Any] | None
    as_: dict[str, Any] | None
    status: dict[str, Any]


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
    return EcsParts(ecs or None, as_ or None, status)


class Views:
    """Per entry bytes: its public view and its ECS parts, each derived on first use."""

    def __init__(self) -> None:
        self._views: dict[bytes, bytes] = {}
        self._ecs: dict[bytes, EcsParts] = {}

    def view(self, entry: bytes) -> bytes:
        found = self._views.get(entry)
        if found is None:
            if len(self._views) >= VIEWS_MAX:
                self._views.clear()
            found = self._views[entry] = public_view(entry)
        return found

    def ecs(self, entry: bytes) -> EcsParts:
        found = self._ecs.get(entry)
        if found is None:
            if len(self._ecs) >= VIEWS_MAX:
                self._ecs.clear()
            found = self._ecs[entry] = ecs_parts(entry)
        return found


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
            geo, as_, status = views.ecs(entries[f.ip])
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
