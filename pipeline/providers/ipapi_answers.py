"""Validation of ip-api answer items: untrusted JSON in, a `LookupResult` out, never an exception.

The free tier is plain HTTP, so an answer may come from anyone on the path. What an answer says goes into
the cache entry and from there into every enriched record for that IP, so each item is checked on its own
and a bad one fails only its own IP (transiently: the next ask may get an honest answer):

- A field that is missing or null is unknown (None). A field that is present must have the right type and
  range, else the item is invalid: "ip-api: invalid item: <field> <problem>".
- Text fields are stripped of control characters (C0, DEL, C1, ANSI escape sequences, Unicode line and
  paragraph separators, bidi controls, lone surrogates), whitespace-collapsed and cut to `MAX_TEXT`.
  An over-long text is TRUNCATED with a trailing "…", not rejected: ip-api would send the same text on
  every retry, so rejecting it would keep the IP unresolved for good while spending budget on each retry,
  and a cut name is still useful. A wrong country code or number is different: it cannot be honest ip-api
  output, so the item is rejected and retried rather than stored.
- `countryCode` is two ASCII letters (upper-cased) or empty/missing (None); anything else rejects the item
  rather than dropping only that field, because a Resolved entry without a country would be final until
  its refresh 30 days later, while a retry will probably get the real code.
- `lat` in [-90, 90], `lon` in [-180, 180], finite; booleans are not numbers. `as` is "AS<number> <name>"
  with the number in 0..2**32-1, or empty.
- `proxy`, `hosting` and `mobile` are JSON booleans; a flag of any other type (a string "true", a number, a
  list) is DROPPED (None), not guessed and not a reason to reject the item: it says nothing about the
  place the rest of the item holds, and None is what the entry shows when nobody said.
- "fail" is permanent only for exactly "private range", "reserved range" or "invalid query" (ASCII,
  case-insensitive, surrounding whitespace ignored); every other fail is transient.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pipeline.models import (
    MAX_ASN,
    GeoData,
    LookupResult,
    PermanentFailure,
    Resolved,
    TransientFailure,
    iso_country,
)

# Real ip-api names (ISP and org strings, the longest) run to about 100 characters; 256 keeps every one of
# them whole and bounds the text an entry copies into each enriched record to ~1.5 KiB (six text fields).
MAX_TEXT = 256
ELLIPSIS = "…"  # marks a truncated text; counted within MAX_TEXT
PERMANENT_MESSAGES = frozenset({"private range", "reserved range", "invalid query"})  # retrying cannot help
MAX_INT_DIGITS = 40  # a JSON integer longer than this is out of every range we check; see `parse_int`

_ANSI = re.compile(r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")  # CSI sequences, then 2-byte escapes
_BREAKS = dict.fromkeys(map(ord, "\t\n\v\f\r\x1c\x1d\x1e\x1f\x85\u2028\u2029"), " ")  # controls that separate
_DROPPED = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F),
            *range(0x2066, 0x206A), *range(0xD800, 0xE000)]  # fmt: skip
_CLEAN = {**dict.fromkeys(_DROPPED), **_BREAKS}  # str.translate table: drop, or turn into a space
_AS = re.compile(r"AS(-?[0-9]+)(?: (.+))?", re.IGNORECASE | re.ASCII)


class InvalidItem(ValueError):
    """One field of an answer item is unusable; the message names the field and the problem."""


def parse_int(digits: str) -> int | float:
    """`json.loads`'s parse_int: a huge integer becomes ±inf (out of every range) instead of raising.

    Python refuses to convert more than 4,300 digits, which would fail the whole body over one number.
    """
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        return -math.inf if digits.startswith("-") else math.inf
    return int(digits)


def item_result(item: object, provider: str) -> LookupResult:
    """The result one answer item stands for; any problem is a TransientFailure naming it."""
    try:
        if not isinstance(item, dict):
            raise InvalidItem("not an object")
        status = item.get("status")
        if status == "success":
            return Resolved(geo_data(item), provider)
        if status == "fail":
            return _failure(item.get("message"), provider)
        raise InvalidItem("status is not success or fail")
    except InvalidItem as exc:
        return TransientFailure(f"ip-api: invalid item: {exc}", provider)


def geo_data(item: dict[str, Any]) -> GeoData:
    """The geography of a success item; raises InvalidItem for the first unusable field."""
    asn, as_rest = split_as(text(item, "as"))
    return GeoData(
        country_code=country_code(item.get("countryCode")),
        country_name=text(item, "country"),
        region=text(item, "regionName"),
        city=text(item, "city"),
        latitude=coordinate(item, "lat", 90),
        longitude=coordinate(item, "lon", 180),
        asn=asn,
        as_name=text(item, "asname") or as_rest,
        isp=text(item, "isp"),
        org=text(item, "org"),
        proxy=flag(item, "proxy"),
        hosting=flag(item, "hosting"),
        mobile=flag(item, "mobile"),
    )


def flag(item: dict[str, Any], name: str) -> bool | None:
    """A boolean field as it was sent; None when missing, null or anything but a JSON boolean."""
    value = item.get(name)
    return value if isinstance(value, bool) else None


def clean_text(value: str) -> str | None:
    """`value` without control characters, whitespace collapsed, at most MAX_TEXT long; "" becomes None."""
    cleaned = " ".join(_ANSI.sub("", value).translate(_CLEAN).split())
    if len(cleaned) > MAX_TEXT:
        cleaned = cleaned[: MAX_TEXT - len(ELLIPSIS)].rstrip() + ELLIPSIS
    return cleaned or None


def text(item: dict[str, Any], name: str) -> str | None:
    """The cleaned text field `name`: None when missing, null or blank; InvalidItem when not a string."""
    value = item.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidItem(f"{name} is not text")
    return clean_text(value)


def country_code(value: object) -> str | None:
    """Two ASCII letters, upper-cased; None when missing or blank; InvalidItem for anything else."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    code = iso_country(value.strip()) if isinstance(value, str) else None
    if code is None:
        raise InvalidItem("countryCode is not two letters")
    return code


def coordinate(item: dict[str, Any], name: str, limit: int) -> float | None:
    """A finite number within ±limit; None when missing or null; InvalidItem otherwise (bools included)."""
    value = item.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidItem(f"{name} is not a number")
    if not -limit <= value <= limit:  # compares big ints exactly; false for NaN, so NaN is refused too
        raise InvalidItem(f"{name} out of range")
    return float(value)


def split_as(value: str | None) -> tuple[int | None, str | None]:
    """ip-api's `as`: "AS15169 Google LLC" -> (15169, "Google LLC"); None -> (None, None)."""
    if value is None:
        return None, None
    match = _AS.fullmatch(value)
    if match is None:
        raise InvalidItem("as is not 'AS<number> <name>'")
    digits, rest = match.groups()
    if digits.startswith("-") or len(digits) > MAX_INT_DIGITS or int(digits) > MAX_ASN:
        raise InvalidItem("asn out of range")
    return int(digits), rest


def _failure(message: object, provider: str) -> LookupResult:
    if message is None:
        return TransientFailure("ip-api: fail without message", provider)
    if not isinstance(message, str):
        raise InvalidItem("message is not text")
    exact = message.strip(" \t\r\n").lower()
    if message.isascii() and exact in PERMANENT_MESSAGES:
        return PermanentFailure(exact, provider)
    return TransientFailure(f"ip-api: {clean_text(message) or 'fail without message'}", provider)
