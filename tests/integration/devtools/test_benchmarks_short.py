"""The timer, budget and scale benchmarks in short (CI) modes: they run end to end and print a summary."""

from __future__ import annotations

import re

import pytest

from pipeline.config.settings import Settings
from pipeline.devtools.bench.budget import run_budget_bench
from pipeline.devtools.bench.scale import run_scale_bench
from pipeline.devtools.bench.timer import run_tick_bench

pytestmark = pytest.mark.integration


async def test_tick_bench_reports_tick_and_full_scan(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 20,000-entry tick benchmark returns 0 and prints tick, full scan and their ratio."""
    environ = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    code = await run_tick_bench(
        Settings.from_env(environ), environ, entries=20_000, unresolved=200, not_due=5_000
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "ratio full scan / tick =" in out
    assert "NULL country=5,200" in out  # due now and due later: a tick reads only the 200 due


async def test_budget_bench_reports_share_without_429(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 600-IP budget benchmark with a 3 s window returns 0, prints the share and reports zero 429s."""
    environ = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    code = await run_budget_bench(Settings.from_env(environ), environ, ips=600, window=3.0)
    out = capsys.readouterr().out
    assert code == 0
    summary = re.search(r"^summary: achieved .* allowed = .*429s=(\d+)", out, re.MULTILINE)
    assert summary is not None, out
    assert summary.group(1) == "0"


@pytest.mark.timeout(600)
async def test_scale_bench_reports_both_passes_and_the_share_with_the_tables_entry(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 3,000-IP scale benchmark (burst, cold restart, Zipf pass) returns 0, and after the restart every
    Zipf event of a known IP carries the table's entry."""
    environ = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    code = await run_scale_bench(Settings.from_env(environ), environ, population=3_000, events=3_000)
    out = capsys.readouterr().out
    assert code == 0, out
    share = re.search(r"Zipf events carrying the table's entry: ([\d,]+) of ([\d,]+)", out)
    assert share is not None, out
    assert share.group(1) == share.group(2)
    assert re.search(r"catch-up after the restart: [\d.]+ s \(", out), out
