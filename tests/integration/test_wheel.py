"""The package as users get it: a wheel built from the sources, installed with its dependencies into a
fresh venv, runs `geo-pipeline demo` outside the checkout (no tests/, nothing from the source tree)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pipeline.devtools.processes import PACKAGE_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WINGS = {"config", "kafka", "providers", "hotpath", "cache", "resolver", "web", "cli", "devtools"}
# Imports every module of the installed package and prints its name; left out: the Quix Streams job, which
# imports quixstreams (only its own venv has it); the modules that write .mmdb files import mmdb-writer
# (the test extra) only when they write one
IMPORT_EVERY_MODULE = """
import importlib, pkgutil, pipeline
needs_extras = {"pipeline.devtools.bench.quix_job"}
for module in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
    if module.name not in needs_extras and module.name != "pipeline.__main__":
        importlib.import_module(module.name)
        print(module.name)
"""


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (
        f"{args} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


@pytest.mark.timeout(1200)  # pip fetches the dependencies (cached by pip after the first run)
def test_wheel_in_a_fresh_venv_runs_the_demo(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Every module of the package is in the wheel and nothing else; installed, every wing imports and
    `geo-pipeline demo --events 50` accounts for every event against the session broker."""
    src = tmp_path / "src"  # a copy: building in the checkout would leave build/ and *.egg-info there
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PACKAGE_ROOT / name, src / name)
    shutil.copytree(PACKAGE_ROOT / "pipeline", src / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(
        python,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--wheel-dir",
        tmp_path / "dist",
        src,
        cwd=tmp_path,
    )
    [wheel] = (tmp_path / "dist").glob("geo_pipeline-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(src).as_posix() for p in (src / "pipeline").rglob("*.py")}
    assert modules <= names, f"missing from the wheel: {sorted(modules - names)}"
    assert "pipeline/devtools/fake_ipapi.py" in names
    assert not [n for n in names if n.startswith("tests/")]

    run(python, "-m", "pip", "install", "--quiet", wheel, cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap
    where = run(python, "-c", "import pipeline; print(pipeline.__file__)", cwd=tmp_path, env=env)
    assert str(venv) in where  # the installed package, not the checkout
    imported = run(python, "-c", IMPORT_EVERY_MODULE, cwd=tmp_path, env=env)
    assert {line.split(".")[1] for line in imported.split()} >= WINGS
    out = run(venv / "bin" / "geo-pipeline", "demo", "--events", "50", cwd=tmp_path, env=env, timeout=400)
    assert "(in = enriched + dlq: True)" in out
