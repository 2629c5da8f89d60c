"""Parsing one input record: bytes to a JSON object (or a bare IP), refusing what readers could disagree on.

Pure. An object is passed through byte for byte (envelope) or re-encoded from what we parsed (ecs), so one
that consumers could read differently from us (a key given twice: which one wins differs between JSON
libraries; a lone surrogate escape) is refused rather than normalised: the IP enriched is then always the
IP every consumer reads in the output.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.addresses import normalise_ip
from pipeline.errors import BadEvent, InvalidAddress
from pipeline.hotpath.extract import normalise_with_port


@dataclass(frozen=True, slots=True)
class ParsedEvent:  # the one-field `ip` input (GEO_IP_FIELDS unset)
    """A valid event: the normalised IP and the event as a JSON object (bytes, passed through verbatim)."""

    ip: str
    event_json: bytes


def parse_event(
    raw: bytes | None,
    max_bytes: int,
    normalise: Callable[[str], str] = normalise_ip,
    normalise_field: Callable[[str], str] = normalise_with_port,
) -> ParsedEvent:
    """Accept a JSON object with a string `ip`, or a bare IP as text (what a fail2ban action emits)."""
    value, stripped, text = parse_value(raw, max_bytes, normalise)
    if isinstance(value, str):
        return ParsedEvent(_ip(value, normalise), json.dumps({"ip": value}, separators=(",", ":")).encode())
    if not isinstance(value, dict):
        raise BadEvent(f"JSON value must be an object or an IP string, not {type(value).__name__}")
    if "ip" not in value:
        raise BadEvent("missing field 'ip'")
    if not isinstance(value["ip"], str):
        raise BadEvent(f"field 'ip' must be a string, not {type(value['ip']).__name__}")
    # pass the object through byte for byte: re-encoding would reorder or reformat the producer's fields
    assert raw is not None  # parse_value refused a null value
    return ParsedEvent(_ip(value["ip"], normalise_field), stripped.encode() if stripped is not text else raw)


def parse_value(
    raw: bytes | None, max_bytes: int, normalise: Callable[[str], str] = normalise_ip
) -> tuple[Any, str, str]:
    """(the decoded JSON value, or the bare IP text; the text stripped; the text): any JSON value or an IP
    as text, within `max_bytes` and unambiguous; BadEvent says why not. A bare message (and a JSON string)
    is one address, as fail2ban writes it: no port (`normalise`); an object's fields may carry one."""
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
    return (_json(stripped) if stripped[0] in '{["' else _bare(stripped, normalise)), stripped, text


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
        value = _DECODER.decode(text)
    except (ValueError, RecursionError):
        raise BadEvent("invalid JSON") from None
    # valid UTF-8 holds no surrogate, so only an escape can make one: look when there is an escape at all
    if "\\u" in text and _has_lone_surrogate(value):
        raise BadEvent("lone surrogate escape in a JSON string: not Unicode text")
    return value


# NaN/Infinity refused, duplicate keys refused; built once (json.loads with options builds one per call)
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_unique_keys)


def _ip(value: str, normalise: Callable[[str], str]) -> str:
    try:
        return normalise(value)
    except InvalidAddress as exc:
        raise BadEvent(f"invalid ip: {exc.reason}") from None
