"""Every record the pipeline writes to a topic, as encode/decode pairs: one home for the wire formats.

Records are JSON bytes, not Faust Records: consumers in other languages read the outputs, and `json` is
several times cheaper than Faust's model codecs. Decoders never raise: a record that does not parse is
`None`, and the reader skips it with a counter and a log line naming where it was (a malformed internal
record must not take its batch down with it). Every record has a known maximum size under Kafka's default
1 MiB limit (`MAX_RECORD_BYTES`), so a send never fails for size (a failure nobody can fix by retrying).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pipeline.models import LookupResult, result_from_dict, result_to_dict

MAX_RECORD_BYTES = 1024 * 1024  # Kafka's default max.message.bytes and the producer's max_request_size
DLQ_PREVIEW_CHARS = 1024  # readable excerpt of the original beside its base64 copy
# base64 of this many bytes (4/3 larger) plus the rest of the dead letter stays well under MAX_RECORD_BYTES
DLQ_ORIGINAL_MAX = 512 * 1024
DLQ_KEY_MAX = 1024  # an input key longer than this is kept as a prefix with its size and hash, not as the key
ASKED_TIME_DIGITS = 3  # decimals of an asked record's time: milliseconds tell requests apart


@dataclass(frozen=True, slots=True)
class Seen:
    """A worker saw this IP (the record's key) for the first time: the table's owner creates its entry."""

    at: float  # Unix seconds, when the worker saw it
    by: str  # the worker, for operators
    # the worker has no entry for it (a first sight there); False: it has one and touches last_seen.
    # Records written before the flag existed carry none and count as first sights.
    first: bool = True


@dataclass(frozen=True, slots=True)
class ResolveRequest:
    """Ask the resolver for attempt `attempt` of `ip`."""

    ip: str
    attempt: int
    by: str = ""  # the emitting worker, for operators and tests


@dataclass(frozen=True, slots=True)
class ResultMessage:
    """A provider's answer to attempt `attempt` of the record key's IP."""

    attempt: int
    result: LookupResult


@dataclass(frozen=True, slots=True)
class RetryMessage:
    """The timer found the record key's entry due at `due` (Unix seconds): start its next attempt."""

    due: float


@dataclass(frozen=True, slots=True)
class ReanswerMessage:
    """Newer offline data is in use: the record key's entry, answered by an older version, is re-answered."""


@dataclass(frozen=True, slots=True)
class OperatorRetry:
    """An operator asked (`geo-pipeline retry`, at `at`) for the record key's entry to be due now, if its
    status is one of `statuses` then."""

    at: float
    statuses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ForgetMessage:
    """An operator asked (`geo-pipeline forget`) for the record key's entry to be removed everywhere."""


@dataclass(frozen=True, slots=True)
class Asked:
    """The last attempt asked of the API for one IP, and when (the asked log's record)."""

    attempt: int
    at: float
    answered: bool = False  # its answer reached the results topic


def _dumps(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _object(raw: bytes | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


# -- ip-events-enriched and the dead-letter topic ---------------------------------------------------------


def enriched(ip: bytes, view_json: bytes, event_json: bytes) -> bytes:
    """The enriched event in the envelope shape (one IP), built by concatenation: no JSON is parsed or
    encoded again. `view_json` is the entry's public view (pipeline/hotpath/shapes.py). One join: half
    the time of chained `+`, which copies the growing prefix at each step."""
    return b"".join((b'{"ip":"', ip, b'","geo":', view_json, b',"event":', event_json, b"}"))


def dead_letter(
    raw: bytes | None, reason: str, topic: str, partition: int, offset: int, key: bytes | None = None
) -> bytes:
    """The dead-letter record: the reason, where the input came from, and the original key and value.

    An oversized original keeps a prefix, its size and its SHA-256, so the record stays bounded and the
    original can still be found and matched.
    """
    record: dict[str, Any] = {"reason": reason, "topic": topic, "partition": partition, "offset": offset}
    if key is not None and len(key) > DLQ_KEY_MAX:
        record |= _bytes_fields("key", key, DLQ_KEY_MAX)
    if raw is None:
        record["original_b64"] = None
        return _dumps(record)
    record["original_b64"] = base64.b64encode(raw[:DLQ_ORIGINAL_MAX]).decode()
    record["original_preview"] = raw[:DLQ_PREVIEW_CHARS].decode("utf-8", errors="replace")
    if len(raw) > DLQ_ORIGINAL_MAX:
        record |= {
            "original_truncated": True,
            "original_size": len(raw),
            "original_sha256": hashlib.sha256(raw).hexdigest(),
        }
    return _dumps(record)


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The dead letter's own key: the input's key, unless it is too long to be one (then its prefix is in
    the value)."""
    return key if key is None or len(key) <= DLQ_KEY_MAX else None


def _bytes_fields(name: str, data: bytes, limit: int) -> dict[str, Any]:
    return {
        f"{name}_b64": base64.b64encode(data[:limit]).decode(),
        f"{name}_size": len(data),
        f"{name}_truncated": len(data) > limit,
        f"{name}_sha256": hashlib.sha256(data).hexdigest(),
    }


# -- <app>-ips-seen ---------------------------------------------------------------------------------------


def encode_seen(at: float, by: str, first: bool = True) -> bytes:
    return _dumps({"at": round(at, 3), "by": by[:200], "first": first})


def decode_seen(raw: bytes | None) -> Seen | None:
    data = _object(raw)
    try:
        if not data:
            return None
        return Seen(float(data["at"]), str(data.get("by", "")), data.get("first") is not False)
    except (KeyError, TypeError, ValueError):
        return None


# -- geo-resolve ------------------------------------------------------------------------------------------


def encode_resolve_request(request: ResolveRequest) -> bytes:
    return _dumps({"ip": request.ip, "attempt": request.attempt, "by": request.by[:200]})


def decode_resolve_request(raw: bytes | None) -> ResolveRequest | None:
    data = _object(raw)
    try:
        if not data or not isinstance(data["ip"], str) or isinstance(data["attempt"], bool):
            return None
        attempt = int(data["attempt"])
        return ResolveRequest(data["ip"], attempt, str(data.get("by", ""))) if attempt >= 1 else None
    except (KeyError, TypeError, ValueError):
        return None


# -- <app>-geo-results: provider answers and timer retries ------------------------------------------------


def encode_result(attempt: int, result: LookupResult) -> bytes:
    return _dumps({"type": "result", "attempt": attempt, "result": result_to_dict(result)})


def encode_retry(due: float) -> bytes:
    return _dumps({"type": "retry", "due": round(due, 3)})


def encode_reanswer() -> bytes:
    return _dumps({"type": "reanswer"})


def encode_operator_retry(at: float, statuses: tuple[str, ...]) -> bytes:
    return _dumps({"type": "operator-retry", "at": round(at, 3), "statuses": list(statuses)})


def encode_forget() -> bytes:
    return _dumps({"type": "forget"})


ResultsMessage = ResultMessage | RetryMessage | ReanswerMessage | OperatorRetry | ForgetMessage


def decode_results_message(raw: bytes | None) -> ResultsMessage | None:
    data = _object(raw)
    if not data:
        return None
    try:
        if data.get("type") == "retry":
            return RetryMessage(float(data.get("due", 0.0)))
        if data.get("type") == "reanswer":
            return ReanswerMessage()
        if data.get("type") == "forget":
            return ForgetMessage()
        if data.get("type") == "operator-retry":
            statuses = data["statuses"]
            if not isinstance(statuses, list) or not all(isinstance(x, str) for x in statuses):
                return None
            return OperatorRetry(float(data["at"]), tuple(statuses))
        if data.get("type") == "result" and not isinstance(data["attempt"], bool):
            return ResultMessage(int(data["attempt"]), result_from_dict(data["result"]))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return None


# -- <app>-geo-asked ----------------------------------------------------------------------------------------


def encode_asked(attempt: int, at: float, by: str = "", *, answered: bool = False) -> bytes:
    """The asked log's record value (the key is the IP as raw UTF-8); `by` names the asking worker, for
    operators and tests (readers ignore it); `at` keeps ASKED_TIME_DIGITS decimals."""
    return _dumps(
        {"attempt": attempt, "at": round(at, ASKED_TIME_DIGITS), "by": by[:200], "answered": answered}
    )


def decode_asked(raw: bytes | None) -> Asked | None:
    """Inverse of `encode_asked`; None for a tombstone or a malformed record (skipped, not fatal)."""
    data = _object(raw)
    try:
        return Asked(int(data["attempt"]), float(data["at"]), data.get("answered") is True) if data else None
    except (KeyError, TypeError, ValueError):
        return None
