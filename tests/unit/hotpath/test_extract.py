"""Finding an event's IPs: dot paths, arrays, ports, forwarded chains, absent and failed fields, the cap."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.config.ipfields import FieldSpec, parse_field, parse_fields
from pipeline.errors import InvalidAddress
from pipeline.hotpath.extract import (
    MAX_FORWARDED_HOPS,
    MAX_IPS_PER_EVENT,
    extract,
    forwarded_client,
    networks,
    normalise_with_port,
    strip_port,
)


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("203.0.113.7:51234", "203.0.113.7"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("::ffff:1.2.3.4:8080", "::ffff:1.2.3.4"),
        ("2001:db8::1:443", "2001:db8::1:443"),  # unbracketed IPv6 has no port: it is an address
        ("1.2.3.4", "1.2.3.4"),
        ("1.2.3.4:99999", "1.2.3.4:99999"),  # not a port: left for normalising to refuse
        ("[2001:db8::1]:x", "[2001:db8::1]:x"),
        ("1.2.3.4:", "1.2.3.4:"),
    ],
)
def test_strip_port_drops_a_port_and_nothing_else(text: str, address: str) -> None:
    """`ip:port` and `[v6]:port` lose the port; every other text is left for the normaliser to judge."""
    assert strip_port(text) == address


def found(event: dict[str, Any], *specs: str, trusted: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
    items, _ = extract(event, parse_fields(specs), networks(trusted), normalise_with_port)
    return [(f.spec.name, f.element, f.ip, f.error) for f in items]


def test_nested_paths_find_each_ip_in_field_order() -> None:
    """`source.ip,destination.ip` on an ECS event gives both, normalised, in the configured order."""
    event = {
        "destination": {"ip": "::ffff:192.168.1.10", "port": 22},
        "source": {"ip": "198.51.100.23:51234"},
    }
    assert found(event, "source.ip", "destination.ip") == [
        ("source.ip", None, "198.51.100.23", None),
        ("destination.ip", None, "192.168.1.10", None),
    ]


def test_an_array_field_gives_one_ip_per_element_and_fails_bad_elements_alone() -> None:
    """ECS `related.ip`: each element is an IP of its own; a bad element fails alone, with its index."""
    event = {"related": {"ip": ["8.8.8.8", "bogus", 7, "[2001:db8::1]:53"]}}
    assert found(event, "related.ip") == [
        ("related.ip", 0, "8.8.8.8", None),
        ("related.ip", 1, None, "invalid ip: not an IP address"),
        ("related.ip", 2, None, "field 'related.ip' must hold strings, not int"),
        ("related.ip", 3, "2001:db8::1", None),
    ]


def test_absent_and_null_fields_are_neither_ips_nor_failures() -> None:
    """A missing path, a null, or a path through a non-object is absent; a wrong type fails the field."""
    event = {"source": {"ip": None}, "dest_ip": 42, "client": "x"}
    assert found(event, "source.ip", "destination.ip", "client.ip", "dest_ip") == [
        ("dest_ip", None, None, "field 'dest_ip' must be a string, not int")
    ]


@pytest.mark.parametrize(
    ("chain", "trusted", "client"),
    [
        ("203.0.113.9", (), "203.0.113.9"),
        ("6.6.6.6, 203.0.113.9", (), "203.0.113.9"),  # no trusted proxies: the hop our proxy saw
        ("6.6.6.6, 203.0.113.9, 10.0.0.5", ("10.0.0.0/8",), "203.0.113.9"),
        ("6.6.6.6, 203.0.113.9, 10.0.0.5, 10.1.2.3:8080", ("10.0.0.0/8",), "203.0.113.9"),
        (["6.6.6.6", "203.0.113.9, 10.0.0.5"], ("10.0.0.0/8",), "203.0.113.9"),  # one header per line
        ("10.0.0.9, 10.0.0.5", ("10.0.0.0/8",), "10.0.0.9"),  # all trusted: the left-most hop
        ("garbage, 203.0.113.9, 10.0.0.5", ("10.0.0.0/8",), "203.0.113.9"),  # left of the client: unread
    ],
)
def test_forwarded_client_is_the_right_most_hop_not_a_trusted_proxy(
    chain: Any, trusted: tuple[str, ...], client: str
) -> None:
    """Hops left of the first untrusted one came from the request itself (forgeable): never chosen."""
    assert forwarded_client(chain, networks(trusted), normalise_with_port) == client


def test_a_forged_left_most_hop_is_never_the_client() -> None:
    """A client that sends `X-Forwarded-For: 8.8.8.8` gets its own address enriched, not the forged one."""
    chain = "8.8.8.8, 198.51.100.77"  # 8.8.8.8 forged by the client; 198.51.100.77 added by our proxy
    assert forwarded_client(chain, networks(["10.0.0.0/8"]), normalise_with_port) == "198.51.100.77"


@pytest.mark.parametrize("chain", ["", " , ", "unknown, 10.0.0.5", ["a", 3], 7])
def test_a_chain_without_a_readable_client_fails(chain: Any) -> None:
    """An empty chain, a garbage hop where the client should be, or a wrong type: InvalidAddress."""
    with pytest.raises(InvalidAddress):
        forwarded_client(chain, networks(["10.0.0.0/8"]), normalise_with_port)


def test_an_xff_field_fails_alone_and_reads_only_a_bounded_tail() -> None:
    """A chain of 10,000 trusted hops is read up to MAX_FORWARDED_HOPS from the right, nothing more."""
    long = ", ".join(["198.51.100.1"] + ["10.0.0.1"] * 10_000)
    event = {"xff": long, "bad": "nope, also-nope"}
    result = found(event, "xff:xff", "xff:bad", trusted=("10.0.0.0/8",))
    assert result == [("xff", None, "10.0.0.1", None), ("bad", None, None, "invalid ip: not an IP address")]
    assert MAX_FORWARDED_HOPS < 10_000


def test_an_array_built_to_hurt_is_cut_at_the_cap_and_the_rest_counted() -> None:
    """100,000 IPs in one array: MAX_IPS_PER_EVENT are read, the rest are counted as skipped."""
    event = {"related": {"ip": ["8.8.8.8"] * 100_000}, "source": {"ip": "1.1.1.1"}}
    items, skipped = extract(event, parse_fields(("source.ip", "related.ip")), (), normalise_with_port)
    assert len(items) == MAX_IPS_PER_EVENT and skipped == 100_000 - (MAX_IPS_PER_EVENT - 1)
    assert items[0].ip == "1.1.1.1"


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("source.ip", FieldSpec("source.ip", ("source", "ip"))),
        (" src_ip ", FieldSpec("src_ip", ("src_ip",))),
        (
            "xff:http.request.headers.x-forwarded-for",
            FieldSpec(
                "http.request.headers.x-forwarded-for",
                ("http", "request", "headers", "x-forwarded-for"),
                True,
            ),
        ),
    ],
)
def test_field_specs_parse_into_paths(spec: str, parsed: FieldSpec) -> None:
    """A spec is a dot path, `xff:` marking a forwarded chain."""
    assert parse_field(spec) == parsed


@pytest.mark.parametrize("spec", ["", "a..b", ".a", "a.", "xff:", "a b", "a[0]", "a." * 20 + "b"])
def test_bad_field_specs_are_refused(spec: str) -> None:
    """Empty segments, spaces, brackets and over-deep paths are refused with a ValueError."""
    with pytest.raises(ValueError):
        parse_field(spec)
