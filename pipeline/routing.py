"""Turn one raw input record into where it goes: enriched (near-cache hit), events-by-ip (miss) or DLQ.

Pure: no Faust, no Kafka. The hot path (`hotpath.py`) calls `route` per record and only sends what it
returns; a `BadEvent`'s reason goes to the dead-letter topic together with the original bytes, so nothing
is ever dropped silently.
"""

from __future__ import annotations

import base64
import enum
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .addresses import normalise_ip
from .errors import BadEvent, InvalidAddress

DLQ_PREVIEW_CHARS = 1024  # readable excerpt of the original beside its full base64 copy
# base64 of this many bytes plus the preview stays under Kafka's default 1 MiB record limit; a longer
# original (only an oversized input can be) keeps this prefix and says how long it was
DLQ_ORIGINAL_MAX = 512 * 1024


@dataclass(frozen=True, slots=True)
class ParsedEvent:
    """A valid event: the normalised IP and the event as a JSON object (bytes, passed through verbatim)."""

    ip: str
    event_json: bytes


def parse_event(raw: bytes | None, max_bytes: int) -> ParsedEvent:
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
    value = _json(stripped) if stripped[0] in '{["' else _bare(stripped)
    if isinstance(value, str):
        ip = _ip(value)
        return ParsedEvent(ip, json.dumps({"ip": value}, separators=(",", ":")).encode())
    if not isinstance(value, dict):
        raise BadEvent(f"JSON value must be an object or an IP string, not {type(value).__name__}")
    if "ip" not in value:
        raise BadEvent("missing field 'ip'")
    if not isinstance(value["ip"], str):
        raise BadEvent(f"field 'ip' must be a string, not {type(value['ip']).__name__}")
    ip = _ip(value["ip"])
    # pass the object through byte for byte: re-encoding would reorder or reformat the producer's fields
    return ParsedEvent(ip, stripped.encode())


class Route(enum.Enum):
    """Where one input record goes."""

    ENRICHED = "enriched"  # the near cache knows the IP: enriched at once, keyed by the IP
    BY_IP = "by_ip"  # unknown here: repartitioned by IP to the table's owner (the cache agent)
    DEAD_LETTER = "dead_letter"  # bad input: original bytes and the reason


class NearCache:
    """IP -> the entry JSON last published on the resolved topic, at most `capacity` of them.

    Why it exists: a hit served here costs a dict lookup, while the table's owner is another partition
    and another hop away. Every entry on the resolved topic is one the table holds, and an event for a
    known entry never changes the table (`policy.on_event`), so serving it here gives what the cache agent
    would. Bounded: the entry updated longest ago is evicted first; a miss only takes the slower path.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, ip: bytes) -> bytes | None:
        return self._entries.get(ip)

    def put(self, ip: bytes, entry: bytes | None) -> None:
        """Remember the latest entry for `ip`; None (a tombstone) forgets it."""
        self._entries.pop(ip, None)
        if entry is None or self.capacity <= 0:
            return
        self._entries[ip] = entry
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


def route(
    raw: bytes | None,
    key: bytes | None,
    where: tuple[str, int, int],
    max_bytes: int,
    near: NearCache,
) -> tuple[Route, bytes | None, bytes]:
    """(route, key, value) for one input record; `where` is its (topic, partition, offset)."""
    try:
        parsed = parse_event(raw, max_bytes)
    except BadEvent as exc:
        return Route.DEAD_LETTER, key, dead_letter(raw, exc.reason, *where)
    ip = parsed.ip.encode()
    hit = near.get(ip)
    if hit is None:
        return Route.BY_IP, ip, parsed.event_json
    return Route.ENRICHED, ip, enriched(ip, hit, parsed.event_json)


def enriched(ip: bytes, entry_json: bytes, event_json: bytes) -> bytes:
    """The enriched event, built by concatenation: no JSON is parsed or encoded again."""
    return b'{"ip":"' + ip + b'","geo":' + entry_json + b',"event":' + event_json + b"}"


def dead_letter(raw: bytes | None, reason: str, topic: str, partition: int, offset: int) -> bytes:
    """The dead-letter record: the reason, where the input came from, and the original bytes."""
    record: dict[str, Any] = {"reason": reason, "topic": topic, "partition": partition, "offset": offset}
    if raw is None:
        record["original_b64"] = None
    else:
        record["original_b64"] = base64.b64encode(raw[:DLQ_ORIGINAL_MAX]).decode()
        record["original_preview"] = raw[:DLQ_PREVIEW_CHARS].decode("utf-8", errors="replace")
        if len(raw) > DLQ_ORIGINAL_MAX:
            record["original_truncated"] = True
            record["original_size"] = len(raw)
    return json.dumps(record, separators=(",", ":")).encode()


def _bare(text: str) -> Any:
    """Bare text is an IP; when it is not, say whether it was another JSON scalar (wrong type) or garbage."""
    try:
        normalise_ip(text)
    except InvalidAddress as exc:
        try:
            scalar = json.loads(text)
        except (ValueError, RecursionError):
            raise BadEvent(f"invalid ip: {exc.reason}") from None
        raise BadEvent(f"JSON value must be an object or an IP string, not {type(scalar).__name__}") from None
    return text


def _reject_constant(name: str) -> Any:
    raise BadEvent(f"non-standard JSON constant {name}")


def _json(text: str) -> Any:
    try:
        # NaN/Infinity are not JSON (RFC 8259): passing them through would break other languages' consumers
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise BadEvent("invalid JSON") from None


def _ip(value: str) -> str:
    try:
        return normalise_ip(value)
    except InvalidAddress as exc:
        raise BadEvent(f"invalid ip: {exc.reason}") from None
