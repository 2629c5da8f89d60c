"""The mmdb benchmark in its short mode, and the network tiling its databases are built from."""

from __future__ import annotations

import ipaddress
import itertools
import random
import re

import pytest

from pipeline.devtools.bench.mmdb import IPV4_BLOCKS, run_mmdb_bench, tiling


def test_mmdb_bench_short_mode_prints_both_rates_and_their_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    """A 2,000-network, 2,000-IP run returns 0, answers every address from the mmdb files and prints the
    mmdb and iptocc rates with their ratio."""
    assert run_mmdb_bench(networks=2_000, ips=2_000, runs=1) == 0
    out = capsys.readouterr().out
    summary = re.search(
        r"^summary: mmdb \(City\+ASN\) ([\d,]+) lookups/s \(answered 2,000/2,000\) \| "
        r"iptocc country_code ([\d,]+) lookups/s \| ratio mmdb / iptocc = ([\d.]+)$",
        out,
        re.MULTILINE,
    )
    assert summary is not None, out
    assert int(summary.group(1).replace(",", "")) > 0 and int(summary.group(2).replace(",", "")) > 0
    assert "maxminddb get() on bench-city.mmdb" in out


@pytest.mark.parametrize(
    ("blocks", "count", "version"), [(IPV4_BLOCKS, 5_000, 4), ([(0x2A00 << 112, 12)], 500, 6)]
)
def test_tiling_covers_its_blocks_exactly(blocks: list[tuple[int, int]], count: int, version: int) -> None:
    """The benchmark's networks cover their blocks with no gap and no overlap, so every address is known."""

    def spans(cidrs: list[str] | list[tuple[int, int]]) -> list[tuple[int, int]]:
        nets = [ipaddress.ip_network(c) for c in cidrs]
        return sorted((int(n.network_address), int(n.broadcast_address)) for n in nets)

    networks, outer = spans(tiling(blocks, count, version, random.Random(1))), spans(blocks)
    assert len(networks) == count
    assert sum(last - first + 1 for first, last in networks) == sum(last - first + 1 for first, last in outer)
    assert all(a_last < b_first for (_, a_last), (b_first, _) in itertools.pairwise(networks))
    assert all(any(o[0] <= n[0] and n[1] <= o[1] for o in outer) for n in networks)
