"""The benchmark in its short (CI) mode: it runs end to end and reports a ratio, whatever the timing."""

from __future__ import annotations

import pytest

from pipeline.bench import run_bench
from pipeline.settings import Settings

pytestmark = pytest.mark.integration


async def test_bench_reports_ratio(kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A 2,000-event bench against the session broker returns 0 and prints the pipeline/baseline ratio."""
    environ = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    code = await run_bench(Settings.from_env(environ), environ, events=2000)
    out = capsys.readouterr().out
    assert code == 0
    assert "ratio pipeline/baseline:" in out
