"""mmdb benchmark: lookups/s of the MMDB source (a City and an ASN file) beside iptocc, same IPs, same run.

Why iptocc as the baseline: it is the offline lookup the hot path has today, so the ratio says what moving
to MaxMind-format data costs per new IP. The files are written here, in GeoLite2's record shapes (names
in eight locales, continent, registered country, location, subdivisions), because a pure-Python lookup
costs in proportion to the record it decodes. Their networks tile all of 1.0.0.0-223.255.255.255 (but
10/8 and 127/8) and 2a00::/12 with random prefix lengths, so every benchmark address is answered, as a
real GeoLite2 file answers nearly every global address. The rounds alternate (mmdb, iptocc, mmdb, ...)
and the median is reported, because a shared machine drifts within a run.

For the choice of reading mode, the same files are also timed through maxminddb directly: its
pure-Python reader over bytes in memory (what MmdbSource uses) and its C extension over a map.
Needs `mmdb-writer` (the `test` extra) to write the files.
"""

from __future__ import annotations

import ipaddress
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import maxminddb

from pipeline.devtools.mmdb_files import (
    GEOLITE2_ASN,
    GEOLITE2_CITY,
    GEOLITE2_LANGUAGES,
    Place,
    asn_record,
    geolite2_city_record,
    write_mmdb,
)
from pipeline.devtools.workloads import public_ips
from pipeline.providers.base import COUNTRY_NAMES
from pipeline.providers.mmdb import C_READER, MmdbSource

IPV4_BLOCKS = [(first << 24, 8) for first in range(1, 224) if first not in (10, 127)]
IPV6_BLOCK = (0x2A00 << 112, 12)  # RIPE space: where the workloads draw IPv6 addresses (2a00::-2a09::)
IPV6_SHARE = 8  # one network in eight is IPv6
MAX_PREFIX = {4: 24, 6: 48}  # no network smaller than the databases usually hold
CONTINENTS = (("AF", "Africa"), ("AS", "Asia"), ("EU", "Europe"), ("NA", "North America"), ("OC", "Oceania"))
PLACES = 2_000  # distinct city records (GeoLite2 shares one record among many networks too)
AS_ORGS = 5_000  # distinct AS records


def tiling(blocks: Sequence[tuple[int, int]], count: int, version: int, rng: random.Random) -> list[str]:
    """`count` networks (CIDR text) that together cover `blocks` exactly: a random network is halved until
    there are enough, which yields the mix of large and small prefixes real databases have."""
    leaves = list(blocks)
    bits = 32 if version == 4 else 128
    while len(leaves) < count:
        i = rng.randrange(len(leaves))
        value, prefix = leaves[i]
        if prefix >= MAX_PREFIX[version]:
            continue
        leaves[i] = (value, prefix + 1)
        leaves.append((value | 1 << (bits - prefix - 1), prefix + 1))
    return [str(ipaddress.ip_network(leaf)) for leaf in leaves]


