"""The package's layering, read from the import statements: decisions stay pure, the runtime stays lean."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"
# Modules that decide things: no event loop, no Kafka, no HTTP, so they are unit-tested with tables of cases
PURE = [
    "addresses",
    "answers",
    "asked",
    "errors",
    "messages",
    "mmdb_layouts",
    "models",
    "ownership",
    "policy",
    "present",
    "routing",
    "secret",
    "settings",
    "settings_checks",
    "throttle",
    "watchdog",
]
IO_PACKAGES = {"faust", "mode", "aiokafka", "aiohttp", "asyncio"}


def _module_file(name: str) -> Path:
    path = PACKAGE.joinpath(*name.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


@cache
def _imports(name: str) -> frozenset[str]:
    """Every module `name` imports anywhere in its body (also inside functions), as absolute names."""
    tree = ast.parse(_module_file(name).read_text())
    package = name if _module_file(name).name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                parent = ".".join(base)
                module = f"{parent}.{node.module}" if node.module else parent
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in node.names)
            elif node.module:
                found.add(node.module)
    return frozenset(m for m in found if not m.startswith("pipeline.") or _module_file(m).exists())


def _closure(name: str) -> set[str]:
    """`name` and everything it imports, following the package's own modules transitively."""
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        if current.startswith("pipeline"):
            todo.extend(_imports(current))
    return seen


def _runtime_modules() -> list[str]:
    return sorted(
        f"pipeline.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem not in {"__init__", "__main__", "cli"}
    )


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_io(module: str) -> None:
    """A decision module reaches no event loop, Kafka or HTTP library, directly or through the package."""
    roots = {m.split(".")[0] for m in _closure(f"pipeline.{module}")}
    forbidden = IO_PACKAGES
    assert not roots & forbidden, f"pipeline.{module} reaches {sorted(roots & forbidden)}"


@pytest.mark.parametrize("module", _runtime_modules())
def test_runtime_never_imports_devtools(module: str) -> None:
    """No runtime module pulls in the dev tools (broker launcher, fake API, benchmarks)."""
    reached = {m for m in _closure(module) if m.startswith("pipeline.devtools")}
    assert not reached, f"{module} imports {sorted(reached)}"
