"""Who answers for an IP and whether a worker is ready: the HTTP API's decisions, pure.

An IP's entry lives in one partition of the geo table: `key_hash(ip) % GEO_PARTITIONS`, the partition the
hot path sends its seen record to (the table, its changelog and its input topics are co-partitioned). The
worker assigned that changelog partition as ACTIVE is the table's owner and the only one whose copy is
current (a standby may lag). Faust's assignor shares the whole layout with every member of the group, as
`{worker URL: {changelog topic: [partitions]}}` of actives (`app.assignor.changelog_distribution`), each
URL being a worker's `canonical_url` (our GEO_ADVERTISED_URL); `owner_url` reads the owner out of it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

Distribution = Mapping[str, Mapping[str, Sequence[int]]]  # worker URL -> changelog topic -> partitions


def owner_url(distribution: Distribution, topic: str, partition: int) -> str | None:
    """The URL of the worker holding `partition` of `topic` as active, or None when nobody does."""
    for url, topics in distribution.items():
        if partition in topics.get(topic, ()):
            return url
    return None


def forward_refusal(url: str, networks: Sequence[str]) -> str | None:
    """Why a lookup must not be forwarded to the owner at `url` (None: it may be).

    The URL comes from the owner's own group membership, so anyone who can join the group chooses it: only
    a plain http(s) origin (no credentials, path, query or fragment) is accepted, and with `networks`
    (GEO_FORWARD_NETWORKS) an address literal must lie inside them (a host name is checked where the
    connection resolves it, pipeline/web/guard.py).
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number in range)
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https") or not host:
        return "not an http(s) URL with a host"
    if parts.username or parts.password or parts.path.strip("/") or parts.query or parts.fragment:
        return "not a plain http(s) origin (credentials, a path, a query or a fragment)"
    if networks and _literal(host) and not address_allowed(host, networks):
        return f"{host} is outside GEO_FORWARD_NETWORKS"
    return None


def address_allowed(address: str, networks: Sequence[str]) -> bool:
    """Whether an IP address lies inside one of `networks` (CIDRs); an unparsable address never does."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])  # a scoped IPv6 address keeps its zone apart
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in networks)


def admin_allowed(remote: str | None) -> bool:
    """Whether a request from `remote` (the peer's address) may change state: from loopback only (an
    operator on another host reaches a worker through `kubectl port-forward`/`exec` or an SSH tunnel,
    which arrive from loopback); an unknown or unparsable peer never."""
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return True


def shared(urls: Sequence[str]) -> tuple[str, ...]:
    """The URLs more than one group member advertises, sorted."""
    return tuple(sorted({url for url in urls if urls.count(url) > 1}))


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
    shared: tuple[str, ...] = ()  # URLs several group members advertise (Faust merges those workers)


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
    if checks.shared:
        reasons.append(
            "several workers advertise " + ", ".join(checks.shared) + ": the group merges them; give "
            "each worker its own GEO_ADVERTISED_URL"
        )
    return reasons