def build_databases(directory: Path, networks: int, seed: int) -> tuple[Path, Path]:
    """A GeoLite2-City-shaped and a GeoLite2-ASN-shaped file of `networks` networks each."""
    rng = random.Random(seed)
    n6 = max(1, networks // IPV6_SHARE)
    cidrs = tiling(IPV4_BLOCKS, networks - n6, 4, rng) + tiling([IPV6_BLOCK], n6, 6, rng)
    codes = sorted(COUNTRY_NAMES)
    places = []
    for i in range(PLACES):
        code = codes[i % len(codes)]
        continent = CONTINENTS[i % len(CONTINENTS)]
        lat, lon = round(rng.uniform(-60, 70), 4), round(rng.uniform(-180, 180), 4)
        place = Place(
            code, COUNTRY_NAMES[code], *continent, f"Region {i % 300}", f"City {i}", lat, lon, i + 1
        )
        places.append(geolite2_city_record(place))
    orgs = [asn_record(1000 + i, f"AS-ORG-{i} Networks Ltd") for i in range(AS_ORGS)]
    city, asn = directory / "bench-city.mmdb", directory / "bench-asn.mmdb"
    for path, kind, records, languages in (
        (city, GEOLITE2_CITY, places, GEOLITE2_LANGUAGES),
        (asn, GEOLITE2_ASN, orgs, ("en",)),
    ):
        print(f"  writing {path.name} ({kind}, {len(cidrs):,} networks) with mmdb-writer...", flush=True)
        started = time.perf_counter()
        rows = [(cidr, records[rng.randrange(len(records))]) for cidr in cidrs]
        write_mmdb(path, kind, rows, build_epoch=int(time.time()), languages=languages)
        size = path.stat().st_size / 2**20
        seconds = time.perf_counter() - started
        print(f"  wrote {path.name}: {size:.1f} MiB in {seconds:.1f}s", flush=True)
    return city, asn


def timed(lookup: Callable[[str], object], ips: Sequence[str]) -> tuple[float, int]:
    """Lookups per second over `ips`, and how many answered (truthy)."""
    started = time.perf_counter()
    answered = sum(1 for ip in ips if lookup(ip))
    return len(ips) / (time.perf_counter() - started), answered


def run_mmdb_bench(*, networks: int = 100_000, ips: int = 100_000, seed: int = 5, runs: int = 3) -> int:
    """Write City and ASN files of `networks` networks each, time `runs` rounds of `ips` lookups, print
    the rates and their ratio; returns 0."""
    import iptocc  # the baseline, also what the hot path uses today

    print(f"bench-mmdb: {networks:,} networks per file (City + ASN), {ips:,} global IPs, {runs} rounds")
    with tempfile.TemporaryDirectory(prefix="geo-bench-mmdb-") as tmp:
        city, asn = build_databases(Path(tmp), networks, seed)
        addresses = public_ips(ips, seed, offline_known=False, ipv6_every=IPV6_SHARE)
        print(
            f"  {len(addresses):,} addresses, {sum(':' in ip for ip in addresses):,} of them IPv6", flush=True
        )
        source = MmdbSource([city, asn])
        reader = "C extension over a sealed memfd" if C_READER else "pure Python over bytes"
        print(f"  opened {source.version} ({reader})", flush=True)
        mmdb, base = [], []
        for run in range(1, runs + 1):
            mmdb.append(timed(source.lookup, addresses))
            base.append(timed(iptocc.country_code, addresses))
            print(
                f"  round {run}: mmdb {mmdb[-1][0]:,.0f}/s (answered {mmdb[-1][1]:,}), "
                f"iptocc {base[-1][0]:,.0f}/s (answered {base[-1][1]:,})",
                flush=True,
            )
        _raw_readers(city, asn, addresses)
        mmdb_rate = statistics.median(rate for rate, _ in mmdb)
        base_rate = statistics.median(rate for rate, _ in base)
        print(
            f"summary: mmdb (City+ASN) {mmdb_rate:,.0f} lookups/s (answered {mmdb[-1][1]:,}/"
            f"{len(addresses):,}) | iptocc country_code {base_rate:,.0f} lookups/s | "
            f"ratio mmdb / iptocc = {mmdb_rate / base_rate:.3f}"
        )
    return 0


def _raw_readers(city: Path, asn: Path, addresses: Sequence[str]) -> None:
    """One line per file: maxminddb's get() alone, pure Python over bytes vs the C extension over a map."""
    for path in (city, asn):
        rates = []
        for mode in (maxminddb.MODE_MEMORY, maxminddb.MODE_MMAP_EXT):
            try:
                reader = maxminddb.open_database(path, mode)
            except ValueError:  # no C extension in this install
                rates.append("n/a")
                continue
            with reader:
                rates.append(f"{timed(reader.get, addresses)[0]:,.0f}/s")
        print(
            f"  maxminddb get() on {path.name}: pure Python in memory {rates[0]}, C extension mmap {rates[1]}"
        )
