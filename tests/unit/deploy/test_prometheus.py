"""The Prometheus rules in deploy/prometheus: they read only metrics a worker exposes, promtool accepts
them, their promtool unit tests pass, and a broken rule makes those tests fail."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.promql import (
    DEPLOY,
    PROMETHEUS_NAMES,
    RULE_FILES,
    exposed_names,
    metric_names,
    promtool,
    recorded_names,
    rules,
)

RULE_TESTS = DEPLOY / "prometheus" / "tests" / "rules.test.yml"
# the alerts the issue asks for (issue 22, item 1), one name each, plus unwritable records
ALERTS = {
    "GeoPartitionStalled",
    "GeoConsumerLagGrowing",
    "GeoBreakerOpen",
    "GeoIpApi429",
    "GeoBudgetExhausted",
    "GeoDeadLettersRising",
    "GeoNearCacheHitRatioCollapsed",
    "GeoOfflineDataOld",
    "GeoWorkerUnready",
    "GeoWorkerDown",
    "GeoDeadLetterUnwritable",
}


def unknown_names(exprs: list[str]) -> dict[str, set[str]]:
    """expr -> the metric names it reads that neither a worker, the recording rules nor Prometheus has."""
    known = exposed_names() | recorded_names() | PROMETHEUS_NAMES
    return {e: metric_names(e) - known for e in exprs if metric_names(e) - known}


def test_every_rule_reads_only_metrics_that_exist() -> None:
    """Every name in every rule's expression is exposed by a worker's /metrics, recorded by a rule, or
    Prometheus' own (up)."""
    exprs = [rule["expr"] for path in RULE_FILES for rule in rules(path)]
    assert len(exprs) >= 30
    assert unknown_names(exprs) == {}


def test_the_name_check_finds_a_misspelt_metric() -> None:
    """The check above is not vacuous: a plural typo and an unknown recorded name are both reported."""
    found = unknown_names(["sum(rate(geo_event_in_total[1m]))", "job:geo_nothing:rate1m > 0", "up == 0"])
    assert found == {
        "sum(rate(geo_event_in_total[1m]))": {"geo_event_in_total"},
        "job:geo_nothing:rate1m > 0": {"job:geo_nothing:rate1m"},
    }


def test_alerts_have_a_severity_a_summary_and_a_runbook() -> None:
    """The issue's alerts are all there; each has severity critical or warning and its runbook line."""
    alerts = [rule for rule in rules(RULE_FILES[1]) if "alert" in rule]
    assert {a["alert"] for a in alerts} == ALERTS
    for alert in alerts:
        assert alert["labels"]["severity"] in ("critical", "warning"), alert["alert"]
        assert len(alert["annotations"]["runbook"]) > 40 and alert["annotations"]["summary"], alert["alert"]


def test_promtool_check_rules_accepts_the_rule_files() -> None:
    """`promtool check rules` accepts both files (syntax, PromQL, templates)."""
    result = promtool("check", "rules", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    """`promtool test rules`: every alert fires on its input series (and its neighbour does not), and the
    recording rules give the expected values."""
    result = promtool("test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_exercised_by_the_promtool_tests() -> None:
    """Each alert appears in an alert_rule_test with an expected firing alert."""
    import yaml

    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {t["alertname"] for case in tests for t in case.get("alert_rule_test", []) if t["exp_alerts"]}
    assert fired == ALERTS


def copy_rules(tmp_path: Path) -> Path:
    """The rule files and their tests under tmp_path, laid out as in deploy/prometheus."""
    target = tmp_path / "prometheus"
    shutil.copytree(DEPLOY / "prometheus", target)
    return target


@pytest.mark.parametrize(
    ("alert_file_edit", "named"),
    [
        (("expr: geo_stalled_partitions > 0", "expr: geo_stalled_partitions > 5"), "GeoPartitionStalled"),
        (
            (
                "expr: geo_ipapi_budget_left == 0\n        for: 15m",
                "expr: geo_ipapi_budget_left == 0\n        for: 30m",
            ),
            "GeoBudgetExhausted",
        ),
        (("severity: critical", "severity: info"), "GeoWorkerDown"),
    ],
)
def test_a_broken_rule_fails_the_promtool_tests(
    tmp_path: Path, alert_file_edit: tuple[str, str], named: str
) -> None:
    """A wrong threshold, a longer `for` or a changed label makes `promtool test rules` fail, naming the
    alert."""
    target = copy_rules(tmp_path)
    alerts = target / "alerts.rules.yml"
    old, new = alert_file_edit
    assert old in alerts.read_text()
    alerts.write_text(alerts.read_text().replace(old, new, 1))
    result = promtool("test", "rules", target / "tests" / "rules.test.yml")
    assert result.returncode != 0
    assert named in result.stdout + result.stderr


def test_a_broken_expression_fails_promtool_check(tmp_path: Path) -> None:
    """A PromQL syntax error in a recording rule is refused by `promtool check rules`."""
    target = copy_rules(tmp_path)
    recording = target / "recording.rules.yml"
    recording.write_text(
        recording.read_text().replace("(rate(geo_events_in_total[1m]))", "(rate(geo_events_in_total[1m])")
    )
    result = promtool("check", "rules", recording)
    assert result.returncode != 0
