"""Turn untrusted text into one canonical IP address, and decide whether a geo API may ever see it.

Normalising first gives every event for an address the same key (table key, topic key, `query` sent to
the API), so one address is cached, resolved and retried once. `classify` exists because the old job
retried private and garbage addresses forever: only GLOBAL addresses are ever sent to a geo provider.

Normalisation: surrounding ASCII whitespace is stripped; IPv4 comes out dotted-decimal; IPv6 comes out
compressed lower-case; an IPv4-mapped IPv6 address (``::ffff:1.2.3.4``) becomes its IPv4 form, because
dual-stack sockets report IPv4 peers that way and both spellings mean the same host. An IPv6 zone id
(``fe80::1%eth0``) is dropped and the address kept: the zone only names an interface on the sender's host,
the event is still valid, and a link-local address classifies as LINK_LOCAL and is never sent anywhere.
Forms other tools read differently (``010.1.1.1`` octal to inet_aton, ``1.2.3``, ``0x7f.0.0.1``,
``2130706433``, ``1.2.3.4.``) are rejected rather than guessed. An unbracketed IPv6 address followed by a
port (``2001:db8::1:443``) is itself a valid address and cannot be told apart; it is accepted as written.

Rejections raise `InvalidAddress` whose `reason` is one of `Rejection`'s values, a fixed vocabulary that
dead-letter dashboards can group by (checked in this order):

- "not a string", "empty", "too long", "non-ASCII characters", "embedded whitespace",
  "control characters", "CIDR block not allowed", "port not allowed", "brackets not allowed",
  "invalid zone id", "leading zeros", "non-canonical IPv4", "not an IP address".
"""

from __future__ import annotations

import ipaddress
import re
import socket
from bisect import bisect_right
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from pipeline.errors import InvalidAddress

MAX_ADDRESS_CHARS = 64  # longest IPv6 text (45) + "%" + an interface name; anything longer is not one address


class Rejection(StrEnum):
    """Why a text is not an address we accept; values are stable because they are stored in the DLQ."""

    NOT_A_STRING = "not a string"
    EMPTY = "empty"
    TOO_LONG = "too long"
    NON_ASCII = "non-ASCII characters"
    WHITESPACE = "embedded whitespace"
    CONTROL = "control characters"
    CIDR = "CIDR block not allowed"
    PORT = "port not allowed"
    BRACKETS = "brackets not allowed"
    ZONE = "invalid zone id"
    LEADING_ZEROS = "leading zeros"
    NON_CANONICAL_V4 = "non-canonical IPv4"
    NOT_AN_IP = "not an IP address"


class AddressKind(StrEnum):
    """What an address is for; everything except GLOBAL is final and never worth a geo lookup."""

    GLOBAL = "global"
    PRIVATE = "private"
    LOOPBACK = "loopback"
    LINK_LOCAL = "link_local"
    SHARED = "shared"
    MULTICAST = "multicast"
    DOCUMENTATION = "documentation"
    RESERVED = "reserved"
    UNSPECIFIED = "unspecified"


_ASCII_WHITESPACE = " \t\n\r\x0b\x0c"  # what bytes.strip() removes; other Unicode spaces are rejected
_ODD_CHARS = re.compile("[\x00-\x20\x7f]")  # ASCII whitespace and control characters (never in an address)
_BRACKETED_WITH_PORT = re.compile(r"\[[^\]]*\]:[0-9]+")  # the URL/socket spelling "[v6]:port"
_ZONE_ID = re.compile(r"[A-Za-z0-9._~-]+")  # RFC 6874 unreserved characters: interface names or numbers
_LOOSE_IPV4 = re.compile(  # what inet_aton-style parsers would read as IPv4: 1-4 parts, hex/octal, "."
    r"(?:0[xX][0-9a-fA-F]*|[0-9]+)(?:\.(?:0[xX][0-9a-fA-F]*|[0-9]+)){0,3}\.?"
)
_GLOBAL_UNICAST_V6 = IPv6Network("2000::/3")  # the only IPv6 space IANA allocates for global unicast

