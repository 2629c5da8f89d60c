"""Unit tests for address normalisation and classification: tables of cases and Hypothesis properties."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.addresses import MAX_ADDRESS_CHARS, AddressKind, Rejection, classify, normalise_ip
from pipeline.errors import InvalidAddress, PipelineError

K = AddressKind
R = Rejection
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# No example database: pure tests carry no state between runs (failures print their reproducer).
PURE = settings(database=None)

# (raw input, normalised form, kind)
VALID: list[tuple[str, str, AddressKind]] = [
    # public IPv4, including the first/last addresses around special blocks
    ("8.8.8.8", "8.8.8.8", K.GLOBAL),
    ("1.1.1.1", "1.1.1.1", K.GLOBAL),
    ("  81.2.69.142\t\r\n", "81.2.69.142", K.GLOBAL),
    ("100.63.255.255", "100.63.255.255", K.GLOBAL),
    ("100.128.0.0", "100.128.0.0", K.GLOBAL),
    ("172.32.0.1", "172.32.0.1", K.GLOBAL),
    ("198.20.0.1", "198.20.0.1", K.GLOBAL),
    ("223.255.255.254", "223.255.255.254", K.GLOBAL),
    # public IPv6
    ("2606:4700:4700::1111", "2606:4700:4700::1111", K.GLOBAL),
    ("2001:4860:4860::8888", "2001:4860:4860::8888", K.GLOBAL),
    ("2A00:1450:4001:0830:0000:0000:0000:200E", "2a00:1450:4001:830::200e", K.GLOBAL),
    ("2001:200::1", "2001:200::1", K.GLOBAL),  # first block after 2001::/23
    ("2002:808:808::1", "2002:808:808::1", K.GLOBAL),  # 6to4 names a real host
    # IPv4-mapped IPv6 becomes IPv4
    ("::ffff:8.8.8.8", "8.8.8.8", K.GLOBAL),
    ("::FFFF:192.168.1.1", "192.168.1.1", K.PRIVATE),
    ("::ffff:7f00:1", "127.0.0.1", K.LOOPBACK),
    ("0:0:0:0:0:ffff:0a00:0001", "10.0.0.1", K.PRIVATE),
    # zone ids are dropped, the address kept
    ("fe80::1%eth0", "fe80::1", K.LINK_LOCAL),
    ("FE80::ABCD%12", "fe80::abcd", K.LINK_LOCAL),
    (" fe80::1%en0.1 ", "fe80::1", K.LINK_LOCAL),
    ("2001:4860::1%eth0", "2001:4860::1", K.GLOBAL),
    # private
    ("10.0.0.1", "10.0.0.1", K.PRIVATE),
    ("10.255.255.255", "10.255.255.255", K.PRIVATE),
    ("172.16.5.4", "172.16.5.4", K.PRIVATE),
    ("172.31.255.255", "172.31.255.255", K.PRIVATE),
    ("192.168.1.1", "192.168.1.1", K.PRIVATE),
    ("fc00::1", "fc00::1", K.PRIVATE),
    ("FD12:3456:789A::1", "fd12:3456:789a::1", K.PRIVATE),
    # loopback
    ("127.0.0.1", "127.0.0.1", K.LOOPBACK),
    ("127.255.255.254", "127.255.255.254", K.LOOPBACK),
    ("::1", "::1", K.LOOPBACK),
    ("0:0:0:0:0:0:0:1", "::1", K.LOOPBACK),
    # link-local
    ("169.254.169.254", "169.254.169.254", K.LINK_LOCAL),
    ("fe80::1", "fe80::1", K.LINK_LOCAL),
    ("febf:ffff::1", "febf:ffff::1", K.LINK_LOCAL),
    # shared address space (CGNAT)
    ("100.64.0.1", "100.64.0.1", K.SHARED),
    ("100.127.255.254", "100.127.255.254", K.SHARED),
    # multicast
    ("224.0.0.1", "224.0.0.1", K.MULTICAST),
    ("239.255.255.250", "239.255.255.250", K.MULTICAST),
    ("ff02::1", "ff02::1", K.MULTICAST),
    ("ff0e::101", "ff0e::101", K.MULTICAST),
    # documentation
    ("192.0.2.1", "192.0.2.1", K.DOCUMENTATION),
    ("198.51.100.7", "198.51.100.7", K.DOCUMENTATION),
    ("203.0.113.200", "203.0.113.200", K.DOCUMENTATION),
    ("2001:DB8::1", "2001:db8::1", K.DOCUMENTATION),
    ("3fff::1", "3fff::1", K.DOCUMENTATION),
    ("3fff:fff:ffff::1", "3fff:fff:ffff::1", K.DOCUMENTATION),
    # unspecified
    ("0.0.0.0", "0.0.0.0", K.UNSPECIFIED),
    ("::", "::", K.UNSPECIFIED),
    ("0:0:0:0:0:0:0:0", "::", K.UNSPECIFIED),
    # reserved IPv4
    ("0.1.2.3", "0.1.2.3", K.RESERVED),
    ("240.0.0.1", "240.0.0.1", K.RESERVED),
    ("255.255.255.255", "255.255.255.255", K.RESERVED),
    ("192.0.0.1", "192.0.0.1", K.RESERVED),
    ("192.0.0.9", "192.0.0.9", K.RESERVED),
    ("198.18.0.1", "198.18.0.1", K.RESERVED),
    ("198.19.255.255", "198.19.255.255", K.RESERVED),
    ("192.88.99.1", "192.88.99.1", K.RESERVED),
    # reserved IPv6
    ("2001::1", "2001::1", K.RESERVED),  # Teredo
    ("2001:1::1", "2001:1::1", K.RESERVED),  # PCP anycast: IANA-global, kept from the API on purpose
    ("2001:2::1", "2001:2::1", K.RESERVED),  # benchmarking
    ("2001:3::1", "2001:3::1", K.RESERVED),  # AMT
    ("2001:4:112::1", "2001:4:112::1", K.RESERVED),  # AS112-v6
    ("2001:10::1", "2001:10::1", K.RESERVED),  # ORCHID (deprecated)
    ("2001:20::1", "2001:20::1", K.RESERVED),  # ORCHIDv2
    ("2001:1ff:ffff::1", "2001:1ff:ffff::1", K.RESERVED),  # last block of 2001::/23
    ("100::1", "100::1", K.RESERVED),  # discard-only
    ("64:ff9b::8.8.8.8", "64:ff9b::808:808", K.RESERVED),  # NAT64 well-known prefix
    ("64:ff9b:1::1", "64:ff9b:1::1", K.RESERVED),  # local-use NAT64
    ("::1.2.3.4", "::102:304", K.RESERVED),  # IPv4-compatible (deprecated)
    ("::ffff:0:1.2.3.4", "::ffff:0:102:304", K.RESERVED),  # SIIT IPv4-translated
    ("fec0::1", "fec0::1", K.RESERVED),  # site-local (deprecated)
    ("4000::1", "4000::1", K.RESERVED),  # unallocated
    ("5f00::1", "5f00::1", K.RESERVED),  # SRv6 SIDs
]

# (raw input, rejection reason)
REJECTED: list[tuple[str, Rejection]] = [
    ("", R.EMPTY),
    (" \t\r\n", R.EMPTY),
    ("1" * (MAX_ADDRESS_CHARS + 1), R.TOO_LONG),
    ("example.com", R.NOT_AN_IP),
    ("localhost", R.NOT_AN_IP),
    ("1.2.3.4.5", R.NOT_AN_IP),
    ("256.1.1.1", R.NOT_AN_IP),
    ("2001:db8::g", R.NOT_AN_IP),
    ("1:2:3:4:5:6:7:8:9", R.NOT_AN_IP),
    (":::", R.NOT_AN_IP),
    ("host.example.com:80", R.NOT_AN_IP),
    ("1.2.3.0/24", R.CIDR),
    ("1.2.3.4/32", R.CIDR),
    ("2001:db8::/32", R.CIDR),
    ("1.2.3.4:80", R.PORT),
    ("[2001:db8::1]:443", R.PORT),
    ("[fe80::1%eth0]:22", R.PORT),
    ("::ffff:1.2.3.4:8080", R.PORT),
    ("[2001:db8::1]", R.BRACKETS),
    ("[1.2.3.4]", R.BRACKETS),
    ("2001:db8::1]", R.BRACKETS),
    ("fe80::1%", R.ZONE),
    ("1.2.3.4%eth0", R.ZONE),
    ("fe80::1%eth0%1", R.ZONE),
    ("%eth0", R.ZONE),
    ("010.1.1.1", R.LEADING_ZEROS),
    ("1.2.3.04", R.LEADING_ZEROS),
    ("00.0.0.0", R.LEADING_ZEROS),
    ("::ffff:1.2.3.010", R.LEADING_ZEROS),
    ("1.2.3", R.NON_CANONICAL_V4),
    ("127.1", R.NON_CANONICAL_V4),
    ("0x7f.0.0.1", R.NON_CANONICAL_V4),
    ("0x7f000001", R.NON_CANONICAL_V4),
    ("2130706433", R.NON_CANONICAL_V4),
    ("1.2.3.4.", R.NON_CANONICAL_V4),
    ("1.2.3.4\x00", R.CONTROL),
    ("\x001.2.3.4", R.CONTROL),
    ("1.2.3.4\x1b", R.CONTROL),
    ("1.2.3.4\x7f", R.CONTROL),
    ("\x1c1.2.3.4", R.CONTROL),  # str.strip() would remove this "whitespace"; we do not
    ("1.2.3. 4", R.WHITESPACE),
    ("1.2.3.4\t5", R.WHITESPACE),
    ("fe80::1 %eth0", R.WHITESPACE),
    ("\u0661\u0662\u0663.1.1.1", R.NON_ASCII),  # Arabic-Indic digits
    ("\uff11.\uff12.\uff13.\uff14", R.NON_ASCII),  # full-width digits
    ("1.2.3.4\u00a0", R.NON_ASCII),  # no-break space is not stripped
    ("2001:db8::\uff11", R.NON_ASCII),
    ("fe80::1%\u00e9th0", R.NON_ASCII),
]


@pytest.mark.parametrize(("raw", "normalised", "kind"), VALID)
def test_valid_address_normalises_and_classifies(raw: str, normalised: str, kind: AddressKind) -> None:
    """Each accepted input yields its canonical text and the expected kind."""
    assert normalise_ip(raw) == normalised
    assert classify(normalised) is kind


@pytest.mark.parametrize(("raw", "reason"), REJECTED)
def test_invalid_address_is_rejected_with_reason(raw: str, reason: Rejection) -> None:
    """Each rejected input raises InvalidAddress with its stable reason."""
    with pytest.raises(InvalidAddress) as caught:
        normalise_ip(raw)
    assert caught.value.reason == reason.value
    assert isinstance(caught.value, PipelineError)


def test_table_is_large_enough() -> None:
    """The case table covers at least 50 inputs."""
    assert len(VALID) + len(REJECTED) >= 50


@pytest.mark.parametrize("value", [None, 2130706433, b"1.2.3.4", ["1.2.3.4"]])
def test_non_string_is_rejected(value: Any) -> None:
    """A non-string value from a JSON event is rejected, not crashed on."""
    with pytest.raises(InvalidAddress) as caught:
        normalise_ip(value)
    assert caught.value.reason == Rejection.NOT_A_STRING.value


def test_longest_address_with_zone_fits_the_cap() -> None:
    """The longest IPv6 spelling plus a zone id fits within MAX_ADDRESS_CHARS."""
    longest = "0000:0000:0000:0000:0000:ffff:255.255.255.255"
    zone = "z" * (MAX_ADDRESS_CHARS - len(longest) - 1)
    assert len(zone) >= 15  # a Linux interface name (IFNAMSIZ - 1) always fits
    assert normalise_ip(f"{longest}%{zone}") == "255.255.255.255"


def test_classify_rejects_non_address() -> None:
    """classify refuses text that is not an address instead of guessing a kind."""
    with pytest.raises(InvalidAddress):
        classify("example.com")


def _expected(address: Address) -> Address:
    """The address normalise_ip should return: IPv4-mapped IPv6 folds to IPv4."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


