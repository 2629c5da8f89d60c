"""Parsing one input record: bytes to a JSON object (or a bare IP), refusing what readers could disagree on.

Pure. An object is passed through byte for byte (envelope) or re-encoded from what we parsed (ecs), so one
that consumers could read differently from us (a key given twice: which one wins differs between JSON
libraries; a lone surrogate escape) is refused rather than normalised: the IP enriched is then always the
IP every consumer reads in the output.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from json.scanner import make_scanner
from typing import Any, cast

import orjson

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
    spelling = flat_ip(raw, max_bytes)
    if spelling is not None:  # `raw` is the event's own text: passed through as it came
        return ParsedEvent(_ip(spelling, normalise_field), cast(bytes, raw))
    return parse_event_exact(raw, max_bytes, normalise, normalise_field)


def flat_ip(raw: bytes | None, max_bytes: int) -> str | None:
    """The `ip` member (as written) of the commonest event, read fast: one flat JSON object within
    `max_bytes`, nothing around its braces, provably no key twice (`_flat_members`), a string `ip`. None
    when `raw` is not shown to be one; `parse_event_exact` then answers, refusals and their reasons included.
    Why apart from `parse_event`: the hot path calls it first and skips the rest of the parse for it."""
    if raw is None or len(raw) > max_bytes:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text[:1] != "{" or text[-1:] != "}":
        return None
    return _flat_spelling(text)


def _flat_spelling(text: str) -> str | None:
    """The string `ip` member of a flat object's text (`_flat_members`), or None."""
    members = _flat_members(text)
    spelling = members.get("ip") if members is not None else None
    return spelling if type(spelling) is str else None


def parse_event_exact(
    raw: bytes | None,
    max_bytes: int,
    normalise: Callable[[str], str] = normalise_ip,
    normalise_field: Callable[[str], str] = normalise_with_port,
) -> ParsedEvent:
    """`parse_event` for what `flat_ip` does not vouch for (it is not called again)."""
    stripped, text = _text(raw, max_bytes)
    if stripped[0] == "{" and stripped is not text:  # whitespace around a flat object: the same fast read
        spelling = _flat_spelling(stripped)
        if spelling is not None:
            return ParsedEvent(_ip(spelling, normalise_field), stripped.encode())
    value = _value(stripped, normalise)
    if isinstance(value, str):
        return ParsedEvent(_ip(value, normalise), json.dumps({"ip": value}, separators=(",", ":")).encode())
    if not isinstance(value, dict):
        raise BadEvent(f"JSON value must be an object or an IP string, not {type(value).__name__}")
    if "ip" not in value:
        raise BadEvent("missing field 'ip'")
    if not isinstance(value["ip"], str):
        raise BadEvent(f"field 'ip' must be a string, not {type(value['ip']).__name__}")
    return ParsedEvent(_ip(value["ip"], normalise_field), _verbatim(raw, stripped, text))


def _verbatim(raw: bytes | None, stripped: str, text: str) -> bytes:
    """The object's own bytes, passed through: re-encoding would reorder or reformat the producer's fields."""
    return stripped.encode() if stripped is not text or raw is None else raw


def parse_value(
    raw: bytes | None, max_bytes: int, normalise: Callable[[str], str] = normalise_ip
) -> tuple[Any, str, str]:
    """(the decoded JSON value, or the bare IP text; the text stripped; the text): any JSON value or an IP
    as text, within `max_bytes` and unambiguous; BadEvent says why not. A bare message (and a JSON string)
    is one address, as fail2ban writes it: no port (`normalise`); an object's fields may carry one."""
    stripped, text = _text(raw, max_bytes)
    return _value(stripped, normalise), stripped, text


def _value(stripped: str, normalise: Callable[[str], str]) -> Any:
    """The JSON value of a stripped text, or the text itself when it is a bare IP."""
    return _json(stripped) if stripped[0] in '{["' else _bare(stripped, normalise)


def parse_value_spans(
    raw: bytes | None, max_bytes: int, normalise: Callable[[str], str] = normalise_ip
) -> tuple[Any, str, Spans | None]:
    """`parse_value`, with the spans of a top-level object's members (`parse_object`); None for any
    other value. Returns (value, the text stripped, spans)."""
    stripped, _ = _text(raw, max_bytes)
    if stripped[0] != "{":
        return _value(stripped, normalise), stripped, None
    members, spans, end = parse_object(stripped)
    if end != len(stripped):
        raise BadEvent("invalid JSON")  # something after the object
    return members, stripped, spans


