"""The topic contract: which existing topics break the pipeline, and what each fix is."""

from __future__ import annotations

import pytest

from pipeline.config.settings import Settings
from pipeline.kafka.topics import Found, Problem, Wanted, contract, policies, problems, report, topic_layout

# two resolve partitions: on the free tier only with a declared egress per worker (config/checks.py)
SETTINGS = Settings.from_env({}, app_id="geo", partitions=8, resolve_partitions=2, egress_ip="81.2.69.142")
CHANGELOG = "geo-geo-cache-changelog"


def layout() -> dict[str, Wanted]:
    return {w.name: w for w in contract(SETTINGS)}


def healthy() -> dict[str, Found]:
    """Every topic as the pipeline creates it."""
    return {w.name: Found(w.partitions, w.config.get("cleanup.policy", "delete")) for w in contract(SETTINGS)}


def test_contract_names_the_copartitioned_topics_and_their_setting() -> None:
    """The table's changelog and inputs and the resolved topic follow GEO_PARTITIONS, resolve and asked
    GEO_RESOLVE_PARTITIONS; the input, enriched and dead-letter topics may have any count."""
    wanted = layout()
    exact = {name: (w.exact, w.partitions) for name, w in wanted.items() if w.exact}
    assert exact == {
        "geo-ips-seen": ("GEO_PARTITIONS", 8),
        "geo-geo-results": ("GEO_PARTITIONS", 8),
        CHANGELOG: ("GEO_PARTITIONS", 8),
        "geo-resolved": ("GEO_PARTITIONS", 8),
        "geo-resolve": ("GEO_RESOLVE_PARTITIONS", 2),
        "geo-geo-asked": ("GEO_RESOLVE_PARTITIONS", 2),
    }
    compacted = {
        name: w.config["cleanup.policy"] for name, w in wanted.items() if "cleanup.policy" in w.config
    }
    assert compacted == {"geo-resolved": "compact", CHANGELOG: "compact", "geo-geo-asked": "compact,delete"}


def test_topics_as_created_keep_the_contract() -> None:
    """The layout itself, and no topics at all (all still to be created), have no problems."""
    assert problems(contract(SETTINGS), healthy()) == []
    assert problems(contract(SETTINGS), {}) == []


def test_a_wrong_count_on_a_copartitioned_topic_names_the_topic_and_the_setting() -> None:
    """4 partitions on the seen topic: the fix is GEO_PARTITIONS=4 or a new app id; nothing to alter."""
    found = healthy() | {"geo-ips-seen": Found(4, "delete")}
    [problem] = problems(contract(SETTINGS), found)
    assert problem.topic == "geo-ips-seen" and not problem.configs
    assert "has 4 partitions but GEO_PARTITIONS=8" in problem.text
    assert "set GEO_PARTITIONS=4" in problem.text and "GEO_APP_ID" in problem.text


def test_a_wrong_count_on_the_asked_log_says_to_recreate_it() -> None:
    """The asked log holds only recent asks: its fix is deleting it after fixing the resolve setting."""
    found = healthy() | {"geo-geo-asked": Found(1, "compact,delete")}
    [problem] = problems(contract(SETTINGS), found)
    assert "delete the topic" in problem.text and "GEO_RESOLVE_PARTITIONS" in problem.text


def test_any_count_is_fine_where_nothing_is_copartitioned() -> None:
    """The input, enriched and dead-letter topics work with any partition count."""
    found = healthy() | {
        name: Found(3, f.policy) for name, f in healthy().items() if not layout()[name].exact
    }
    assert problems(contract(SETTINGS), found) == []


@pytest.mark.parametrize(("topic", "have"), [("geo-resolved", "delete"), (CHANGELOG, "compact,delete")])
def test_a_compacted_topic_without_exactly_its_policy_is_fixable(topic: str, have: str) -> None:
    """A delete policy where the layout says compact loses entries: `topics fix` sets the layout's policy."""
    found = healthy() | {topic: Found(healthy()[topic].partitions, have)}
    [problem] = problems(contract(SETTINGS), found)
    assert problem == Problem(topic, problem.text, {"cleanup.policy": "compact"})
    assert f"cleanup.policy={have}" in problem.text and "geo-pipeline topics fix" in problem.text


def test_policy_order_and_spaces_do_not_matter() -> None:
    """ "delete, compact" is the asked log's "compact,delete"."""
    assert policies("delete, compact") == policies("compact,delete")
    found = healthy() | {"geo-geo-asked": Found(2, "delete, compact")}
    assert problems(contract(SETTINGS), found) == []


def test_unknown_counts_and_policies_are_not_problems() -> None:
    """A topic just created (no partitions in the metadata yet, policy not described) passes for now."""
    found = healthy() | {"geo-ips-seen": Found(0, None), "geo-resolved": Found(0, None)}
    assert problems(contract(SETTINGS), found) == []


def test_the_resolved_topic_count_is_pinned() -> None:
    """A resolved topic with another count than GEO_PARTITIONS (grown under running workers) is refused at
    start: an IP's records would sit in two partitions and the feeders would never read the new ones."""
    found = healthy() | {"geo-resolved": Found(12, "compact")}
    [problem] = problems(contract(SETTINGS), found)
    assert "geo-resolved has 12 partitions but GEO_PARTITIONS=8" in problem.text


def test_report_lists_every_problem() -> None:
    """One problem is its text; several are counted and listed one per line."""
    one, two = Problem("a", "topic a is wrong"), Problem("b", "topic b is wrong")
    assert report([one]) == "topic a is wrong"
    assert (
        report([one, two])
        == "2 topics break the pipeline's contract:\n  topic a is wrong\n  topic b is wrong"
    )


# -- the asked log's compaction lag (issue 19, item 9) ------------------------------------------------------

LAG = "min.compaction.lag.ms"


def test_the_asked_log_is_never_compacted_inside_two_budget_windows() -> None:
    """The asked log's configs hold back compaction (and retention) for two budget windows plus slack, so
    a new owner reading it back counts every request of the current window."""
    config = topic_layout(SETTINGS)["geo-geo-asked"][1]
    floor = 2 * SETTINGS.budget_window * 1000
    assert int(config[LAG]) > floor
    assert int(config["retention.ms"]) >= int(config[LAG])
    short = Settings.from_env({}, pending_timeout=20.0, http_timeout=5.0, budget_window=60.0)
    short_config = topic_layout(short)[short.asked_topic][1]
    assert int(short_config["retention.ms"]) >= int(short_config[LAG]) > 120_000


def test_an_asked_log_with_too_short_a_compaction_lag_is_a_fixable_problem() -> None:
    """An existing asked log without the lag (created before, or by hand) breaks the contract; the fix
    sets it; a longer lag is fine."""
    wanted = int(topic_layout(SETTINGS)["geo-geo-asked"][1][LAG])
    for have in (0, wanted - 1):
        found = healthy() | {"geo-geo-asked": Found(2, "compact,delete", have)}
        [problem] = problems(contract(SETTINGS), found)
        assert problem.topic == "geo-geo-asked" and LAG in problem.text
        assert problem.configs == {LAG: str(wanted)}
    longer = healthy() | {"geo-geo-asked": Found(2, "compact,delete", wanted * 2)}
    assert problems(contract(SETTINGS), longer) == []
