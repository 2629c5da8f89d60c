"""The hot path's decisions for one input record: where it goes and which entries enrich it. Pure.

The event's IPs are the fields GEO_IP_FIELDS names (`extract.py`; by default the one field `ip`, or a
bare IP). Every IP of a valid event is enriched, by the worker that consumed it, with the best entry
known there (an IP given twice in one event is looked up once):
- the near cache's entry (the table's latest answer, learnt from the resolved topic), when it has one;
- else the worker's replica of the resolved topic (on disk: `replica.py`), when the table has an entry;
- otherwise a provisional entry built at once from the offline data (`policy.first_sight`): the event
  leaves with a country when the offline data knows one, and the IP (never the event) goes to the
  table's owner as one small "seen" record. The provisional entry enters the near cache, so the IP's
  later events are hits and the seen record is sent once per pending period, not once per event.

The hot path (`service.py`) calls `Router.route` per record and only sends what it returns: one enriched
record in the shape GEO_OUTPUT_FORMAT names (`shapes.py`) and one seen record per IP owed to the owner; a
`BadEvent`'s reason (or an event with no valid IP) goes to the dead-letter topic with the original bytes,
so nothing is ever dropped silently. Objects consumers could read differently from us (a key given twice,
a lone surrogate escape) are refused rather than normalised (`parsing.py`). The default configuration
(`ip`, envelope, keyed by IP) takes a shorter path: no walk of the parsed event, no per-event dict.
"""

from __future__ import annotations

import enum
import json
from collections import Counter
from collections.abc import Callable, Sequence

from pipeline.addresses import normalise_ip
from pipeline.config.ipfields import DEFAULT_FIELDS, FieldSpec, parse_fields
from pipeline.errors import BadEvent, InvalidAddress
from pipeline.hotpath import shapes
from pipeline.hotpath.extract import Found, Network, extract, normalise_with_port
from pipeline.hotpath.near import UNKNOWN_HASH, NearCache
from pipeline.hotpath.parsing import (
    ParsedEvent,
    flat_ip,
    parse_event,
    parse_event_exact,
    parse_value,
    parse_value_spans,
)
from pipeline.messages import dead_letter, dead_letter_key, enriched
from pipeline.models import country_label

__all__ = ["UNKNOWN_HASH", "NearCache", "ParsedEvent", "Route", "Router", "parse_event", "reason_label"]

SPELLINGS_MAX = 50_000  # raw IP texts remembered with their normal form (~150 B each); cleared when full
LABELS_MAX = 10_000  # entries remembered with their country label (refs, mostly shared with the near cache)
# dead-letter reasons -> a few stable labels for metrics (reasons carry sizes and type names: unbounded)
REASON_LABELS = (
    ("empty message", "empty"),
    ("message too large", "too_large"),
    ("not UTF-8", "not_utf8"),
    ("invalid JSON", "invalid_json"),
    ("non-standard JSON", "invalid_json"),
    ("duplicate key", "duplicate_key"),
    ("lone surrogate", "lone_surrogate"),
    ("JSON value must be", "not_an_object"),
    ("missing field", "missing_ip"),
    ("field '", "ip_not_a_string"),
    ("invalid ip", "invalid_ip"),
    ("could not write to", "unwritable"),
)


def reason_label(reason: str) -> str:
    """The metric label of a dead-letter reason: one of a fixed few, "other" for anything new."""
    for prefix, label in REASON_LABELS:
        if reason.startswith(prefix):
            return label
    return "other"


class Route(enum.Enum):
    """Where one input record goes."""

    HIT = "hit"  # enriched with the near cache's entry
    TOUCH = "touch"  # a hit, and the IP goes to the owner again: its last sighting there is a day old
    NEW = "new"  # enriched with a provisional entry; the IP also goes to the table's owner (seen record)
    DEAD_LETTER = "dead_letter"  # bad input: original bytes and the reason


Owed = tuple[tuple[bytes, int, "Route"], ...]  # (ip, its key hash, NEW or TOUCH): seen records to send
NOTHING_OWED: Owed = ()


