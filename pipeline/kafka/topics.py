"""The topic contract: existing topics must match the layout the pipeline relies on.

Two properties break the pipeline silently when an existing topic (created by hand, by another version,
with other settings) lacks them, so the worker checks them at start and refuses to run with one error
naming each topic and its fix:
- partition counts of the topics that must be co-partitioned: the table's changelog and its two input
  topics (`GEO_PARTITIONS`: a table change lands in the changelog partition of the record being
  processed), the resolved topic (`GEO_PARTITIONS` too: another count splits an IP's records across two
  partitions and the feeders never read new ones), and the resolve topic with its asked log
  (`GEO_RESOLVE_PARTITIONS`: each resolve partition reads its own asked partition back);
- `cleanup.policy` where the layout says compacted: the resolved topic and the changelog keep the latest
  record per IP forever (a `delete` policy loses entries once retention passes); the asked log is
  `compact,delete`;
- the asked log's `min.compaction.lag.ms`: a new owner of a resolve partition counts the requests of the
  current budget window from it, so compaction must not erase an ask (an IP asked twice keeps only its
  latest record) before it has left the window: at least two windows plus slack.

A partition count cannot be changed in place (more partitions move keys to other partitions), so its fix is
a setting or a new app id. A cleanup policy can: `geo-pipeline topics fix` sets it through the admin
client. aiokafka has only the legacy AlterConfigs request, which replaces a topic's whole dynamic config,
so the fix reads the topic's dynamic configs first and sends them back with the change.

`topic_layout()` is the layout itself (every topic, its partitions and configs); `problems()` decides
(pure, unit-tested); `inspect()` and `apply()` are the admin I/O around it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline.config.settings import Settings
from pipeline.errors import ConfigError
from pipeline.kafka.config import client_kwargs

log = logging.getLogger(__name__)

APPLY_TIMEOUT = 15.0  # seconds an altered config may take to read back
DYNAMIC_TOPIC_CONFIG = 1  # DescribeConfigs config_source: set on the topic itself (not a broker default)
POLICY = "cleanup.policy"
LAG = "min.compaction.lag.ms"
LAG_SLACK = 60.0  # seconds on top of two budget windows: clock skew and the time a new owner takes to read
FIX_COMMAND = "geo-pipeline topics fix"
CACHE_TABLE = "geo-cache"  # the Faust table: ip -> entry, plus the due-time index
COMPACTED = {POLICY: "compact"}  # latest record per IP is the state; older ones may go
KEEP_FACTOR = 3.0  # pending timeouts an ask is remembered (and kept on the topic): outlives redelivery


def changelog_topic(settings: Settings) -> str:
    """The geo table's changelog, named as Faust names it: `<app>-<table>-changelog`."""
    return f"{settings.app_id}-{CACHE_TABLE}-changelog"


def topic_layout(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """Every topic the pipeline uses: name -> (partitions, config)."""
    s = settings
    data = {s.data_topic: (1, COMPACTED)} if s.data_sources else {}  # builds, counts: GEO_DATA_SOURCES
    return data | {
        s.events_topic: (s.partitions, {}),
        s.dlq_topic: (s.partitions, {}),
        s.enriched_topic: (s.partitions, {}),
        s.resolved_topic: (s.partitions, COMPACTED),
        s.resolve_topic: (s.resolve_partitions, {}),
        s.seen_topic: (s.partitions, {}),
        s.results_topic: (s.partitions, {}),
        # Faust creates this too, but racing its own start: a changelog missing from the metadata at the
        # first assignment is ignored by its assignor, leaving the table without active partitions
        changelog_topic(s): (s.partitions, COMPACTED),
        s.asked_topic: (s.resolve_partitions, asked_topic_config(s.pending_timeout, s.budget_window)),
    }


def asked_keep(pending_timeout: float) -> float:
    """How long an ask is remembered, in memory and on the asked topic (its retention)."""
    return pending_timeout * KEEP_FACTOR


def asked_topic_config(pending_timeout: float, budget_window: float) -> dict[str, str]:
    """The asked log keeps the latest ask per IP, for a few pending timeouts (all the resolver reads back),
    and every ask for two budget windows plus slack (what a new owner counts; compaction would otherwise
    keep only an IP's latest ask, retention drop a young segment).

    Segments roll every pending timeout so that time retention can drop old ones (it only deletes closed
    segments). Set when the topic is created: a later GEO_PENDING_TIMEOUT does not change it; a lag shorter
    than GEO_BUDGET_WINDOW needs is a contract problem `geo-pipeline topics fix` mends.
    """
    lag_ms = asked_lag_ms(budget_window)
    return {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(max(lag_ms, int(asked_keep(pending_timeout) * 1000))),
        "segment.ms": str(max(60_000, int(pending_timeout * 1000))),  # >= 1 min: few files
        # the broker stamps each record: a new owner measures how long ago a request left on one clock
        "message.timestamp.type": "LogAppendTime",
        LAG: str(lag_ms),
    }


def asked_lag_ms(budget_window: float) -> int:
    """How long every ask stays on the asked log whatever compaction does: two windows plus slack."""
    return int((2 * budget_window + LAG_SLACK) * 1000)


@dataclass(frozen=True)
class Wanted:
    """What the pipeline needs of one topic."""

    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)
    exact: str = ""  # the variable setting its partition count when it must match exactly ("": any count)
    role: str = ""  # what the topic is, for messages


