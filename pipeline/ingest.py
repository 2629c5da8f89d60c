"""Turn one raw input record into (normalised IP, event JSON bytes), or say exactly why it is bad.

Pure: no Faust, no Kafka. The ingest agent calls `parse_event` and sends the reason of a `BadEvent` to the
dead-letter topic together with the original bytes, so nothing is ever dropped silently.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from .addresses import normalise_ip
from .errors import BadEvent, InvalidAddress

DLQ_PREVIEW_CHARS = 1024  # readable excerpt of the original beside its full base64 copy


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


def dead_letter(raw: bytes | None, reason: str, topic: str, partition: int, offset: int) -> bytes:
    """The dead-letter record: the reason, where the input came from, and the original bytes."""
    record: dict[str, Any] = {"reason": reason, "topic": topic, "partition": partition, "offset": offset}
    if raw is None:
        record["original_b64"] = None
    else:
        record["original_b64"] = base64.b64encode(raw).decode()
        record["original_preview"] = raw[:DLQ_PREVIEW_CHARS].decode("utf-8", errors="replace")
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