_WS = st.sampled_from(["", " ", "\t", "\n", " \r\n"])
_SPELLINGS = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses().map(lambda a: a.exploded),
    st.ip_addresses(v=6).map(lambda a: str(a).upper()),
    st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"),
    st.ip_addresses(network="fe80::/10").map(lambda a: f"{a}%eth0"),
)
_TEXTS = st.builds(lambda pre, body, post: pre + body + post, _WS, _SPELLINGS, _WS)


@PURE
@given(_TEXTS)
def test_normalise_is_idempotent(raw: str) -> None:
    """Normalising an already normalised address returns it unchanged."""
    once = normalise_ip(raw)
    assert normalise_ip(once) == once


@PURE
@given(st.ip_addresses())
def test_every_address_round_trips(address: Address) -> None:
    """Every valid address, compressed or exploded, normalises to the same ipaddress object."""
    assert ipaddress.ip_address(normalise_ip(str(address))) == _expected(address)
    assert ipaddress.ip_address(normalise_ip(address.exploded)) == _expected(address)


@PURE
@given(st.ip_addresses())
def test_global_implies_stdlib_global(address: Address) -> None:
    """Nothing ipaddress considers non-global is ever classified GLOBAL."""
    normalised = normalise_ip(str(address))
    if classify(normalised) is AddressKind.GLOBAL:
        assert ipaddress.ip_address(normalised).is_global


