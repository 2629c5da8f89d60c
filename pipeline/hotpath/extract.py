"""The IPs of one event: each configured field's value, walked by its dot path. Pure.

A field's value is one IP text, `ip:port` (`203.0.113.7:51234`), `[v6]:port` (`[2001:db8::1]:443`), an
array of those (ECS `related.ip`), or, for an `xff:` field, an X-Forwarded-For chain (a string
`"client, proxy1, proxy2"` or an array of such strings). A missing field or a null is absent (an ECS
event without `destination.ip` is normal); a value that holds no valid IP fails that field only, with a
reason. Every IP found is normalised (`pipeline.addresses.normalise_ip`) and then enriched on its own.

Forwarded chains: each proxy appends the address it received the request from, so the chain reads
client, proxy1, proxy2, ... and only the right-most hops were written by proxies we run; everything left
of them came from the request itself and anyone can forge it (`X-Forwarded-For: 8.8.8.8` costs a curl
flag). So the client is the right-most hop that is not a trusted proxy (GEO_TRUSTED_PROXIES), never the
left-most; with no trusted proxies configured it is the right-most hop.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from pipeline.addresses import normalise_ip
from pipeline.config.ipfields import FieldSpec
from pipeline.errors import InvalidAddress

# IPs enriched per event: ECS events carry a handful (source, destination, related: ~4); each IP costs a
# near-cache lookup, maybe a seen record, and ~0.5 KiB of output, so an event built to hurt (an array of
# 100k IPs) costs at most this many; the rest are counted, marked in the output and not enriched
MAX_IPS_PER_EVENT = 32
MAX_FORWARDED_HOPS = 32  # hops of a forwarded chain examined from the right: no real path has more proxies
MAX_PORT = 65535

Normalise = Callable[[str], str]  # a value's text -> the normalised IP, a port dropped
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Found(NamedTuple):
    """One IP of an event: the field it came from (its index when the field is an array) and the
    normalised IP, or why the value holds none (`error`). A tuple: one is made per IP and event."""

    spec: FieldSpec
    element: int | None  # the position in an array field, None for a single value
    ip: str | None
    error: str | None = None


def strip_port(text: str) -> str:
    """The address of `ip:port` or `[v6]:port` (and of `[v6]`); any other text as it is (normalising
    diagnoses it). An unbracketed IPv6 address never carries a port: `2001:db8::1:443` is an address."""
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1 :]
        if end > 0 and (not rest or (rest[0] == ":" and _port(rest[1:]))):
            return text[1:end]
        return text
    head, colon, tail = text.rpartition(":")
    # a dotted quad before the last colon: IPv4 (or IPv4-mapped IPv6) and a port; IPv6 ends in hex
    if colon and "." in head and "." not in tail and _port(tail):
        return head
    return text


def normalise_with_port(text: str) -> str:
    """`normalise_ip` of the address in `text`, with a port (`ip:port`, `[v6]:port`) dropped."""
    return normalise_ip(strip_port(text))


def _port(text: str) -> bool:
    return text.isdigit() and len(text) <= 5 and int(text) <= MAX_PORT


def networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    """GEO_TRUSTED_PROXIES as networks (checked at start: every one parses)."""
    return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs)


def forwarded_client(chain: Any, trusted: Sequence[Network], normalise: Normalise) -> str:
    """The client of an X-Forwarded-For chain: the right-most hop not in `trusted` (all trusted: the
    left-most examined). Raises InvalidAddress when a hop it must read is not an address. `normalise`
    drops a hop's port (`normalise_with_port`)."""
    texts = chain if isinstance(chain, list) else [chain]
    if not all(isinstance(text, str) for text in texts):
        raise InvalidAddress("forwarded chain must be a string or an array of strings")
    hops = [hop.strip() for text in texts[-MAX_FORWARDED_HOPS:] for hop in text.split(",")]
    hops = [hop for hop in hops if hop][-MAX_FORWARDED_HOPS:]
    if not hops:
        raise InvalidAddress("empty forwarded chain")
    ip = ""
    for hop in reversed(hops):
        ip = normalise(hop)  # ports dropped by `normalise`
        if not trusted or not _within(ip, trusted):
            return ip
    return ip


def _within(ip: str, trusted: Sequence[Network]) -> bool:
    address = ipaddress.ip_address(ip)
    return any(address in network for network in trusted)


def extract(
    event: dict[str, Any], specs: Sequence[FieldSpec], trusted: Sequence[Network], normalise: Normalise
) -> tuple[list[Found], int]:
    """Every IP of `event` in field order (array elements in order), at most MAX_IPS_PER_EVENT; and how
    many array elements past the cap were skipped. `normalise` turns a value's text into the normalised
    IP, a port dropped (InvalidAddress when it holds none)."""
    found: list[Found] = []
    skipped = 0
    for spec in specs:
        value: Any = event
        for name in spec.path:
            value = value.get(name) if isinstance(value, dict) else None
        if value is None:
            continue  # absent: neither an IP nor a failure
        if len(found) >= MAX_IPS_PER_EVENT:
            skipped += len(value) if isinstance(value, list) and not spec.forwarded else 1
            continue
        if isinstance(value, str) and not spec.forwarded:
            try:
                found.append(Found(spec, None, normalise(value), None))
            except InvalidAddress as exc:
                found.append(Found(spec, None, None, f"invalid ip: {exc.reason}"))
        elif spec.forwarded:
            try:
                found.append(Found(spec, None, forwarded_client(value, trusted, normalise), None))
            except InvalidAddress as exc:
                found.append(Found(spec, None, None, f"invalid ip: {exc.reason}"))
        elif isinstance(value, list):
            room = MAX_IPS_PER_EVENT - len(found)
            found += [_element(spec, i, item, normalise) for i, item in enumerate(value[:room])]
            skipped += max(0, len(value) - room)
        else:
            found.append(Found(spec, None, None, f"field '{spec.name}' must be a string, not {_kind(value)}"))
    return found, skipped


def _element(spec: FieldSpec, index: int, item: Any, normalise: Normalise) -> Found:
    if not isinstance(item, str):
        return Found(spec, index, None, f"field '{spec.name}' must hold strings, not {_kind(item)}")
    try:
        return Found(spec, index, normalise(item), None)
    except InvalidAddress as exc:
        return Found(spec, index, None, f"invalid ip: {exc.reason}")


def _kind(value: Any) -> str:
    return type(value).__name__
