"""The Faust runtime: app, topics and tables, wired to the agents and timer in `agents`/`timers`.

Layout (see DESIGN.md): input events are repartitioned by normalised IP into `<app>-events-by-ip`;
resolver results and timer retry requests go to `<app>-geo-results`; both have exactly `partitions`
partitions and raw UTF-8 IP keys, the same bytes as the table keys, so the table, its changelog and every
topic that feeds the one writing agent are co-partitioned (facts 2 and 11). The resolver's asked log
`<app>-geo-asked` has the resolve topic's partition count: each resolve partition has its own. Records
are JSON bytes and are produced with the app's producer directly, not `topic.send` (about 35x cheaper per
message); the consumer flushes that producer before every offset commit, so at-least-once holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from .asked import asked_keep
from .policy import RetryPolicy
from .routing import NearCache
from .settings import Settings

log = logging.getLogger(__name__)

ROCKSDB_OPTIONS = {
    "block_cache_size": 8 * 1024 * 1024,  # per partition; Faust's default is 2 GiB each (fact 9)
    "block_cache_compressed_size": 4 * 1024 * 1024,
    "write_buffer_size": 8 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "max_open_files": 256,
}
CACHE_TABLE = "geo-cache"  # ip -> entry; its changelog is `<app>-geo-cache-changelog`
SCHEDULE_TABLE = "geo-schedule"  # due-time index the retry timer reads
CHANGELOG_BUFFER = 1000  # table writes queued before Faust forces a flush (its 100 warned on every burst)
COMPACTED = {"cleanup.policy": "compact"}  # latest record per IP is the state; older ones may go


@dataclass
class Stats:
    """Counters for progress lines and the summary; in-memory, per worker."""

    consumed: int = 0
    enriched: int = 0
    hits: int = 0  # served by the hot path's near cache
    dead_lettered: int = 0
    misses: int = 0
    resolve_sent: int = 0
    results_applied: int = 0
    resolved_published: int = 0
    lookups: int = 0
    batches: int = 0
    errors: int = 0
    resolve_deduped: int = 0  # resolve requests dropped because an ask for them was still in flight
    ticks: list[dict[str, float]] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"in={self.consumed} enriched={self.enriched} near_hits={self.hits} dlq={self.dead_lettered} "
            f"misses={self.misses} resolve_sent={self.resolve_sent} lookups={self.lookups} "
            f"batches={self.batches} deduped={self.resolve_deduped} results={self.results_applied} "
            f"errors={self.errors}"
        )


@dataclass
class GeoApp:
    """Everything the CLI, benchmarks and tests need to run or inspect one worker."""

    settings: Settings
    app: faust.App
    table: Any  # faust Table[bytes, bytes]: ip (UTF-8) -> GeoEntry JSON
    schedule: Any  # faust Table[bytes, bytes]: b"<lane><due ms>|<ip>" -> b""
    policy: RetryPolicy
    stats: Stats
    near: NearCache  # IP -> latest resolved-topic entry: the hot path's hits
    hotpath: Any = None  # the running hotpath.HotPath service, once the app started it


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        base=settings.retry_base,
        cap=settings.retry_cap,
        slow_lane_after=settings.slow_lane_after,
        slow_lane_interval=settings.slow_lane_interval,
        pending_timeout=settings.pending_timeout,
        refresh_after=settings.refresh_after,
    )


def topic_layout(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """Every topic the pipeline uses: name -> (partitions, config)."""
    s = settings
    return {
        s.events_topic: (s.partitions, {}),
        s.dlq_topic: (s.partitions, {}),
        s.enriched_topic: (s.partitions, {}),
        s.resolved_topic: (s.partitions, COMPACTED),
        s.resolve_topic: (s.resolve_partitions, {}),
        s.by_ip_topic: (s.partitions, {}),
        s.results_topic: (s.partitions, {}),
        # Faust creates these too, but racing its own start: a changelog missing from the metadata at the
        # first assignment is ignored by its assignor, leaving that table without active partitions
        f"{s.app_id}-{CACHE_TABLE}-changelog": (s.partitions, COMPACTED),
        f"{s.app_id}-{SCHEDULE_TABLE}-changelog": (s.partitions, COMPACTED),
        s.asked_topic: (s.resolve_partitions, asked_topic_config(s.pending_timeout)),
    }


def asked_topic_config(pending_timeout: float) -> dict[str, str]:
    """The asked log keeps the latest ask per IP, for a few pending timeouts (all the resolver reads back).

    Segments roll every pending timeout so that time retention can drop old ones (it only deletes closed
    segments). Set when the topic is created: a later GEO_PENDING_TIMEOUT does not change it.
    """
    keep_ms = int(asked_keep(pending_timeout) * 1000)
    return {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(keep_ms),
        "segment.ms": str(max(60_000, int(pending_timeout * 1000))),  # >= 1 min: few files
    }


async def ensure_topics(settings: Settings) -> None:
    """Create missing topics; refuse to run when an internal topic's partition count is wrong."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        layout = topic_layout(settings)
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, parts, settings.replication, topic_configs=conf)
            for name, (parts, conf) in layout.items()
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race: fine
                await admin.create_topics(missing)
        await _check_partitions(admin, settings, layout)
    finally:
        await admin.close()