NON_GLOBAL_NETWORKS = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "::/8", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64",
    "2001::/23", "2001:db8::/32", "3fff::/20", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
]  # fmt: skip


@pytest.mark.parametrize("network", NON_GLOBAL_NETWORKS)
@PURE
@given(data=st.data())
def test_non_global_networks_are_never_global(network: str, data: st.DataObject) -> None:
    """Every address inside a special-purpose block is classified as something other than GLOBAL."""
    address = data.draw(st.ip_addresses(network=network))
    kind = classify(normalise_ip(str(address)))
    assert kind is not AddressKind.GLOBAL


@PURE
@given(st.text(max_size=80))
def test_arbitrary_text_is_accepted_or_rejected_cleanly(raw: str) -> None:
    """Any text either normalises to a parseable address or raises InvalidAddress with a known reason."""
    try:
        normalised = normalise_ip(raw)
    except InvalidAddress as exc:
        assert exc.reason in {r.value for r in Rejection}
    else:
        assert ipaddress.ip_address(normalised)
        assert normalise_ip(normalised) == normalised
        assert classify(normalised) in AddressKind


def _classify_by_networks(ip: str) -> AddressKind:
    """The reference: the special networks checked with `address in network`, as classify did before it
    compared integer ranges."""
    from pipeline.addresses import _GLOBAL_UNICAST_V6, _SPECIAL_NETWORKS

    address = ipaddress.ip_address(ip)
    for network, kind in _SPECIAL_NETWORKS:
        if address in network:
            return kind
    if isinstance(address, ipaddress.IPv6Address) and address not in _GLOBAL_UNICAST_V6:
        return AddressKind.RESERVED
    return AddressKind.GLOBAL if address.is_global else AddressKind.RESERVED


