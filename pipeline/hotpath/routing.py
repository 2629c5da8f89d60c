"""The hot path's decisions for one input record: where it goes and which entry enriches it. Pure.

Every valid event is enriched once, by the worker that consumed it, with the best entry known there:
- the near cache's entry (the table's latest answer, learnt from the resolved topic), when it has one;
- else the worker's replica of the resolved topic (on disk: `replica.py`), when the table has an entry;
- otherwise a provisional entry built at once from the offline data (`policy.first_sight`): the event
  leaves with a country when the offline data knows one, and the IP (never the event) goes to the
  table's owner as one small "seen" record. The provisional entry enters the near cache, so the IP's
  later events are hits and the seen record is sent once per pending period, not once per event.

The hot path (`service.py`) calls `Router.route` per record and only sends what it returns; a `BadEvent`'s
reason goes to the dead-letter topic with the original bytes, so nothing is ever dropped silently. An
object is passed through byte for byte, so one that consumers could read differently from us (a key given
twice, a lone surrogate escape) is refused rather than normalised.
"""

from __future__ import annotations

import enum
import json
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.addresses import normalise_ip
from pipeline.errors import BadEvent, InvalidAddress
from pipeline.messages import dead_letter, dead_letter_key, enriched
from pipeline.models import country_label

SPELLINGS_MAX = 50_000  # raw IP texts remembered with their normal form (~150 B each); cleared when full
LABELS_MAX = 10_000  # entries remembered with their country label (refs, mostly shared with the near cache)
UNKNOWN_HASH = -1  # a near-cache entry learnt from the resolved topic has its key hash computed on first use
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
    ("missing field 'ip'", "missing_ip"),
    ("field 'ip' must be", "ip_not_a_string"),
    ("invalid ip", "invalid_ip"),
    ("could not write to", "unwritable"),
)


def reason_label(reason: str) -> str:
    """The metric label of a dead-letter reason: one of a fixed few, "other" for anything new."""
    for prefix, label in REASON_LABELS:
        if reason.startswith(prefix):
            return label
    return "other"


@dataclass(frozen=True, slots=True)
class ParsedEvent:
    """A valid event: the normalised IP and the event as a JSON object (bytes, passed through verbatim)."""

    ip: str
    event_json: bytes


