"""Who answers for an IP and whether a worker is ready: the HTTP API's decisions, pure.

An IP's entry lives in one partition of the geo table: `key_hash(ip) % GEO_PARTITIONS`, the partition the
hot path sends its seen record to (the table, its changelog and its input topics are co-partitioned). The
worker assigned that changelog partition as ACTIVE is the table's owner and the only one whose copy is
current (a standby may lag). Faust's assignor shares the whole layout with every member of the group, as
`{worker URL: {changelog topic: [partitions]}}` of actives (`app.assignor.changelog_distribution`), each
URL being a worker's `canonical_url` (our GEO_ADVERTISED_URL); `owner_url` reads the owner out of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Distribution = Mapping[str, Mapping[str, Sequence[int]]]  # worker URL -> changelog topic -> partitions


def owner_url(distribution: Distribution, topic: str, partition: int) -> str | None:
    """The URL of the worker holding `partition` of `topic` as active, or None when nobody does."""
    for url, topics in distribution.items():
        if partition in topics.get(topic, ()):
            return url
    return None


def member(distribution: Distribution, url: str) -> bool:
    """Whether the worker at `url` took part in the group's last assignment (with or without partitions)."""
    return url in distribution


@dataclass(frozen=True)
class Checks:
    """What readiness looks at, gathered by the web service (pipeline/web/server.py)."""

    recovered: bool  # table recovery completed
    rebalancing: bool
    assigned: bool  # this worker is in the group's last assignment
    broker: bool  # a metadata request was answered just now
    hot_path: bool  # the hot path started and its near cache caught up with the resolved topic
    stalled: tuple[str, ...] = ()  # stalled stream partitions (faustx.StallWatch), as "topic[partition]"
    blind: str | None = None  # why the stall watch cannot read the partitions' state (None: it can)


def not_ready(checks: Checks) -> list[str]:
    """Why the worker is not ready (empty: ready), one short reason each, in a fixed order."""
    reasons = []
    if not checks.assigned:
        reasons.append("not assigned: the worker has not joined the group's last assignment")
    if checks.rebalancing:
        reasons.append("rebalancing")
    if not checks.recovered:
        reasons.append("table recovery not completed")
    if not checks.broker:
        reasons.append("broker unreachable: no metadata answer")
    if not checks.hot_path:
        reasons.append("hot path not started or its near cache still catching up")
    if checks.stalled:
        reasons.append("stalled partitions: " + ", ".join(checks.stalled))
    if checks.blind is not None:
        reasons.append("stall watch cannot read the partitions' state: " + checks.blind)
    return reasons
