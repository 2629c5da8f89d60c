"""Plain data the pipeline passes around: provider answers and cache entries, with their JSON forms.

Kept free of Faust and aiohttp so every decision about them can be unit-tested without a loop.
Records travel as JSON bytes (not Faust Records) because producers and consumers outside Python read
them too, and because encoding with `json` is several times cheaper than Faust's model codecs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any


class EntryStatus(StrEnum):
    """Where a cache entry stands; PRIVATE is final, every other status is due again some day."""

    PENDING = "pending"  # first remote answer still to come; geo holds what the offline data knows (if any)
    UNRESOLVED = "unresolved"  # every provider failed transiently (country NULL); retried on schedule
    PARTIAL = "partial"  # the remote provider failed, a fallback filled the country; remote retry still due
    RESOLVED = "resolved"  # country known; refreshed when old
    PRIVATE = "private"  # non-global address (private, loopback, CGNAT, ...): final, never sent anywhere
    INVALID = "invalid"  # a provider said the address cannot resolve; asked again after a long wait


FINAL_STATUSES = frozenset({EntryStatus.PRIVATE})  # never asked of any provider again
RETRYING = frozenset({EntryStatus.UNRESOLVED, EntryStatus.PARTIAL})  # a failure is the last thing applied
MAX_ASN = 2**32 - 1  # AS numbers are 32-bit (RFC 6793)


def iso_country(value: object) -> str | None:
    """An ISO 3166-1 alpha-2 code (two ASCII letters), upper-cased, or None: what every provider's
    country code must be before it goes into an entry."""
    if isinstance(value, str) and len(value) == 2 and value.isascii() and value.isalpha():
        return value.upper()
    return None


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "latitude": (int, float),
    "longitude": (int, float),
    "asn": int,
}
FLAG_FIELDS = ("proxy", "hosting", "mobile")  # booleans: True, False, or None (the provider did not say)


@dataclass(frozen=True, slots=True)
class GeoData:
    """What a provider knows about an address; every field may be missing."""

    country_code: str | None = None
    country_name: str | None = None
    region: str | None = None
    city: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    asn: int | None = None
    as_name: str | None = None
    isp: str | None = None
    org: str | None = None
    # what the address is, for security teams; None when no configured provider says (never guessed False)
    proxy: bool | None = None  # a VPN, proxy or Tor exit
    hosting: bool | None = None  # a hosting provider or data centre
    mobile: bool | None = None  # a cellular (mobile) network

    def to_dict(self) -> dict[str, Any]:
        # every field is a scalar, so a flat dict is what dataclasses.asdict would build (its deep copy
        # cost more than the rest of a first sight); same keys, same order
        return {name: getattr(self, name) for name in _GEO_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeoData:
        """Fields of the right type are kept, anything else (a wrong type from a foreign record) is None;
        a field the record lacks (one written before the field existed) is None too."""
        kept: dict[str, Any] = {}
        for name in _GEO_FIELDS:
            value = data.get(name)
            if name in FLAG_FIELDS:
                kept[name] = value if isinstance(value, bool) else None
                continue
            ok = isinstance(value, _FIELD_TYPES.get(name, str)) and not isinstance(value, bool)
            kept[name] = value if ok else None
        return cls(**kept)


@dataclass(frozen=True, slots=True)
class Resolved:
    """A provider answered with geography for the address; `version` names the data that answered
    ("ipapi", "iptocc:<package version>", "mmdb:<database>@<build epoch>"), when the provider knows it."""

    geo: GeoData
    provider: str
    version: str | None = None


@dataclass(frozen=True, slots=True)
class PermanentFailure:
    """A provider said the address can never resolve (private range, reserved range, invalid query)."""

    reason: str
    provider: str


@dataclass(frozen=True, slots=True)
class TransientFailure:
    """The lookup failed for a reason that may pass (429, 5xx, timeout, malformed body); retry later.

    `geo` carries a fallback provider's partial answer (e.g. the offline country) when the chain had one;
    the entry then shows a country but stays due for a retry against the primary provider. `asked` is
    False when the primary provider was not asked at all (its breaker was open): that says nothing about
    the address, so the entry's back-off does not grow.
    """

    reason: str
    provider: str
    geo: GeoData | None = None
    asked: bool = True
    version: str | None = None  # of the data behind `geo`


LookupResult = Resolved | PermanentFailure | TransientFailure


def result_to_dict(result: LookupResult) -> dict[str, Any]:
    """The JSON form of a lookup result, as published to the results topic."""
    if isinstance(result, Resolved):
        return {
            "kind": "resolved",
            "provider": result.provider,
            "geo": result.geo.to_dict(),
            "version": result.version,
        }
    if isinstance(result, PermanentFailure):
        return {"kind": "permanent", "provider": result.provider, "reason": result.reason}
    return {
        "kind": "transient",
        "provider": result.provider,
        "reason": result.reason,
        "geo": result.geo.to_dict() if result.geo else None,
        "asked": result.asked,
        "version": result.version,
    }


def result_from_dict(data: dict[str, Any]) -> LookupResult:
    """Inverse of `result_to_dict`; raises KeyError/ValueError on a malformed record."""
    kind = data["kind"]
    provider = str(data["provider"])
    version = data.get("version") if isinstance(data.get("version"), str) else None
    if kind == "resolved":
        return Resolved(GeoData.from_dict(data["geo"]), provider, version)
    if kind == "permanent":
        return PermanentFailure(str(data["reason"]), provider)
    if kind == "transient":
        geo = data.get("geo")
        geo_data = GeoData.from_dict(geo) if isinstance(geo, dict) else None
        return TransientFailure(
            str(data["reason"]), provider, geo_data, data.get("asked") is not False, version
        )
    raise ValueError(f"unknown result kind {kind!r}")


@dataclass(frozen=True, slots=True)
class GeoEntry:
    """One row of the geo cache, keyed by normalised IP. Times are Unix seconds (wall clock)."""

    ip: str
    status: EntryStatus
    geo: GeoData = field(default_factory=GeoData)
    provider: str | None = None
    attempts: int = 0
    first_seen: float = 0.0
    updated_at: float = 0.0
    next_retry_at: float | None = None  # when the timer should look again; None for final entries
    last_error: str | None = None
    data_version: str | None = None  # the data behind `geo` (see Resolved.version); None when unknown
    last_seen: float = 0.0  # the latest day an event of this IP reached the table's owner
    # failed asks in a row since the last answer: the back-off's exponent and the slow lane's count (not
    # `attempts`, which also counts answers and the retries a provider never saw: its breaker was open)
    failures: int = 0

    @property
    def country_code(self) -> str | None:
        return self.geo.country_code

    def evolve(self, **changes: Any) -> GeoEntry:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _ENTRY_FIELDS}  # in field order, as asdict
        data["status"] = self.status.value
        data["geo"] = self.geo.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeoEntry:
        status, attempts = EntryStatus(data["status"]), int(data.get("attempts", 0))
        return cls(
            ip=data["ip"],
            status=status,
            geo=GeoData.from_dict(data.get("geo") or {}),
            provider=data.get("provider"),
            attempts=attempts,
            first_seen=float(data.get("first_seen", 0.0)),
            updated_at=float(data.get("updated_at", 0.0)),
            next_retry_at=data.get("next_retry_at"),
            last_error=data.get("last_error"),
            data_version=data.get("data_version") if isinstance(data.get("data_version"), str) else None,
            # entries written before last_seen existed were last seen no later than first seen
            last_seen=float(data["last_seen"] if "last_seen" in data else data.get("first_seen", 0.0)),
            # before `failures` existed the back-off counted every attempt: a retrying entry keeps its
            # schedule (each attempt it had applied was a failure); an answered one had none since
            failures=int(data["failures"]) if "failures" in data else (attempts if status in RETRYING else 0),
        )

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> GeoEntry:
        return cls.from_dict(json.loads(raw))


def entry_view(raw: bytes) -> Any:
    """A stored entry as this version writes it: every field, those an older version did not write at their
    defaults (`GET /geo/{ip}` shows this); a value that is no entry this version can read, as it is."""
    try:
        return GeoEntry.from_json(raw).to_dict()
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return json.loads(raw)


_GEO_FIELDS = tuple(f.name for f in fields(GeoData))
_ENTRY_FIELDS = tuple(f.name for f in fields(GeoEntry))  # scalars, and geo (a GeoData) replaced in to_dict

COUNTRY_FIELD = b'"country_code":'  # as GeoEntry.to_json writes it (compact JSON)


def country_label(entry: bytes) -> str:
    """The metric label of an entry's country: its two-letter code (A-Z only, so at most 676 values),
    "private" for a non-global address, "unknown" for anything else. A byte search, never a JSON parse:
    it runs once per distinct entry and input batch."""
    at = entry.find(COUNTRY_FIELD)
    if at >= 0:
        code = entry[at + len(COUNTRY_FIELD) : at + len(COUNTRY_FIELD) + 4]
        if len(code) == 4 and code[0] == code[3] == 34 and code[1:3].isalpha() and code[1:3].isupper():
            return code[1:3].decode()
    return "private" if b'"status":"private"' in entry else "unknown"