def _text(raw: bytes | None, max_bytes: int) -> tuple[str, str]:
    """(the text stripped, the text) of a record value that can be an event at all."""
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
    return stripped, text


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


def _flat_members(text: str) -> dict[str, Any] | None:
    """The members of `text` when it is one flat JSON object (no object nested in it) that provably has no
    key twice, read by orjson (a fifth of the json module's time); None when that cannot be shown cheaply,
    and the exact parser (`_json`) decides, refusals and their reasons included.

    Why orjson needs the proof: of two equal keys it keeps the last, silently. Why counting proves it: in
    valid JSON each member is a string followed by ':', and a `"` inside a string is escaped, so with no
    whitespace before any ':' the text holds `":` once per member, plus once per escaped quote followed by
    ':' in a string. orjson keeps one member per distinct key, so as many `":` as members kept means no
    key was given twice. Nothing else can differ: orjson refuses NaN, lone surrogates and numbers past a
    double's range (so the exact path answers those), and a number is never read from the object here."""
    if (
        text.count("{") != 1  # a nested object (or a brace in a string): its members are not counted here
        or " :" in text  # whitespace before a ':' hides a member from the count below
        or "\t:" in text
        or "\n:" in text
        or "\r:" in text
        or text.count("[") > FLAT_ARRAYS_MAX
    ):
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if type(value) is not dict or text.count('":') != len(value):
        return None
    return value


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


# arrays in a flat object read by orjson: nested deeper than about 990 the json module (the exact path) runs
# out of recursion and refuses it, so a text with many is left to it and both paths agree
FLAT_ARRAYS_MAX = 256
# NaN/Infinity refused, duplicate keys refused; built once (json.loads with options builds one per call)
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
# (text, index) -> (value, end): the C scanner json.loads uses (typeshed types it as a class of itself)
_SCAN: Callable[[str, int], tuple[Any, int]] = make_scanner(_DECODER)  # type: ignore[arg-type]
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's insignificant whitespace (RFC 8259)
Spans = dict[str, tuple[int, int]]  # member name -> (start, end) of its value in the text


def _skip(text: str, idx: int) -> int:
    """The index of the first character at or after `idx` that is not JSON whitespace."""
    found = _WHITESPACE.match(text, idx)
    return found.end() if found else idx


def parse_object(text: str, start: int = 0) -> tuple[dict[str, Any], Spans, int]:
    """The JSON object at `text[start]` as (members, the span of each member's value, the end), with the
    same refusals as `parse_value` (duplicate keys, NaN, lone surrogates: BadEvent). Why: the ecs shape
    inserts its fields into the producer's own text, beside each IP field, at spans found here, instead
    of encoding the whole event again. The values are parsed by the json module's C scanner; only this
    object's own members are walked here."""
    scan, ws = _SCAN, " \t\n\r"
    members: dict[str, Any] = {}
    spans: Spans = {}
    try:  # whitespace is rare in machine-written events: look at one character before matching a run
        idx = start + 1
        if text[idx] in ws:
            idx = _skip(text, idx)
        if text[idx] == "}":
            return members, spans, idx + 1
        while True:
            if text[idx] != '"':
                raise ValueError("a member name must be a string")
            key, idx = scan(text, idx)
            if text[idx] in ws:
                idx = _skip(text, idx)
            if text[idx] != ":":
                raise ValueError("':' expected")
            idx += 1
            if text[idx] in ws:
                idx = _skip(text, idx)
            value, end = scan(text, idx)
            if key in members:
                raise BadEvent(f"duplicate key {key[:50]!r} in a JSON object")
            members[key], spans[key] = value, (idx, end)
            idx = end
            if text[idx] in ws:
                idx = _skip(text, idx)
            if text[idx] == ",":
                idx += 1
                if text[idx] in ws:
                    idx = _skip(text, idx)
            elif text[idx] == "}":
                break
            else:
                raise ValueError("',' or '}' expected")
    except (ValueError, IndexError, StopIteration, RecursionError):
        raise BadEvent("invalid JSON") from None
    if "\\u" in text and _has_lone_surrogate(members):
        raise BadEvent("lone surrogate escape in a JSON string: not Unicode text")
    return members, spans, idx + 1


def _ip(value: str, normalise: Callable[[str], str]) -> str:
    try:
        return normalise(value)
    except InvalidAddress as exc:
        raise BadEvent(f"invalid ip: {exc.reason}") from None