_Network = IPv4Network | IPv6Network
# First match wins, so more specific networks come before the blocks that contain them. Where this
# disagrees with Python 3.11's ipaddress, it is always stricter (never calls something GLOBAL it does not).
_SPECIAL_NETWORKS: tuple[tuple[_Network, AddressKind], ...] = tuple(
    (ipaddress.ip_network(net), kind)
    for net, kind in (
        ("0.0.0.0/32", AddressKind.UNSPECIFIED),  # "this host" before it has an address
        ("0.0.0.0/8", AddressKind.RESERVED),  # "this network" (RFC 791); never a peer
        ("10.0.0.0/8", AddressKind.PRIVATE),  # RFC 1918
        ("172.16.0.0/12", AddressKind.PRIVATE),  # RFC 1918
        ("192.168.0.0/16", AddressKind.PRIVATE),  # RFC 1918
        ("100.64.0.0/10", AddressKind.SHARED),  # carrier-grade NAT (RFC 6598): locates the ISP, not the user
        ("127.0.0.0/8", AddressKind.LOOPBACK),  # RFC 1122
        ("169.254.0.0/16", AddressKind.LINK_LOCAL),  # RFC 3927
        ("192.0.0.0/24", AddressKind.RESERVED),  # IETF protocol assignments; .9/.10 are anycast services
        ("192.0.2.0/24", AddressKind.DOCUMENTATION),  # TEST-NET-1 (RFC 5737)
        ("198.51.100.0/24", AddressKind.DOCUMENTATION),  # TEST-NET-2 (RFC 5737)
        ("203.0.113.0/24", AddressKind.DOCUMENTATION),  # TEST-NET-3 (RFC 5737)
        ("192.88.99.0/24", AddressKind.RESERVED),  # deprecated 6to4 relay anycast (RFC 7526)
        ("198.18.0.0/15", AddressKind.RESERVED),  # benchmarking (RFC 2544)
        ("224.0.0.0/4", AddressKind.MULTICAST),  # groups, not hosts; ipaddress 3.11 calls them global
        ("255.255.255.255/32", AddressKind.RESERVED),  # limited broadcast
        ("240.0.0.0/4", AddressKind.RESERVED),  # former class E, never routed
        ("::/128", AddressKind.UNSPECIFIED),  # RFC 4291
        ("::1/128", AddressKind.LOOPBACK),  # RFC 4291
        ("::/8", AddressKind.RESERVED),  # IPv4-compatible (deprecated) etc.; 3.11 calls ::1.2.3.4 global
        ("64:ff9b::/96", AddressKind.RESERVED),  # NAT64 (RFC 6052): names the translator, not the host
        ("64:ff9b:1::/48", AddressKind.RESERVED),  # local-use NAT64 (RFC 8215)
        ("100::/64", AddressKind.RESERVED),  # discard-only (RFC 6666)
        ("2001:db8::/32", AddressKind.DOCUMENTATION),  # RFC 3849
        ("3fff::/20", AddressKind.DOCUMENTATION),  # RFC 9637; ipaddress 3.11 calls it global
        ("2001::/23", AddressKind.RESERVED),  # IETF assignments (Teredo, ORCHID, AMT, anycast): see classify
        ("fc00::/7", AddressKind.PRIVATE),  # unique local addresses (RFC 4193)
        ("fe80::/10", AddressKind.LINK_LOCAL),  # RFC 4291
        ("fec0::/10", AddressKind.RESERVED),  # deprecated site-local (RFC 3879)
        ("ff00::/8", AddressKind.MULTICAST),  # groups, not hosts; ipaddress 3.11 calls most global
    )
)

# The same networks as integer ranges per IP version, in the same order (first match still wins): an
# integer comparison costs a fraction of `address in network`, and every first sight is classified
_SPECIAL_RANGES: dict[int, tuple[tuple[int, int, AddressKind], ...]] = {
    version: tuple(
        (int(net.network_address), int(net.broadcast_address), kind)
        for net, kind in _SPECIAL_NETWORKS
        if net.version == version
    )
    for version in (4, 6)
}


