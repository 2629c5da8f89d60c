"""The package's layering, read from the import statements: wings that stay apart, no circle, no climb,
decisions that stay pure, a runtime that never loads the dev tools.

Every import counts: at module level, inside functions and under TYPE_CHECKING, because each one is a
reason the importing module cannot be read, moved or tested without the other. The rules are a pure
function of the graph (`violations`), so a planted edge shows that each rule can fail.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"
VOCABULARY = {"models", "addresses", "messages", "stats", "errors"}  # the shared words, at the bottom
# Floors, bottom to top: a module may import its own floor or below, never above
FLOORS: dict[str, int] = {
    **dict.fromkeys(VOCABULARY, 0),
    "config": 0,
    "kafka": 1,
    "storage": 1,
    "providers": 1,
    "hotpath": 2,
    "cache": 2,
    "resolver": 2,
    "app": 3,
    "web": 4,
    "devtools": 5,
    "cli": 6,
    "__main__": 7,
}
SIDE_BY_SIDE = {"hotpath", "cache", "resolver"}  # they talk through topics only, never through imports
NOT_RUNTIME = {"cli", "devtools", "__main__"}  # the runtime is everything a worker runs besides its CLI
# Modules that decide things: no event loop, no Kafka, no HTTP, so they are unit-tested with tables of cases
PURE = [
    "addresses",
    "errors",
    "messages",
    "models",
    "cache.policy",
    "cli.present",
    "config.checks",
    "config.fields",
    "config.ipfields",
    "config.limits",
    "config.secret",
    "config.settings",
    "hotpath.extract",
    "hotpath.near",
    "hotpath.parsing",
    "hotpath.routing",
    "hotpath.shapes",
    "kafka.watchdog",
    "providers.ipapi_answers",
    "providers.mmdb_layouts",
    "providers.throttle",
    "providers.updates.builds",
    "providers.updates.schedule",
    "providers.updates.sources",
    "resolver.dedupe",
    "web.ownership",
]
IO_PACKAGES = {"faust", "mode", "aiokafka", "aiohttp", "asyncio"}

Graph = Mapping[str, frozenset[str]]


def _module_file(name: str) -> Path:
    path = PACKAGE.joinpath(*name.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _modules() -> list[str]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        parts = ("pipeline", *path.relative_to(PACKAGE).with_suffix("").parts)
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(found)


@cache
def _imports(name: str) -> frozenset[str]:
    """Every module `name` imports anywhere in its body, as absolute names (package modules resolved to the
    deepest module that exists: `from pipeline.kafka import topics` is an edge to pipeline.kafka.topics)."""
    tree = ast.parse(_module_file(name).read_text())
    package = name if _module_file(name).name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base) + (f".{node.module}" if node.module else "")
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return frozenset(m for m in found if not m.startswith("pipeline") or _module_file(m).exists())


@cache
def package_graph() -> Graph:
    """Module -> the package's modules it imports (package roots such as `pipeline` itself left out)."""
    modules = set(_modules())
    return {
        m: frozenset(i for i in _imports(m) if i in modules and i != m and i.count(".") >= 1) for m in modules
    }


def wing(module: str) -> str:
    """`pipeline.cache.agent` -> `cache`; a top-level module is its own wing (`pipeline.app` -> `app`)."""
    return module.split(".")[1] if module.count(".") >= 1 else ""


def _cycles(graph: Graph) -> Iterator[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    yield sorted(component)


def violations(graph: Graph) -> list[str]:
    """Every edge that breaks a wing rule, and every circle, one line each."""
    found = []
    for module, imported in sorted(graph.items()):
        here = wing(module)
        for other in sorted(imported):
            there = wing(other)
            if here == there:
                continue
            if here not in FLOORS or there not in FLOORS:
                found.append(f"{module} -> {other}: a wing without a floor (add it to FLOORS)")
            elif here in SIDE_BY_SIDE and there in SIDE_BY_SIDE:
                found.append(f"{module} -> {other}: {here}/ and {there}/ talk through topics only")
            elif FLOORS[there] > FLOORS[here]:
                found.append(f"{module} -> {other}: climbs from floor {FLOORS[here]} to {FLOORS[there]}")
            if here not in NOT_RUNTIME and there == "devtools":
                found.append(f"{module} -> {other}: the runtime imports the dev tools")
    found += [f"circle: {' -> '.join(component)}" for component in _cycles(graph)]
    return found


def _with(graph: Graph, module: str, imported: str) -> Graph:
    return {**graph, module: graph[module] | {imported}}


def test_the_package_breaks_no_wing_rule() -> None:
    """No import climbs a floor, joins the side-by-side wings, loads the dev tools at run time or closes a
    circle."""
    assert violations(package_graph()) == []


@pytest.mark.parametrize(
    ("module", "imported", "rule"),
    [
        ("pipeline.hotpath.service", "pipeline.cache.agent", "talk through topics only"),
        ("pipeline.resolver.service", "pipeline.hotpath.routing", "talk through topics only"),
        ("pipeline.app", "pipeline.web.server", "climbs"),
        ("pipeline.app", "pipeline.cli.worker", "climbs"),
        ("pipeline.kafka.topics", "pipeline.resolver.dedupe", "climbs"),
        ("pipeline.providers.ipapi", "pipeline.cache.policy", "climbs"),
        ("pipeline.config.settings", "pipeline.kafka.config", "climbs"),
        ("pipeline.cache.timers", "pipeline.devtools.broker", "the runtime imports the dev tools"),
        ("pipeline.config.limits", "pipeline.config.settings", "circle"),
        ("pipeline.cli.cluster", "pipeline.cli.ops", "circle"),
    ],
)
def test_a_planted_import_is_caught(module: str, imported: str, rule: str) -> None:
    """Each rule fails when one import breaking it is added to the real graph."""
    graph = package_graph()
    assert imported not in graph[module], "plant an edge that is not there"
    assert any(rule in line for line in violations(_with(graph, module, imported)))


def test_every_wing_has_a_floor() -> None:
    """A new folder or top-level module must be placed on a floor before it can import anything."""
    assert {wing(m) for m in package_graph()} - {""} <= set(FLOORS)


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


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_io(module: str) -> None:
    """A decision module reaches no event loop, Kafka or HTTP library, directly or through the package."""
    roots = {m.split(".")[0] for m in _closure(f"pipeline.{module}")}
    assert not roots & IO_PACKAGES, f"pipeline.{module} reaches {sorted(roots & IO_PACKAGES)}"


@pytest.mark.parametrize("module", [m for m in _modules() if wing(m) not in NOT_RUNTIME])
def test_runtime_never_imports_devtools(module: str) -> None:
    """No runtime module pulls in the dev tools (broker launcher, fake API, benchmarks), even transitively."""
    reached = {m for m in _closure(module) if m.startswith("pipeline.devtools")}
    assert not reached, f"{module} imports {sorted(reached)}"


def test_the_package_map_names_every_wing() -> None:
    """The reader's map in pipeline/__init__.py names each wing folder, and names none that is gone."""
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text())) or ""
    named = set(re.findall(r"^\s*([a-z_]+)/", doc, re.MULTILINE))
    folders = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert named == folders