@settings(max_examples=3000)
@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
def test_classify_by_integer_ranges_agrees_with_the_network_table(address: Any) -> None:
    """Comparing integers gives every address the kind the network table gives it."""
    ip = normalise_ip(str(address))
    assert classify(ip) is _classify_by_networks(ip)


@pytest.mark.parametrize("network", ["10.0.0.0/8", "100.64.0.0/10", "fc00::/7", "2001:db8::/32", "::/128"])
def test_classify_agrees_with_the_network_table_at_the_edges_of_special_networks(network: str) -> None:
    """The first and last address of a special network, and their neighbours, classify as the table says."""
    net = ipaddress.ip_network(network)
    first, last = int(net.network_address), int(net.broadcast_address)
    top = 2**32 - 1 if net.version == 4 else 2**128 - 1
    for n in {max(0, first - 1), first, last, min(top, last + 1)}:
        ip = normalise_ip(str(ipaddress.ip_address(n) if net.version == 4 else ipaddress.IPv6Address(n)))
        assert classify(ip) is _classify_by_networks(ip)


def test_on_this_python_the_table_holds_every_ipv4_network_ipaddress_calls_non_global() -> None:
    """Why classify may skip `is_global` for IPv4: each network ipaddress lists is inside one range of
    ours (checked at import against this Python's own lists)."""
    from pipeline import addresses

    networks = addresses.ipaddress_v4_non_global()
    assert ipaddress.IPv4Network("192.0.0.170/31") in networks and addresses._V4_TABLE_IS_STRICTER
    assert addresses.table_covers(networks)


