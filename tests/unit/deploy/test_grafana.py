"""The Grafana dashboard in deploy/grafana: it has the panels the issue lists, and every panel's query is
valid PromQL (promtool checks them as recording rules) reading only metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.support.promql import (
    DASHBOARD,
    PROMETHEUS_NAMES,
    exposed_names,
    metric_names,
    promtool,
    recorded_names,
)

# Grafana's variables, replaced by what they stand for so that promtool can parse the query
VARIABLES = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "6h", "$job": "geo-pipeline"}
PANELS = (  # issue 22, item 3
    "Throughput: in, enriched, dead-lettered",
    "First sights",
    "Near-cache hit ratio",
    "Consumer lag per input partition",
    "ip-api budget used",
    "ip-api breaker",
    "Table entries by status",
    "Offline data age",
    "Events by country",
)


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, query with the variables substituted) for every target of every panel."""
    found = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in VARIABLES.items():
                expr = expr.replace(name, value)
            found.append((panel["title"], expr))
    return found


def check_as_rules(found: list[tuple[str, str]], tmp_path: Path) -> Any:
    """`promtool check rules` on the queries written as recording rules."""
    rules = [{"record": f"dashboard:panel_{i}", "expr": expr} for i, (_, expr) in enumerate(found)]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return promtool("check", "rules", path)


def test_the_dashboard_has_the_panels_the_issue_lists() -> None:
    """Throughput, first sights, hit ratio, lag per partition, budget, breaker, entries by status, offline
    data age and the geo panel are all there, each with at least one query."""
    dash = dashboard()
    titles = {p["title"]: p for p in dash["panels"] if p["type"] != "row"}
    assert set(PANELS) <= set(titles)
    assert all(p["targets"] for p in titles.values())
    assert titles["Events by country"]["type"] == "geomap"
    assert "geo_events_by_country_total" in titles["Events by country"]["targets"][0]["expr"]


def test_no_variable_is_left_unsubstituted() -> None:
    """Every Grafana variable a query uses is one this test knows how to replace."""
    assert all("$" not in expr for _, expr in queries(dashboard()))


def test_every_panel_query_reads_only_metrics_that_exist() -> None:
    """Each query's metric names are exposed by a worker, recorded by deploy/prometheus, or Prometheus'."""
    known = exposed_names() | recorded_names() | PROMETHEUS_NAMES
    unknown = {f"{title}: {expr}": metric_names(expr) - known for title, expr in queries(dashboard())}
    assert {k: v for k, v in unknown.items() if v} == {}


def test_promtool_accepts_every_panel_query(tmp_path: Path) -> None:
    """Every query, as a recording rule, passes `promtool check rules`."""
    found = queries(dashboard())
    assert len(found) >= 15
    result = check_as_rules(found, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_panel_query_is_refused(tmp_path: Path) -> None:
    """The check is not vacuous: an unbalanced parenthesis in one panel's query fails it."""
    found = queries(dashboard())
    title, expr = found[0]
    found[0] = (title, re.sub(r"\)$", "", expr) if expr.endswith(")") else f"sum({expr}")
    assert check_as_rules(found, tmp_path).returncode != 0
