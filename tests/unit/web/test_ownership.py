"""Who answers for an IP (the active owner of its table partition) and why a worker is not ready."""

from __future__ import annotations

from pipeline.web.ownership import Checks, member, not_ready, owner_url

CHANGELOG = "geo-geo-cache-changelog"
LAYOUT = {
    "http://a:6066": {CHANGELOG: [0, 2], "geo-ips-seen": [0, 2]},
    "http://b:6066": {CHANGELOG: [1, 3], "geo-ips-seen": [1, 3]},
    "http://c:6066": {},  # a member with no partitions (more workers than partitions)
}
READY = Checks(recovered=True, rebalancing=False, assigned=True, broker=True, hot_path=True)


def test_owner_is_the_worker_holding_the_changelog_partition_as_active() -> None:
    """Each partition of the changelog maps to the one worker whose actives hold it."""
    assert [owner_url(LAYOUT, CHANGELOG, p) for p in range(4)] == [
        "http://a:6066",
        "http://b:6066",
        "http://a:6066",
        "http://b:6066",
    ]


def test_no_owner_for_an_unassigned_partition_or_another_topic() -> None:
    """A partition nobody holds (mid-rebalance, or beyond the count) and an unknown topic have no owner."""
    assert owner_url(LAYOUT, CHANGELOG, 4) is None
    assert owner_url(LAYOUT, "other-changelog", 0) is None
    assert owner_url({}, CHANGELOG, 0) is None


def test_a_member_without_partitions_is_still_assigned() -> None:
    """Taking part in the assignment is what counts, not holding partitions; strangers are not members."""
    assert member(LAYOUT, "http://c:6066")
    assert not member(LAYOUT, "http://d:6066")


def test_ready_when_every_check_passes() -> None:
    """No reasons: ready."""
    assert not_ready(READY) == []


def test_every_failed_check_is_a_reason_in_a_fixed_order() -> None:
    """Each failing check adds its own reason; stalled partitions are named."""
    checks = Checks(
        recovered=False,
        rebalancing=True,
        assigned=False,
        broker=False,
        hot_path=False,
        stalled=("geo-ips-seen[3]",),
    )
    reasons = not_ready(checks)
    assert [r.split(":")[0].split(" ")[0] for r in reasons] == [
        "not",
        "rebalancing",
        "table",
        "broker",
        "hot",
        "stalled",
    ]
    assert "geo-ips-seen[3]" in reasons[-1]


def test_a_stall_alone_makes_a_worker_not_ready() -> None:
    """`geo.watch.stalled` non-empty is enough to answer 503."""
    stalled = Checks(
        recovered=True, rebalancing=False, assigned=True, broker=True, hot_path=True, stalled=("t[0]",)
    )
    assert not_ready(stalled) == ["stalled partitions: t[0]"]