@dataclass(frozen=True)
class Found:
    """What one existing topic has; 0 partitions or a None policy or lag: not known (yet)."""

    partitions: int
    policy: str | None
    compaction_lag_ms: int | None = None


@dataclass(frozen=True)
class Problem:
    """One broken promise: the topic, what is wrong and how to fix it, and the configs `fix` would set."""

    topic: str
    text: str
    configs: Mapping[str, str] = field(default_factory=dict)  # empty: altering configs cannot fix it


def contract(settings: Settings) -> list[Wanted]:
    """The layout (`topic_layout`) with the partition rules it implies."""
    s = settings
    exact = {
        s.seen_topic: ("GEO_PARTITIONS", "the table's input: co-partitioned with the table"),
        s.results_topic: ("GEO_PARTITIONS", "the table's input: co-partitioned with the table"),
        changelog_topic(s): ("GEO_PARTITIONS", "the table's changelog"),
        s.resolve_topic: ("GEO_RESOLVE_PARTITIONS", "resolve requests, co-partitioned with the asked log"),
        s.asked_topic: ("GEO_RESOLVE_PARTITIONS", "the resolver's asked log, one partition per resolve one"),
        # pinned: with another count an IP's old and new records sit in two partitions (whichever is read
        # last wins) and the workers' feeders, assigned at start, never read the new partitions
        s.resolved_topic: ("GEO_PARTITIONS", "the latest entry per IP: one partition per IP for good"),
        s.data_topic: ("", "offline data builds: one partition, its group's assignee downloads"),
    }
    return [
        Wanted(name, parts, dict(config), *exact.get(name, ("", "")))
        for name, (parts, config) in topic_layout(settings).items()
    ]


def policies(value: str | None) -> frozenset[str]:
    """A cleanup.policy value as a set ("compact,delete" == "delete, compact")."""
    return frozenset(p.strip() for p in (value or "").split(",") if p.strip())


def problems(wanted: Sequence[Wanted], found: Mapping[str, Found]) -> list[Problem]:
    """Every way existing topics break the contract; topics not found (yet to be created) are fine."""
    out: list[Problem] = []
    for want in wanted:
        have = found.get(want.name)
        if have is None:
            continue
        if want.exact and have.partitions and have.partitions != want.partitions:
            out.append(Problem(want.name, _partitions_text(want, have.partitions)))
        policy = want.config.get(POLICY)
        if policy and have.policy is not None and policies(have.policy) != policies(policy):
            text = (
                f"topic {want.name} has {POLICY}={have.policy}, the pipeline needs {policy} ({want.role}): "
                f"run `{FIX_COMMAND}` (or kafka-configs.sh --alter --entity-type topics --entity-name "
                f"{want.name} --add-config {POLICY}=[{policy}])"
            )
            out.append(Problem(want.name, text, {POLICY: policy}))
        lag = want.config.get(LAG)
        if lag and have.compaction_lag_ms is not None and have.compaction_lag_ms < int(lag):
            text = (
                f"topic {want.name} has {LAG}={have.compaction_lag_ms}, the pipeline needs at least {lag} "
                f"(two GEO_BUDGET_WINDOWs plus slack: {want.role}): run `{FIX_COMMAND}` (or "
                f"kafka-configs.sh --alter --entity-type topics --entity-name {want.name} --add-config "
                f"{LAG}={lag})"
            )
            out.append(Problem(want.name, text, {LAG: lag}))
    return out


def _partitions_text(want: Wanted, have: int) -> str:
    head = (
        f"topic {want.name} has {have} partitions but {want.exact}={want.partitions} ({want.role}); "
        "a partition count cannot be changed in place: "
    )
    if want.name.endswith("-geo-asked"):
        return head + (
            f"delete the topic (it holds only recent asks; the next start recreates it) after setting "
            f"{want.exact} to the resolve topic's partition count"
        )
    return head + f"set {want.exact}={have} to use the existing topics, or start under a new GEO_APP_ID"


def report(found: Sequence[Problem]) -> str:
    """One message for ConfigError: every problem on its own line."""
    if len(found) == 1:
        return found[0].text
    return f"{len(found)} topics break the pipeline's contract:\n  " + "\n  ".join(p.text for p in found)


