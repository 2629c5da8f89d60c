"""A newcomer's first command prints no ERROR line (issue 19, item 13f): `geo-pipeline demo` on a broker
it starts fresh, where the group coordinator is still being elected when the worker first asks for it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

DEMO_TIMEOUT = 400  # seconds: a broker start, the demo itself (about a minute), two busy cores
LEVEL = re.compile(r"\] ERROR |\"level\": \"ERROR\"|^ERROR\b|\bCRITICAL\b")  # the text and JSON log formats


def test_the_demo_on_a_fresh_broker_prints_no_error_line(tmp_path: os.PathLike[str]) -> None:
    """`geo-pipeline demo` with no KAFKA_BOOTSTRAP_SERVERS starts its own broker, converges and exits 0,
    and none of the lines it prints (standard output and error) is logged at ERROR or above."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEO_", "KAFKA_"))}
    env["GEO_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "demo", "--events", "200"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
    )
    lines = (done.stdout + done.stderr).splitlines()
    errors = [line for line in lines if LEVEL.search(line)]
    assert done.returncode == 0, "\n".join(lines[-40:])
    assert errors == [], "\n".join(errors)