async def _check_partitions(
    admin: AIOKafkaAdminClient, settings: Settings, layout: dict[str, tuple[int, dict[str, str]]]
) -> None:
    # the table's feeds must match the table; the asked log must match the resolve topic it mirrors
    names = [settings.by_ip_topic, settings.results_topic, settings.asked_topic, settings.resolve_topic]
    described = await admin.describe_topics(names)
    for item in described:
        want = layout[item["topic"]][0]
        have = len(item.get("partitions") or [])
        if have and have != want:
            from .errors import ConfigError

            raise ConfigError(
                f"topic {item['topic']} has {have} partitions but {want} are configured: the table and "
                "its input topics, and the resolve and asked topics, must be co-partitioned"
            )


def build(settings: Settings, *, providers: Sequence[Any] | None = None, web: bool = False) -> GeoApp:
    """Create the Faust app with its topics, tables, agents and timer (nothing runs until it starts).

    `providers` replaces the configured provider chain (tests and benchmarks pass their own).
    """
    from . import agents, hotpath, timers

    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="rocksdb://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        processing_guarantee="at_least_once",  # exactly_once has open bugs (fact 7)
        consumer_auto_offset_reset="earliest",
        web_enabled=web,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_host=settings.web_host,
        stream_wait_empty=True,
        producer_linger_ms=5,
        broker_commit_interval=1.0,
    )
    app.producer.buffer.max_messages = CHANGELOG_BUFFER
    table = _raw_table(app, CACHE_TABLE, settings.partitions)
    schedule = _raw_table(app, SCHEDULE_TABLE, settings.partitions)
    near = NearCache(settings.near_cache_size)
    geo = GeoApp(settings, app, table, schedule, retry_policy(settings), Stats(), near)
    hotpath.register(geo)
    agents.register(geo, providers)
    timers.register(geo)
    timers.register_progress(geo)
    return geo


def _raw_table(app: faust.App, name: str, partitions: int) -> Any:
    """A RocksDB table with bytes keys (the raw UTF-8 IP) and bytes values (JSON we encode ourselves).

    Faust derives a table's serialisers from its key/value types and `str` means "json", which would quote
    the key; `bytes` means "raw" for the store, the changelog writes and the recovery reads alike. So the
    table's key bytes equal the topics' key bytes (facts 2 and 11).
    """
    return app.Table(
        name, key_type=bytes, value_type=bytes, partitions=partitions, options=dict(ROCKSDB_OPTIONS)
    )


@contextlib.asynccontextmanager
async def running(geo: GeoApp, *, timeout: float = 60.0) -> AsyncIterator[GeoApp]:
    """Run a worker in this event loop (demo, benchmark, tests) until the block exits.

    Waits until the worker has an assignment and its tables have recovered, so callers can produce at once.
    """
    await ensure_topics(geo.settings)
    await geo.app.start()
    try:
        deadline = time.monotonic() + timeout
        while not (geo.app.consumer.assignment() and _ready(geo.app)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {geo.settings.app_id} got no partitions within {timeout:.0f}s")
            await asyncio.sleep(
                0.1
            )  # polling Faust's state: it exposes no event for "assigned and recovered"
        yield geo
    finally:
        await geo.app.stop()


def _ready(app: faust.App) -> bool:
    recovery = app.tables.recovery  # type: ignore[attr-defined]  # concrete TableManager has it
    return bool(recovery.completed.is_set()) and not app.rebalancing