# -- admin I/O ----------------------------------------------------------------------------------------------


async def inspect(admin: AIOKafkaAdminClient, names: Sequence[str]) -> dict[str, Found]:
    """Partition count and cleanup.policy of each existing topic among `names`."""
    # only topics that exist: a metadata request naming a missing topic makes a broker with
    # auto.create.topics.enable (the default) create it, with its default partition count and policy
    existing = set(await admin.list_topics())
    names = [name for name in names if name in existing]
    if not names:
        return {}
    described = await admin.describe_topics(names)
    counts = {t["topic"]: len(t.get("partitions") or []) for t in described if t["error_code"] == 0}
    if not counts:
        return {}
    asked = {POLICY: None, LAG: None}
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, configs=asked) for name in counts]
    configs: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(resources):
        for error, _, _, name, entries in response.resources:
            if not error:
                configs[name] = {e[0]: e[1] for e in entries if e[0] in asked and e[1] is not None}
    return {name: _found(parts, configs.get(name, {})) for name, parts in counts.items()}


def _found(partitions: int, configs: Mapping[str, str]) -> Found:
    lag = configs.get(LAG)
    return Found(partitions, configs.get(POLICY), int(lag) if lag and lag.isdigit() else None)


async def check(settings: Settings, admin: AIOKafkaAdminClient) -> list[Problem]:
    """The contract's problems on this cluster."""
    wanted = contract(settings)
    return problems(wanted, await inspect(admin, [w.name for w in wanted]))


async def enforce(settings: Settings, admin: AIOKafkaAdminClient) -> None:
    """ConfigError naming every problem, or nothing (called at worker start).

    One problem is mended instead: an asked log without the compaction lag (every version before 0.2.0
    created it so). The topic is the pipeline's own and the change only keeps records longer, so a worker
    upgraded in place sets it (logged) rather than refusing to start until someone runs `topics fix`.
    """
    found = await check(settings, admin)
    own = [p for p in found if p.topic == settings.asked_topic and set(p.configs) == {LAG}]
    for problem in own:
        log.warning("topics: %s has no %s yet (an older version made it): setting it", problem.topic, LAG)
        await apply(admin, problem)
    rest = [p for p in found if p not in own]
    if rest:
        raise ConfigError(report(rest))


async def apply(admin: AIOKafkaAdminClient, problem: Problem) -> None:
    """Set `problem.configs` on its topic, keeping the topic's other dynamic configs."""
    resource = ConfigResource(ConfigResourceType.TOPIC, problem.topic)
    current: dict[str, str] = {}
    for response in await admin.describe_configs([resource]):
        for error, message, _, _, entries in response.resources:
            if error:
                raise ConfigError(f"topic {problem.topic}: describing its configs failed ({error} {message})")
            for name, value, _, source, sensitive, *_ in entries:
                if source == DYNAMIC_TOPIC_CONFIG:
                    if sensitive or value is None:  # cannot be read back, so it would be lost
                        raise ConfigError(f"topic {problem.topic}: {name} is sensitive; alter it by hand")
                    current[name] = value
    wanted = ConfigResource(ConfigResourceType.TOPIC, problem.topic, configs={**current, **problem.configs})
    for response in await admin.alter_configs([wanted]):
        for error, message, *_ in response.resources:
            if error:
                raise ConfigError(f"topic {problem.topic}: altering its configs failed ({error} {message})")
    # the broker applies a change through its metadata log: wait until it reads back, so "fixed" is true
    deadline = time.monotonic() + APPLY_TIMEOUT
    while not _applied(problem, (await inspect(admin, [problem.topic]))[problem.topic]):
        if time.monotonic() > deadline:
            raise ConfigError(
                f"topic {problem.topic}: the new configs did not show within {APPLY_TIMEOUT:.0f}s"
            )
        await asyncio.sleep(0.2)  # polling the broker's view: it offers no notification


def _applied(problem: Problem, found: Found) -> bool:
    """Whether the topic now reads back every config the fix set."""
    policy = problem.configs.get(POLICY)
    if policy is not None and policies(found.policy) != policies(policy):
        return False
    lag = problem.configs.get(LAG)
    return lag is None or found.compaction_lag_ms == int(lag)


async def run(settings: Settings, *, fix: bool) -> tuple[list[Problem], list[Problem]]:
    """`geo-pipeline topics check|fix`: (problems found, problems fixed)."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=30000)
    await admin.start()
    try:
        found = await check(settings, admin)
        fixed: list[Problem] = []
        if fix:
            for problem in found:
                if problem.configs:
                    await apply(admin, problem)
                    fixed.append(problem)
        return found, fixed
    finally:
        await admin.close()
