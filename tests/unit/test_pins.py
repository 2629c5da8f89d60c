"""The dependency pins: pyproject.toml bounds the hooked libraries from above, constraints.txt pins one
tested set inside those ranges, and the image and CI install with it."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
HOOKED = ("faust-streaming", "aiokafka", "mode-streaming")  # pipeline/kafka/hooks.py checks their internals


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = (Requirement(text) for text in project["dependencies"])
    return {canonicalize_name(r.name): r for r in found}


def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            name, _, pinned = text.partition("==")
            assert pinned, f"constraints.txt pins exact versions only: {line!r}"
            found[canonicalize_name(name)] = pinned
    return found


def test_the_hooked_libraries_have_upper_bounds() -> None:
    """faust-streaming, aiokafka and mode-streaming are bounded above: a new minor release is not taken
    before its internals are checked."""
    wanted = requirements()
    for name in HOOKED:
        assert any(spec.operator in ("<", "<=", "==", "~=") for spec in wanted[name].specifier), name


def test_the_constraints_pin_every_dependency_inside_its_range() -> None:
    """constraints.txt pins each runtime dependency of pyproject.toml at a version its range allows."""
    pinned = pins()
    for name, requirement in requirements().items():
        assert name in pinned, f"{name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (name, pinned[name])


def test_the_image_and_ci_install_with_the_constraints() -> None:
    """The Dockerfile copies constraints.txt and installs with it; .ci/run too."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "constraints.txt" in dockerfile.split("RUN pip install", 1)[0]
    assert "pip install --no-cache-dir -c constraints.txt ." in dockerfile
    assert "-c constraints.txt" in (ROOT / ".ci" / "run").read_text()