def test_a_network_outside_the_table_keeps_the_is_global_check() -> None:
    """Were a Python to call a network non-global that the table does not hold, the import-time check
    says so, and classify asks ipaddress again (tested with a made-up network)."""
    from pipeline import addresses

    assert not addresses.table_covers([ipaddress.IPv4Network("8.8.8.0/24")])
    assert not addresses.table_covers([])


def test_classify_reuses_the_parse_of_a_just_normalised_address_and_agrees_without_it() -> None:
    """A normalised address is classified from its remembered parse (bounded memory), with the same
    answer as from a fresh parse, mapped and zoned forms included."""
    from pipeline import addresses

    raws = ["::ffff:10.0.0.1", "8.8.8.8", "2001:4860:4860::8888", "fe80::1%eth0", "100.64.1.1"]
    remembered = [classify(normalise_ip(raw)) for raw in raws]
    addresses._PARSED.clear()
    assert [classify(normalise_ip(raw).split("%")[0]) for raw in raws] == remembered
    assert remembered[:2] == [AddressKind.PRIVATE, AddressKind.GLOBAL]
    for i in range(addresses.PARSED_MAX + 10):
        normalise_ip(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(addresses._PARSED) <= addresses.PARSED_MAX


def _first_match(ranges: Any, number: int) -> AddressKind | None:
    return next((kind for low, high, kind in ranges if low <= number <= high), None)


def test_the_flat_table_gives_each_range_edge_the_first_matching_range() -> None:
    """One bisection of the flattened table answers as walking the ranges in order does, at every
    range's first and last number and their neighbours (where overlapping ranges change the answer)."""
    from bisect import bisect_right

    from pipeline.addresses import _SPECIAL_FLAT, _SPECIAL_RANGES

    for version, ranges in _SPECIAL_RANGES.items():
        starts, kinds = _SPECIAL_FLAT[version]
        edges = {n for low, high, _ in ranges for n in (low - 1, low, high, high + 1) if n >= 0}
        for number in sorted(edges):
            assert kinds[bisect_right(starts, number) - 1] is _first_match(ranges, number), (version, number)


_OCTETS = st.one_of(st.integers(0, 300).map(str), st.sampled_from(["", "00", "01", "007", "0x1", "+1", " 1"]))
_QUADS = st.lists(_OCTETS, min_size=1, max_size=5).map(".".join)


@PURE
@given(_QUADS)
def test_a_dotted_quad_read_in_c_is_exactly_what_ipaddress_reads_as_canonical(text: str) -> None:
    """The C fast path takes a text only when ipaddress reads it as an IPv4 address written the same way
    (leading zeros, octets past 255, wrong counts and signs are left to ipaddress), and reads the same
    address."""
    from pipeline.addresses import _dotted_quad

    try:
        reference: ipaddress.IPv4Address | None = ipaddress.IPv4Address(text)
    except ValueError:
        reference = None
    canonical = reference is not None and str(reference) == text
    assert (_dotted_quad(text) is not None) is canonical
    if canonical:
        assert _dotted_quad(text) == reference and normalise_ip(text) == text
