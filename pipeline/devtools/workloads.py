"""The one source of workload addresses and events for the demo, the benchmarks and the tests.

Why one: a benchmark and the test that guards it must see the same kind of traffic, and a generator that
silently drifts (a block the offline data does not know, a seed that yields duplicates) changes every figure
built on it. Everything here is deterministic for a seed.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaProducer

from pipeline.addresses import AddressKind, classify

# First octets of IPv4 blocks the regional registries allocated long ago: the offline data (iptocc) knows
# nearly every address in them, so a workload drawn from here resolves everywhere without retries
ALLOCATED_FIRST_OCTETS = (8, 23, 31, 45, 62, 81, 91, 104, 151, 185, 193, 212)
# Inputs every pipeline must send to the dead-letter topic, one of each kind of mistake
BAD_INPUTS = (
    b"not-an-ip",
    b"{broken",
    b'{"host": "x"}',
    b'{"ip": 42}',
    b"010.1.1.1",
    b"1.2.3.0/24",
    b"\xff\xfe",
    b"[]",
)
NON_GLOBAL_SAMPLES = ("127.0.0.1", "100.64.1.1", "fe80::1")  # loopback, CGNAT, link-local


def public_ips(n: int, seed: int = 11, *, offline_known: bool = True, ipv6_every: int = 0) -> list[str]:
    """`n` distinct global addresses, sorted; with `offline_known` only ones the offline data has a country
    for; with `ipv6_every` k, about one in k is an IPv6 address from 2a00::/12 (RIPE space)."""
    rng = random.Random(seed)
    found: set[str] = set()
    lookup = _offline_lookup() if offline_known else None
    while len(found) < n:
        if ipv6_every and rng.randrange(ipv6_every) == 0:
            ip = f"2a0{rng.randint(0, 9)}:{rng.randint(1, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}"
        else:
            ip = (
                f"{rng.choice(ALLOCATED_FIRST_OCTETS)}.{rng.randint(0, 255)}."
                f"{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            )
        if classify(ip) is AddressKind.GLOBAL and (lookup is None or lookup(ip)):
            found.add(ip)
    return sorted(found)


def private_ips(n: int) -> list[str]:
    """`n` distinct RFC 1918 addresses (10.9.0.0/16)."""
    return [f"10.9.{i // 250}.{i % 250 + 1}" for i in range(n)]


def tagged_events(ips: Sequence[str], n: int, tag: str) -> list[bytes]:
    """`n` compact JSON events cycling through `ips`, each with `"bench": tag` and a sequence number, so a
    reader finds exactly the events of one run in the output by their bytes."""
    return [
        json.dumps(
            {"ip": ips[i % len(ips)], "bench": tag, "seq": i, "jail": "sshd"}, separators=(",", ":")
        ).encode()
        for i in range(n)
    ]


def ecs_events(ips: Sequence[str], n: int, tag: str) -> list[bytes]:
    """`n` compact ECS network events with two IP fields, `source.ip` cycling through `ips` and
    `destination.ip` through them in another order (the same population), tagged like `tagged_events`."""
    k = len(ips)
    return [
        json.dumps(
            {
                "@timestamp": "2026-12-01T08:14:03.512Z",
                "event": {"kind": "event", "category": ["network"], "action": "drop"},
                "source": {"ip": ips[i % k], "port": 40000 + i % 20000},
                "destination": {"ip": ips[(i * 7 + 3) % k], "port": 22},
                "bench": tag,
                "seq": i,
            },
            separators=(",", ":"),
        ).encode()
        for i in range(n)
    ]


def mixed_events(n_events: int, ips: Sequence[str], *, bad_every: int = 33) -> list[bytes]:
    """Events over `ips`: every `bad_every`-th one a bad input, every third a bare IP, the rest JSON."""
    events: list[bytes] = []
    for i in range(n_events):
        if bad_every and i % bad_every == 0:
            events.append(BAD_INPUTS[i % len(BAD_INPUTS)])
            continue
        ip = ips[i % len(ips)]
        events.append(
            ip.encode() if i % 3 == 0 else json.dumps({"ip": ip, "seq": i, "jail": "sshd"}).encode()
        )
    return events


def mixed_ips(n: int, seed: int = 1) -> list[str]:
    """`n` addresses as logs carry them: about 4% private, 14% IPv6, the rest public IPv4 (not all known to
    the offline data: unallocated space happens)."""
    rng = random.Random(seed)
    ips: list[str] = []
    for i in range(n):
        if i % 25 == 0:
            ips.append(f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}")
        elif i % 7 == 0:
            ips.append(f"2a0{rng.randint(0, 9)}:{rng.randint(1, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}")
        else:
            ips.append(
                f"{rng.choice(ALLOCATED_FIRST_OCTETS)}.{rng.randint(0, 255)}."
                f"{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            )
    return ips


def demo_events(n: int, seed: int = 7) -> list[bytes]:
    """Mostly public addresses (with repeats, like real ban logs), some private, some garbage; half of the
    valid ones are bare text, as a fail2ban action emits them."""
    rng = random.Random(seed)
    public = [
        f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        for _ in range(max(1, n // 4))
    ]
    out: list[bytes] = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.05:
            out.append(rng.choice([b"not-an-ip", b"{broken json", b'{"host":"x"}', b"010.1.1.1"]))
        elif roll < 0.12:
            out.append(
                json.dumps({"ip": f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}", "n": i}).encode()
            )
        elif roll < 0.5:
            out.append(rng.choice(public).encode())
        else:
            out.append(json.dumps({"ip": rng.choice(public), "jail": "sshd", "n": i}).encode())
    return out


async def publish(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes],
    *,
    mixed_keys: bool = False,
    partitions: int = 0,
    partition: int | None = None,
    seed: int = 2,
    label: str = "",
) -> float:
    """Publish `values` to `topic` and wait for every ack; returns the seconds it took.

    With `mixed_keys`, keys are None, random or per-event and, given `partitions`, each record goes to an
    explicit random partition, as producers with other partitioners would send them: the pipeline must not
    rely on the producer's key or partitioner. `partition` sends everything to that one partition (a
    defined input order). A `label` prints one line with the publish rate.
    """
    rng = random.Random(seed)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    started = time.perf_counter()
    try:
        await producer.start()  # inside: a start that fails or is cancelled still closes what it opened
        futures = []
        for i, value in enumerate(values):
            key = [None, b"k%d" % rng.randint(0, 99), str(i).encode()][i % 3] if mixed_keys else None
            target = rng.randrange(partitions) if mixed_keys and partitions else partition
            futures.append(await producer.send(topic, value, key=key, partition=target))
        for future in futures:
            await future
    finally:
        await asyncio.shield(producer.stop())  # a cancel here must not leave its connections open
    seconds = time.perf_counter() - started
    if label:
        rate = len(values) / seconds if seconds > 0 else float("inf")
        print(f"  published {len(values):,} {label} events in {seconds:.2f}s ({rate:,.0f}/s)", flush=True)
    return seconds


def _offline_lookup() -> Callable[[str], str | None]:
    import iptocc  # the offline data: only needed when the caller asks for addresses it knows

    lookup: Callable[[str], str | None] = iptocc.country_code
    return lookup
