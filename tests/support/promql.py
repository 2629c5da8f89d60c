"""What the deploy tests share: promtool (found, or a clear skip locally and a failure in CI), the metric
names a PromQL expression uses, and the names a worker's /metrics really exposes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.config.settings import Settings
from pipeline.hotpath.replica import Replica
from pipeline.hotpath.routing import NearCache
from pipeline.providers.throttle import ResolveBudget
from pipeline.stats import Stats
from pipeline.web.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULE_FILES = (DEPLOY / "prometheus" / "recording.rules.yml", DEPLOY / "prometheus" / "alerts.rules.yml")
DASHBOARD = DEPLOY / "grafana" / "geo-pipeline.json"
PROMTOOL_TIMEOUT = 60.0  # seconds: checking or testing these files takes well under one
# PromQL words that look like names: binary operators, modifiers, the special numbers
KEYWORDS = frozenset(
    [
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "inf",
        "nan",
    ]
)
# what Prometheus adds itself: the scrape's health (`up`) and the alerts' own series
PROMETHEUS_NAMES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})


def tool(name: str) -> str:
    """The path of `name` (promtool, prometheus): a test fails without it when CI=true (.ci/run installs
    Debian's `prometheus` package), and is skipped locally with the way to get it."""
    found = shutil.which(name)
    if found:
        return found
    message = (
        f"{name} not on PATH: apt-get install prometheus (Debian's package ships promtool and the server)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """promtool with `args`; its output on stdout and stderr together."""
    return subprocess.run(
        [tool("promtool"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT,
        check=False,
    )


def metric_names(expr: str) -> set[str]:
    """Every metric name an expression reads: the identifiers left once strings, label matchers, ranges and
    the label lists of by/without/on/ignoring/group_* are removed, that are not function calls or keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+-?[0-9a-z]+", " ", text)
    found = set()
    for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()", text):
        if match.group(1) not in KEYWORDS:
            found.add(match.group(1))
    return found


def rules(path: Path) -> list[dict[str, Any]]:
    """Every rule of a Prometheus rule file."""
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    """The names the recording rules define."""
    return {rule["record"] for path in RULE_FILES for rule in rules(path) if "record" in rule}


def exposed_names() -> set[str]:
    """Every sample name a worker's /metrics exposes, scraped from a Metrics collector built over a stub
    worker in which every conditional family has something to show (labels, ip-api, an .mmdb file)."""
    budget = ResolveBudget(time.monotonic, limit=15, window=60)
    budget.on_sent()
    budget.on_response(200, 14, 60.0)  # X-Rl seen: geo_ipapi_server_remaining appears
    mmdb = SimpleNamespace(
        files=[SimpleNamespace(database_type="GeoLite2-City", path="c.mmdb", build_epoch=1)]
    )
    stats = Stats(
        dead_by_reason=Counter(invalid_ip=1),
        answers=Counter({("ipapi", "resolved"): 1}),
        countries=Counter(US=1),
    )
    geo: Any = SimpleNamespace(
        settings=Settings.from_env({}),
        stats=stats,
        store=SimpleNamespace(entries_by_status=lambda: Counter(resolved=1)),
        near=NearCache(1),
        hotpath=SimpleNamespace(replica=Replica(Path("unopened"))),  # never opened: no disk bytes
        resolver=SimpleNamespace(budget=budget, offline={"mmdb": mmdb}),
        watch=SimpleNamespace(stalled=frozenset()),
    )
    metrics = Metrics(geo)
    metrics.collector.lag = {("ip-events", 0): 1}
    metrics.collector.ready = True
    metrics.http_requests.labels("/ready", "200").inc()
    text = generate_latest(metrics.registry).decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