def flatten(ranges: tuple[tuple[int, int, AddressKind], ...]) -> tuple[list[int], list[AddressKind | None]]:
    """(starts, kinds): the first-match-wins `ranges` as disjoint intervals from 0 on, each running up to the
    next start, None where no range matches. A lookup is then one bisection, not a walk of every range (a
    global address, the common case, matched none after walking them all)."""
    points = sorted({0} | {low for low, _, _ in ranges} | {high + 1 for _, high, _ in ranges})
    starts: list[int] = []
    kinds: list[AddressKind | None] = []
    for point in points:  # every range starts or ends at a point: between two, the first match is fixed
        kind = next((k for low, high, k in ranges if low <= point <= high), None)
        if not kinds or kinds[-1] != kind:
            starts.append(point)
            kinds.append(kind)
    return starts, kinds


_SPECIAL_FLAT = {version: flatten(ranges) for version, ranges in _SPECIAL_RANGES.items()}
_V6_GLOBAL_LOW = int(_GLOBAL_UNICAST_V6.network_address)
_V6_GLOBAL_HIGH = int(_GLOBAL_UNICAST_V6.broadcast_address)


def ipaddress_v4_non_global() -> list[IPv4Network]:
    """The IPv4 networks ipaddress's `is_global` says no to, as this Python's ipaddress lists them
    (`is_private`'s networks and the shared space; its exceptions only make fewer addresses non-global);
    empty when this Python does not expose them."""
    constants = getattr(IPv4Address, "_constants", None)
    private = list(getattr(constants, "_private_networks", ()))
    if not private:
        return []
    public = getattr(constants, "_public_network", IPv4Network("100.64.0.0/10"))  # 3.11.7: inline
    return [*private, public]


def table_covers(networks: list[IPv4Network]) -> bool:
    """Whether every network lies inside one range of our IPv4 table (so it is never GLOBAL here)."""
    return bool(networks) and all(
        any(
            low <= int(net.network_address) and int(net.broadcast_address) <= high
            for low, high, _ in _SPECIAL_RANGES[4]
        )
        for net in networks
    )


# Every IPv4 address ipaddress calls non-global is in our table on this Python: for IPv4, `is_global`
# cannot disagree with it, and classify skips that check (a third of a new IP's routing). Checked here,
# at import, against this Python's own lists, so a Python that adds a network falls back to the check.
_V4_TABLE_IS_STRICTER = table_covers(ipaddress_v4_non_global())


# canonical text -> its parsed address, for the addresses normalised last: a new IP is normalised and then
# classified, and parsing it once instead of twice saves a sixth of a first sight; parsing the canonical
# text gives the same address, so this only skips work. Cleared when full.
PARSED_MAX = 4096
_PARSED: dict[str, IPv4Address | IPv6Address] = {}


def normalise_ip(raw: str) -> str:
    """Return the canonical text of the single IP address in `raw`, or raise `InvalidAddress(reason)`."""
    if not isinstance(raw, str):
        raise InvalidAddress(Rejection.NOT_A_STRING.value)
    text = raw.strip(_ASCII_WHITESPACE)
    if not text:
        raise InvalidAddress(Rejection.EMPTY.value)
    if len(text) > MAX_ADDRESS_CHARS:
        raise InvalidAddress(Rejection.TOO_LONG.value)
    quad = _dotted_quad(text)
    if quad is not None:  # canonical already: none of the checks below can refuse it
        _remember(text, quad)
        return text
    if not text.isascii():
        raise InvalidAddress(Rejection.NON_ASCII.value)
    if _ODD_CHARS.search(text):  # one scan; which kind of character it was is told apart only then
        if any(ch in _ASCII_WHITESPACE for ch in text):
            raise InvalidAddress(Rejection.WHITESPACE.value)
        raise InvalidAddress(Rejection.CONTROL.value)
    if "/" in text:
        raise InvalidAddress(Rejection.CIDR.value)
    if "[" in text or "]" in text:
        is_port = _BRACKETED_WITH_PORT.fullmatch(text)
        raise InvalidAddress((Rejection.PORT if is_port else Rejection.BRACKETS).value)
    if "%" in text:
        text, _, zone = text.partition("%")
        if ":" not in text or not _ZONE_ID.fullmatch(zone):
            raise InvalidAddress(Rejection.ZONE.value)
    address = _parse_any(text)  # not a canonical dotted quad: that was taken above
    if address is None:
        raise InvalidAddress(_diagnose(text).value)
    canonical = str(address)
    _remember(canonical, address)
    return canonical