def parse_event(
    raw: bytes | None, max_bytes: int, normalise: Callable[[str], str] = normalise_ip
) -> ParsedEvent:
    """Accept a JSON object with a string `ip`, or a bare IP as text (what a fail2ban action emits)."""
    if raw is None:
        raise BadEvent("empty message (null value)")
    if len(raw) > max_bytes:
        raise BadEvent(f"message too large ({len(raw)} bytes > {max_bytes})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadEvent("not UTF-8") from None
    stripped = text.strip()
    if not stripped:
        raise BadEvent("empty message")
    value = _json(stripped) if stripped[0] in '{["' else _bare(stripped, normalise)
    if isinstance(value, str):
        return ParsedEvent(_ip(value, normalise), json.dumps({"ip": value}, separators=(",", ":")).encode())
    if not isinstance(value, dict):
        raise BadEvent(f"JSON value must be an object or an IP string, not {type(value).__name__}")
    if "ip" not in value:
        raise BadEvent("missing field 'ip'")
    if not isinstance(value["ip"], str):
        raise BadEvent(f"field 'ip' must be a string, not {type(value['ip']).__name__}")
    # pass the object through byte for byte: re-encoding would reorder or reformat the producer's fields
    return ParsedEvent(_ip(value["ip"], normalise), stripped.encode() if stripped is not text else raw)


class Route(enum.Enum):
    """Where one input record goes."""

    HIT = "hit"  # enriched with the near cache's entry
    TOUCH = "touch"  # a hit, and the IP goes to the owner again: its last sighting there is a day old
    NEW = "new"  # enriched with a provisional entry; the IP also goes to the table's owner (seen record)
    DEAD_LETTER = "dead_letter"  # bad input: original bytes and the reason


class NearCache:
    """IP -> (entry JSON, key hash, seen mark), at most `capacity` of them.

    The seen mark says when this worker last sent the IP to the table's owner: 0 never, `-t` at t with no
    answer from the owner since (our own provisional entry), `t` at t and the owner has published since.

    Why it exists: a hit served here costs a dict lookup, while the table's owner is another partition and
    another hop away. Entries come from the resolved topic (every change the table's owner publishes) and
    from this worker's own provisional entries. Least recently USED goes first, so a hot IP stays however
    long ago its answer changed. The key hash (murmur2 of the IP, which picks the output partition) is kept
    beside the entry because computing it in Python costs more than the rest of a hit.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[bytes, tuple[bytes, int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, ip: bytes) -> tuple[bytes, int, float] | None:
        """(entry JSON, key hash or UNKNOWN_HASH, seen-sent time or 0.0); marks the IP as just used."""
        found = self._entries.get(ip)
        if found is not None:
            self._entries.move_to_end(ip)
        return found

    def items(self) -> list[tuple[bytes, tuple[bytes, int, float]]]:
        """A snapshot of every (ip, (entry, key hash, seen mark)), least recently used first."""
        return list(self._entries.items())

    def entry(self, ip: bytes) -> bytes | None:
        """The entry JSON alone, without marking the IP as used (for views and tests)."""
        found = self._entries.get(ip)
        return found[0] if found else None

    def put(self, ip: bytes, entry: bytes, key_hash: int = UNKNOWN_HASH, seen_at: float = 0.0) -> None:
        if self.capacity <= 0:
            return
        self._entries[ip] = (entry, key_hash, seen_at)
        self._entries.move_to_end(ip)
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def refresh(self, ip: bytes, entry: bytes | None) -> None:
        """`learn`, for an IP this cache holds; others are left to the replica (the cache keeps what is
        used, not what was published last)."""
        if ip in self._entries:
            self.learn(ip, entry)

    def learn(self, ip: bytes, entry: bytes | None) -> None:
        """Take the table's latest entry for `ip` (None, a tombstone, forgets it); keeps a known key hash.

        Once the owner published the IP it has the entry, so this worker stops re-sending it as seen. An
        owner's entry older (`updated_at`) than the owner's entry held is ignored: records of one IP in two
        partitions (the resolved topic's count changed under running workers) arrive in either order. Our
        own provisional entry (a negative seen mark) always gives way to the owner's.
        """
        if entry is None:
            self._entries.pop(ip, None)
            return
        found = self._entries.get(ip)
        if found is not None and found[2] >= 0 and _updated_at(entry) < _updated_at(found[0]):
            return
        self.put(ip, entry, found[1] if found else UNKNOWN_HASH, abs(found[2]) if found else 0.0)


def _updated_at(entry: bytes) -> float:
    """An entry JSON's `updated_at` (0 when it has none or is not an entry: it never wins on age)."""
    try:
        value = json.loads(entry).get("updated_at", 0.0)
        return float(value) if isinstance(value, int | float) else 0.0
    except (ValueError, AttributeError, RecursionError):
        return 0.0


class Router:
    """Routes input records for one worker: parse, validate, normalise, enrich from the near cache or a
    provisional entry, and say when the IP must (again) go to the table's owner."""

    def __init__(
        self,
        near: NearCache,
        max_bytes: int,
        provisional: Callable[[str, float], bytes],
        key_hash: Callable[[bytes], int],
        resend_after: float,
        touch_every: float = 86400.0,
        recall: Callable[[bytes], bytes | None] = lambda ip: None,
    ) -> None:
        self.near = near
        self.max_bytes = max_bytes
        self._provisional = provisional  # (normalised ip, now) -> entry JSON
        self._key_hash = key_hash  # murmur2 of the key bytes, made non-negative (Kafka's partitioner)
        self.resend_after = resend_after  # seconds an own provisional entry waits for the owner's answer
        self._touch_every = touch_every  # a known IP still in use is sent again this often (its last_seen)
        self._recall = recall  # ip -> the table's entry from the worker's replica of the resolved topic
        self._spellings: dict[str, str] = {}
        self.fresh: list[bytes] = []  # IPs routed NEW since `begin`: undone if their batch is not delivered
        self.dead: Counter[str] = Counter()  # dead letters since `begin` by reason label (metrics)
        self.recalled = 0  # hits since `begin` that the near cache missed and the replica served
        # enriched events since `begin` per entry object (metrics: folded into countries once per batch;
        # a near-cache entry's bytes keep their hash, so this is one dict update per event)
        self.by_entry: dict[bytes, int] = {}
        self._labels: dict[bytes, str] = {}  # entry -> country_label: a hot entry is labelled once

    def begin(self) -> None:
        """A new input batch starts."""
        self.fresh.clear()
        self.dead.clear()
        self.recalled = 0
        self.by_entry.clear()

    def countries(self) -> Counter[str]:
        """Enriched events since `begin` by country label (`country_label`)."""
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

    def undo(self) -> None:
        """The batch was not delivered: forget its first sights, so the replay sends those IPs again."""
        for ip in self.fresh:
            found = self.near.get(ip)
            if found is not None and found[2] < 0:  # still our own provisional entry
                self.near.learn(ip, None)
        self.fresh.clear()
        self.dead.clear()
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
    ) -> tuple[Route, bytes | None, bytes, int]:
        """(route, output key, output value, key hash) for one record; `where` is (topic, partition, offset).

        The key hash is the IP's (HIT, TOUCH, NEW) and meaningless for DEAD_LETTER (the input's own key).
        """
        try:
            parsed = parse_event(raw, self.max_bytes, self._normalise)
        except BadEvent as exc:
            self.dead[reason_label(exc.reason)] += 1
            return Route.DEAD_LETTER, dead_letter_key(key), dead_letter(raw, exc.reason, *where, key=key), 0
        ip = parsed.ip.encode()
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
            self.by_entry[entry] = self.by_entry.get(entry, 0) + 1
            return route, ip, enriched(ip, entry, parsed.event_json), key_hash
        known = self._recall(ip)
        if known is not None:  # the table has an entry the near cache lost or never held: serve it
            key_hash = self._key_hash(ip)
            self.near.put(ip, known, key_hash, now)
            self.recalled += 1
            self.by_entry[known] = self.by_entry.get(known, 0) + 1
            return Route.HIT, ip, enriched(ip, known, parsed.event_json), key_hash
        entry = self._provisional(parsed.ip, now)
        key_hash = self._key_hash(ip)
        self.near.put(ip, entry, key_hash, -now)
        self.fresh.append(ip)
        self.by_entry[entry] = self.by_entry.get(entry, 0) + 1
        return Route.NEW, ip, enriched(ip, entry, parsed.event_json), key_hash

    def _normalise(self, text: str) -> str:
        """`normalise_ip`, remembered per spelling: the same few addresses recur in every batch."""
        found = self._spellings.get(text)
        if found is None:
            found = normalise_ip(text)  # raises InvalidAddress: invalid spellings are not remembered
            if len(self._spellings) >= SPELLINGS_MAX:
                self._spellings.clear()
            self._spellings[text] = found
        return found


def _bare(text: str, normalise: Callable[[str], str]) -> Any:
    """Bare text is an IP; when it is not, say whether it was another JSON scalar (wrong type) or garbage."""
    try:
        normalise(text)
    except InvalidAddress as exc:
        try:
            scalar = json.loads(text)
        except (ValueError, RecursionError):
            raise BadEvent(f"invalid ip: {exc.reason}") from None
        raise BadEvent(f"JSON value must be an object or an IP string, not {type(scalar).__name__}") from None
    return text


def _reject_constant(name: str) -> Any:
    raise BadEvent(f"non-standard JSON constant {name}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's members; a key given twice is refused: consumers disagree on which one wins (the event
    passes through verbatim, so refusing is the only way they all read what we read)."""
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadEvent(f"duplicate key {key[:50]!r} in a JSON object")
            seen.add(key)
    return found


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a decoded JSON value holds a lone surrogate (from a `\\udXXX` escape without its pair)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _json(text: str) -> Any:
    try:
        # NaN/Infinity are not JSON (RFC 8259): passing them through would break other languages' consumers
        value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError):
        raise BadEvent("invalid JSON") from None
    # valid UTF-8 holds no surrogate, so only an escape can make one: look when there is an escape at all
    if "\\u" in text and _has_lone_surrogate(value):
        raise BadEvent("lone surrogate escape in a JSON string: not Unicode text")
    return value


def _ip(value: str, normalise: Callable[[str], str]) -> str:
    try:
        return normalise(value)
    except InvalidAddress as exc:
        raise BadEvent(f"invalid ip: {exc.reason}") from None