class Router:
    """Routes input records for one worker: parse, find the event's IPs, normalise, enrich each from the
    near cache or a provisional entry, shape the output, and say which IPs must (again) go to the table's
    owner.

    `route` returns (route, output key, output value, partition hash, owed). The route is the event's:
    DEAD_LETTER, NEW when any of its IPs was new (TOUCH likewise), else HIT; `owed` lists the IPs that go
    to the owner, each with its own key hash. With GEO_ENRICHED_KEY=ip the key is the first IP and the hash
    its murmur2; with `input` the input's key and its murmur2 (a null key: the input partition, so the
    input partition's order is kept).
    """

    def __init__(
        self,
        near: NearCache,
        max_bytes: int,
        provisional: Callable[[str, float], bytes],
        key_hash: Callable[[bytes], int],
        resend_after: float,
        touch_every: float = 86400.0,
        recall: Callable[[bytes], bytes | None] = lambda ip: None,
        *,
        fields: Sequence[str] = DEFAULT_FIELDS,
        output_format: str = "envelope",
        key_mode: str = "ip",
        trusted: Sequence[Network] = (),
    ) -> None:
        self.near = near
        self.max_bytes = max_bytes
        self._provisional = provisional  # (normalised ip, now) -> entry JSON
        self._key_hash = key_hash  # murmur2 of the key bytes, made non-negative (Kafka's partitioner)
        self.resend_after = resend_after  # seconds an own provisional entry waits for the owner's answer
        self._touch_every = touch_every  # a known IP still in use is sent again this often (its last_seen)
        self._recall = recall  # ip -> the table's entry from the worker's replica of the resolved topic
        self.specs: tuple[FieldSpec, ...] = parse_fields(tuple(fields))
        self._bare_specs = parse_fields(DEFAULT_FIELDS)  # a bare IP input is the event {"ip": ...}
        self.output_format = output_format
        self.key_mode = key_mode
        self._trusted = tuple(trusted)
        # today's input and output: one `ip` field, the envelope keyed by IP (no per-event dict walk)
        self._simple = tuple(fields) == DEFAULT_FIELDS and output_format == "envelope" and key_mode == "ip"
        self.views = shapes.Views()
        self._spellings: dict[str, str] = {}  # a field's spelling -> normalised (ports dropped)
        self._bare_spellings: dict[str, str] = {}  # a bare message's spelling -> normalised
        self.fresh: list[bytes] = []  # IPs routed NEW since `begin`: undone if their batch is not delivered
        self.dead: Counter[str] = Counter()  # dead letters since `begin` by reason label (metrics)
        self.recalled = 0  # hits since `begin` that the near cache missed and the replica served
        self.hits = 0  # IPs enriched since `begin` with the table's entry (near cache or replica)
        self.new = 0  # IPs enriched since `begin` with a provisional entry (a first sight here)
        self.failed: Counter[str] = Counter()  # fields of enriched events that held no valid IP, by label
        self.skipped = 0  # IPs past MAX_IPS_PER_EVENT since `begin`: not enriched
        # enriched IPs since `begin` per entry object (metrics: folded into countries once per batch;
        # a near-cache entry's bytes keep their hash, so this is one dict update per IP)
        self.by_entry: dict[bytes, int] = {}
        self._labels: dict[bytes, str] = {}  # entry -> country_label: a hot entry is labelled once

    @property
    def format_version(self) -> str:
        """The contract the enriched records are written in (the `geo-format` header's value)."""
        return shapes.ECS if self.output_format == "ecs" else shapes.ENVELOPE

    def begin(self) -> None:
        """A new input batch starts."""
        self.fresh.clear()
        self.dead.clear()
        self.failed.clear()
        self.recalled = self.hits = self.new = self.skipped = 0
        self.by_entry.clear()

    def countries(self) -> Counter[str]:
        """Enriched IPs since `begin` by country label (`country_label`)."""
        found: Counter[str] = Counter()
        labels = self._labels
        for entry, count in self.by_entry.items():
            label = labels.get(entry)
            if label is None:
                if len(labels) >= LABELS_MAX:
                    labels.clear()
                label = labels[entry] = country_label(entry)
            found[label] += count
        return found

    def take_fresh(self) -> list[bytes]:
        """The first sights routed since `begin`, handed to their batch (undone with it if it fails)."""
        fresh, self.fresh = self.fresh, []
        return fresh

    def undo(self, *taken: list[bytes]) -> None:
        """Batches were not delivered: forget their first sights (`taken`, and any not taken yet), so the
        replay sends those IPs again."""
        for fresh in (*taken, self.fresh):
            for ip in fresh:
                found = self.near.get(ip)
                if found is not None and found[2] < 0:  # still our own provisional entry
                    self.near.learn(ip, None)
        self.fresh = []
        self.dead.clear()
        self.failed.clear()
        self.by_entry.clear()

    def overdue(self, now: float, limit: int = 10_000) -> list[tuple[bytes, int]]:
        """(ip, key hash) of own provisional entries that never got the owner's answer within the resend
        time, marked as sent again now: their seen record (or the entry it created) may have been lost, and
        an IP that is not seen again would otherwise never reach the table. Reads the whole near cache."""
        found: list[tuple[bytes, int]] = []
        for ip, (entry, key_hash, seen) in list(self.near.items()):
            if seen < 0 and now + seen >= self.resend_after:
                key_hash = key_hash if key_hash != UNKNOWN_HASH else self._key_hash(ip)
                self.near.put(ip, entry, key_hash, -now)
                found.append((ip, key_hash))
                if len(found) >= limit:
                    break
        return found

    def route(
        self, raw: bytes | None, key: bytes | None, where: tuple[str, int, int], now: float
    ) -> tuple[Route, bytes | None, bytes, int, Owed]:
        """(route, output key, output value, partition hash, IPs owed to the owner) for one record; `where`
        is (topic, partition, offset). The hash is meaningless for DEAD_LETTER (keyed by the input's key)."""
        if not self._simple:
            return self._route_many(raw, key, where, now)
        spelling = flat_ip(raw, self.max_bytes)  # the commonest event, read without the rest of parse_event
        try:
            if spelling is not None:
                text, event_json = self._normalise(spelling), raw or b""  # raw: the flat event
            else:
                parsed = parse_event_exact(raw, self.max_bytes, self._normalise_bare, self._normalise)
                text, event_json = parsed.ip, parsed.event_json
        except InvalidAddress as exc:
            return self._dead(raw, key, where, f"invalid ip: {exc.reason}")
        except BadEvent as exc:
            return self._dead(raw, key, where, exc.reason)
        ip = text.encode()
        route, entry, key_hash = self._lookup(ip, text, now)
        value = enriched(ip, self.views.view(entry), event_json)
        return route, ip, value, key_hash, NOTHING_OWED if route is Route.HIT else ((ip, key_hash, route),)

    def _dead(
        self, raw: bytes | None, key: bytes | None, where: tuple[str, int, int], reason: str
    ) -> tuple[Route, bytes | None, bytes, int, Owed]:
        self.dead[reason_label(reason)] += 1
        return Route.DEAD_LETTER, dead_letter_key(key), dead_letter(raw, reason, *where, key=key), 0, ()

    def _lookup(self, ip: bytes, text: str, now: float) -> tuple[Route, bytes, int]:
        """(route, entry, key hash) of one normalised IP: the near cache's entry, the replica's, or a new
        provisional one; counts it (hits/new, by_entry)."""
        found = self.near.get(ip)
        if found is not None:
            entry, key_hash, seen = found
            route = Route.HIT
            if seen < 0 and now + seen >= self.resend_after:
                # our own provisional entry never got the owner's answer: the seen record may be lost
                seen, route = -now, Route.NEW
                self.fresh.append(ip)
            elif seen == 0:
                seen = now  # learnt from the owner: it knows the IP; its last sighting is refreshed later
            elif seen > 0 and now - seen >= self._touch_every:
                seen, route = now, Route.TOUCH
            if key_hash == UNKNOWN_HASH or seen != found[2]:
                key_hash = self._key_hash(ip) if key_hash == UNKNOWN_HASH else key_hash
                self.near.put(ip, entry, key_hash, seen)
            if route is Route.NEW:
                self.new += 1
            else:
                self.hits += 1
            self.by_entry[entry] = self.by_entry.get(entry, 0) + 1
            return route, entry, key_hash
        known = self._recall(ip)
        if known is not None:  # the table has an entry the near cache lost or never held: serve it
            key_hash = self._key_hash(ip)
            self.near.put(ip, known, key_hash, now)
            self.recalled += 1
            self.hits += 1
            self.by_entry[known] = self.by_entry.get(known, 0) + 1
            return Route.HIT, known, key_hash
        entry = self._provisional(text, now)
        key_hash = self._key_hash(ip)
        self.near.put(ip, entry, key_hash, -now)
        self.fresh.append(ip)
        self.new += 1
        self.by_entry[entry] = self.by_entry.get(entry, 0) + 1
        return Route.NEW, entry, key_hash

    def _route_many(
        self, raw: bytes | None, key: bytes | None, where: tuple[str, int, int], now: float
    ) -> tuple[Route, bytes | None, bytes, int, Owed]:
        """Any GEO_IP_FIELDS, GEO_OUTPUT_FORMAT and GEO_ENRICHED_KEY: every IP of the event is looked up
        once (an IP in two fields too), every field shows its own."""
        try:
            if self.output_format == "ecs":  # with the spans of the members, to insert beside them
                value, stripped, spans = parse_value_spans(raw, self.max_bytes, self._normalise_bare)
                text = ""
            else:
                value, stripped, text = parse_value(raw, self.max_bytes, self._normalise_bare)
                spans = None
        except BadEvent as exc:
            return self._dead(raw, key, where, exc.reason)
        if isinstance(value, str):  # a bare IP (what a fail2ban action emits): the event {"ip": ...}
            try:
                self._normalise_bare(value)  # one address, no port: as in the one-field input
            except InvalidAddress as exc:
                return self._dead(raw, key, where, f"invalid ip: {exc.reason}")
            value, specs = {"ip": value}, self._bare_specs
            event_json = json.dumps(value, separators=(",", ":")).encode()
        elif isinstance(value, dict):
            specs = self.specs
            event_json = b""  # the envelope's verbatim event, taken below (ecs encodes what was parsed)
            if self.output_format != "ecs":
                event_json = stripped.encode() if stripped is not text else (raw or b"")
        else:
            reason = f"JSON value must be an object or an IP string, not {type(value).__name__}"
            return self._dead(raw, key, where, reason)
        found, skipped = extract(value, specs, self._trusted, self._normalise)
        good = [(f, f.ip) for f in found if f.ip is not None]
        if not good:
            return self._dead(raw, key, where, _no_ip_reason(found, specs))
        entries: dict[str, bytes] = {}
        owed: list[tuple[bytes, int, Route]] = []
        route, first_hash = Route.HIT, 0
        for _, text in good:
            if text in entries:
                continue
            ip = text.encode()
            kind, entries[text], h = self._lookup(ip, text, now)
            if len(entries) == 1:
                first_hash = h
            if kind is not Route.HIT:
                owed.append((ip, h, kind))
                route = Route.NEW if kind is Route.NEW or route is Route.NEW else Route.TOUCH
        for f in found:
            if f.error is not None:
                self.failed[reason_label(f.error)] += 1
        self.skipped += skipped
        if self.output_format == "ecs":
            spliced = None
            if spans is not None:
                spliced = shapes.ecs_spliced(stripped, value, spans, found, entries, self.views, skipped)
            out = spliced or shapes.ecs(value, found, entries, self.views, skipped)
        elif len(found) == 1 and not skipped:
            out = enriched(good[0][1].encode(), self.views.view(entries[good[0][1]]), event_json)
        else:
            out = shapes.envelope_many(found, entries, self.views, event_json, skipped)
        if self.key_mode == "ip":
            return route, good[0][1].encode(), out, first_hash, tuple(owed)
        return route, key, out, self._key_hash(key) if key is not None else where[1], tuple(owed)

    def _normalise(self, text: str) -> str:
        """A field's IP: `normalise_ip` with a port dropped, remembered per spelling (the same few
        addresses recur in every batch)."""
        found = self._spellings.get(text)
        if found is None:
            found = normalise_with_port(text)  # raises InvalidAddress: invalid spellings are not remembered
            if len(self._spellings) >= SPELLINGS_MAX:
                self._spellings.clear()
            self._spellings[text] = found
        return found

    def _normalise_bare(self, text: str) -> str:
        """A bare message's IP: `normalise_ip` (one address, no port), remembered per spelling."""
        found = self._bare_spellings.get(text)
        if found is None:
            found = normalise_ip(text)
            if len(self._bare_spellings) >= SPELLINGS_MAX:
                self._bare_spellings.clear()
            self._bare_spellings[text] = found
        return found


def _no_ip_reason(found: list[Found], specs: Sequence[FieldSpec]) -> str:
    """Why an event has no IP to enrich: its first field's failure, or the fields it lacks."""
    for f in found:
        if f.error is not None:
            return f.error
    names = ", ".join(f"'{spec.name}'" for spec in specs)
    return f"missing field {names}" if len(specs) == 1 else f"missing fields {names}: none holds an IP"