def _remember(canonical: str, address: IPv4Address | IPv6Address) -> None:
    if len(_PARSED) >= PARSED_MAX:
        _PARSED.clear()
    _PARSED[canonical] = address


def classify(ip: str) -> AddressKind:
    """Say what a normalised address is for; GLOBAL only where ipaddress's `is_global` agrees.

    2001::/23 is all RESERVED although IANA marks a few anycast and identifier blocks in it (2001:1::1,
    2001:3::/32, 2001:4:112::/48, 2001:20::/28) globally reachable: they name services or hashes, not
    places, so a geo lookup cannot succeed, and ipaddress 3.11 calls them non-global anyway.
    """
    address = _PARSED.get(ip) or _parse(ip)
    if address is None:
        raise InvalidAddress(Rejection.NOT_AN_IP.value)
    number = int(address)
    starts, kinds = _SPECIAL_FLAT[address.version]
    kind = kinds[bisect_right(starts, number) - 1]
    if kind is not None:
        return kind
    if address.version == 6 and not _V6_GLOBAL_LOW <= number <= _V6_GLOBAL_HIGH:
        return AddressKind.RESERVED  # unallocated IPv6 space (IETF reserved); 3.11 calls much of it global
    if address.version == 4 and _V4_TABLE_IS_STRICTER:
        return AddressKind.GLOBAL
    # Safety net: our table never promotes what ipaddress says is not global.
    return AddressKind.GLOBAL if address.is_global else AddressKind.RESERVED


def _parse(text: str) -> IPv4Address | IPv6Address | None:
    """Parse with ipaddress (a canonical dotted quad in C), folding IPv4-mapped IPv6 into IPv4; None if
    it is not an address."""
    found = _dotted_quad(text)
    return found if found is not None else _parse_any(text)


def _parse_any(text: str) -> IPv4Address | IPv6Address | None:
    """`_parse` for a text that is not a canonical dotted quad (ipaddress reads it)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:  # only reachable from classify; normalise_ip strips zones first
            return IPv6Address(address.packed)
    return address


def _dotted_quad(text: str) -> IPv4Address | None:
    """`text` as an IPv4 address when it is a canonical dotted quad, else None (ask ipaddress). Read by
    the C library (ipaddress reads octet by octet in Python: most of a new IPv4 address's cost) and
    taken only when the C library writes it back as the same text: canonical text, which ipaddress reads
    to the same address."""
    if ":" in text:
        return None
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):  # not a dotted quad (ValueError: a NUL in the text)
        return None
    return IPv4Address(packed) if socket.inet_ntop(socket.AF_INET, packed) == text else None


def _diagnose(text: str) -> Rejection:
    """Name why ipaddress refused `text`, so the DLQ says more than "not an IP address" where it can."""
    head, colon, tail = text.rpartition(":")
    if colon and tail.isdigit() and "." in head and _parse(head) is not None:
        return Rejection.PORT  # "1.2.3.4:80"; an IPv6 address never has a "." before its last ":"
    last = tail if colon else text
    parts = last.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        if any(len(p) > 1 and p.startswith("0") for p in parts):
            return Rejection.LEADING_ZEROS  # inet_aton reads these as octal, ipaddress refuses them
        return Rejection.NOT_AN_IP  # an octet above 255
    if not colon and _LOOSE_IPV4.fullmatch(text):
        return Rejection.NON_CANONICAL_V4
    return Rejection.NOT_AN_IP
