"""Who answers for an IP (the active owner of its table partition) and why a worker is not ready."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.web.ownership import (
    Checks,
    address_allowed,
    forward_refusal,
    member,
    not_ready,
    owner_url,
    shared,
)

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


# -- forwarding to a URL a group member chose (issue 19, item 3) --------------------------------------------


@pytest.mark.parametrize(
    ("url", "networks", "refused"),
    [
        ("http://10.1.2.3:6066", (), None),
        ("https://worker-3.geo:6066", (), None),
        ("http://10.1.2.3:6066/", ("10.0.0.0/8",), None),
        ("http://worker-3.geo:6066", ("10.0.0.0/8",), None),  # a name: checked where it resolves
        ("http://169.254.169.254", ("10.0.0.0/8",), "outside GEO_FORWARD_NETWORKS"),
        ("http://[fd00::1]:6066", ("10.0.0.0/8",), "outside GEO_FORWARD_NETWORKS"),
        ("file:///etc/passwd", (), "not an http(s) URL"),
        ("gopher://10.1.2.3:70", (), "not an http(s) URL"),
        ("http://user:pw@10.1.2.3:6066", (), "not a plain http(s) origin"),
        ("http://10.1.2.3:6066/latest/meta-data", (), "not a plain http(s) origin"),
        ("http://10.1.2.3:99999", (), "not a valid URL"),
        ("http://", (), "not an http(s) URL"),
    ],
)
def test_forward_refusal(url: str, networks: tuple[str, ...], refused: str | None) -> None:
    """Only plain http(s) origins are forwarded to, and an address literal only inside the allow-list."""
    found = forward_refusal(url, networks)
    assert (found is None) if refused is None else (found is not None and refused in found)


def test_address_allowed_reads_v4_v6_and_refuses_garbage() -> None:
    """An address inside any listed network is allowed; a malformed one never is."""
    networks = ("10.0.0.0/8", "fd00::/8")
    assert address_allowed("10.9.9.9", networks) and address_allowed("fd00::7", networks)
    assert not address_allowed("127.0.0.1", networks) and not address_allowed("worker-3", networks)


def test_shared_urls_and_their_readiness_reason() -> None:
    """A URL two members advertise is named; readiness fails with it and the setting to fix."""
    assert shared(["http://a:1", "http://b:1", "http://a:1"]) == ("http://a:1",)
    assert shared(["http://a:1", "http://b:1"]) == ()
    checks = Checks(recovered=True, rebalancing=False, assigned=True, broker=True, hot_path=True)
    assert not_ready(checks) == []
    reasons = not_ready(dataclasses.replace(checks, shared=("http://a:1",)))
    assert len(reasons) == 1 and "http://a:1" in reasons[0] and "GEO_ADVERTISED_URL" in reasons[0]
