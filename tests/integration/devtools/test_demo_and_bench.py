"""The hot-path benchmark and the demo in their short (CI) modes: they run end to end and report."""

from __future__ import annotations

import pytest

from pipeline.config.settings import Settings
from pipeline.devtools.bench.hits import run_bench
from pipeline.devtools.demo import run_demo

pytestmark = pytest.mark.integration


async def test_bench_reports_ratio(kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A 2,000-event bench against the session broker returns 0 and prints the pipeline/baseline ratio."""
    environ = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    code = await run_bench(Settings.from_env(environ), environ, events=2000)
    out = capsys.readouterr().out
    assert code == 0
    assert "ratio pipeline/baseline:" in out


async def test_demo_accounts_for_every_event(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's first command in small: the demo returns 0 with in = enriched + dlq and no 429."""
    environ = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    code = await run_demo(Settings.from_env(environ), environ, events=400)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "(in = enriched + dlq: True)" in out
    assert "429s=0 " in out and "banned=False" in out
