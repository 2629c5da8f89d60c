"""One worker, wired: the Faust app with its table, cache agent and timers, and the two plain-aiokafka
services beside it (the hot path and the resolver).

Layout: input events are enriched by the hot path where they are consumed; IPs new to a worker go to
`<app>-ips-seen`, resolver results and timer retries to `<app>-geo-results`. Both have exactly `partitions`
partitions and raw UTF-8 IP keys, the same bytes as the table keys, because Faust writes a table change to
the changelog partition of the event being processed: the table, its changelog and every topic feeding the
one writing agent must be co-partitioned. The resolver's asked log `<app>-geo-asked` has the resolve
topic's partition count: each resolve partition has its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from mode import ServiceT

from pipeline.addresses import AddressKind, classify
from pipeline.cache.agent import CacheAgent
from pipeline.cache.policy import RetryPolicy, first_sight
from pipeline.cache.table import GeoTable, IndexedStore
from pipeline.cache.timers import (
    RetryTimer,
    VersionSweep,
    register_progress,
    register_reload,
    register_stall_check,
)
from pipeline.config.settings import Settings
from pipeline.errors import ConfigError
from pipeline.hotpath.extract import networks
from pipeline.hotpath.replica import Replica
from pipeline.hotpath.routing import NearCache, Router
from pipeline.hotpath.service import HotPath
from pipeline.kafka import faustx
from pipeline.kafka.commits import hold_commits_at_gaps, seek_back
from pipeline.kafka.config import client_kwargs, faust_app_kwargs
from pipeline.kafka.faustx import DeliveryGuard, StallWatch, install, start_early, start_with
from pipeline.kafka.hooks import faust_hooks, require
from pipeline.kafka.partitioner import key_hash
from pipeline.kafka.stopping import bound_stop_drain
from pipeline.kafka.topics import CACHE_TABLE, enforce, topic_layout
from pipeline.models import GeoData, GeoEntry
from pipeline.providers.base import GeoProvider, OfflineProvider, OfflineSource
from pipeline.providers.updates.service import DataUpdater, managed_paths
from pipeline.resolver.service import Resolver
from pipeline.stats import Stats

log = logging.getLogger(__name__)

ROCKSDB_OPTIONS = {
    # memtables of 2 MiB per partition, two at most; every cache and memtable is charged to one budget
    # for the whole worker (pipeline/storage.py), where Faust's defaults size a 2 GiB cache per partition
    "write_buffer_size": 2 * 1024 * 1024,
}
REPLICA_DIR = "resolved-replica"  # in GEO_DATA_DIR, beside Faust's table stores
CHANGELOG_BUFFER = 1000  # table writes queued before Faust forces a flush (its 100 warned on every burst)
SEEN_EVERY = 86400.0  # last_seen is kept to the day: one seen record per IP, worker and day at most


@dataclass
class GeoApp:
    """Everything the CLI, benchmarks and tests need to run or inspect one worker."""

    settings: Settings
    app: faust.App
    table: GeoTable  # bytes ip -> GeoEntry JSON (and the due-time index, inside its store)
    policy: RetryPolicy
    stats: Stats
    near: NearCache
    hotpath: HotPath
    resolver: Resolver
    cache: CacheAgent
    timer: RetryTimer
    guard: DeliveryGuard
    watch: StallWatch  # stalled partitions of the cache agent's inputs, for the progress line and readiness
    updater: DataUpdater | None = None  # keeps GEO_DATA_SOURCES current (providers/updates/)

    @property
    def store(self) -> IndexedStore:
        return cast(IndexedStore, self.table.data)


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        base=settings.retry_base,
        cap=settings.retry_cap,
        slow_lane_after=settings.slow_lane_after,
        slow_lane_interval=settings.slow_lane_interval,
        pending_timeout=settings.pending_timeout,
        refresh_after=settings.refresh_after,
        stale_after=settings.stale_after,
        forget_after=settings.forget_after,
        seen_every=min(SEEN_EVERY, settings.stale_after / 2),
    )


async def ensure_topics(settings: Settings) -> None:
    """Create missing topics; refuse to run when an existing topic breaks the contract
    (pipeline/kafka/topics.py:
    partition counts of co-partitioned topics, cleanup policies)."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=30000)
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
        await enforce(settings, admin)
    finally:
        await admin.close()


def build(
    settings: Settings, *, providers: Sequence[GeoProvider] | None = None, url: str | None = None
) -> GeoApp:
    """Create the worker (nothing runs until `app.start()`); `providers` replaces the configured provider
    chain (tests and benchmarks pass their own); `url` is where this worker's HTTP API answers (its socket
    bound by the caller, see pipeline/web/server.py `listen`): it goes into the group metadata, so other
    workers and the CLI find this one. The API itself is the caller's to create and start.

    HooksOffPath when an installed Faust/aiokafka no longer calls a name our fixes hook (kafka/hooks.py)."""
    require(faust_hooks())  # before anything connects: a fix that is off must not run silently
    app = faust.App(
        settings.app_id,
        **faust_app_kwargs(settings),  # broker and, for secured clusters, SASL/TLS credentials
        store="rocksdb://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        processing_guarantee="at_least_once",  # exactly_once has open bugs (duplicates, rebalance crashes)
        consumer_auto_offset_reset="earliest",
        web_enabled=False,  # Faust's own web server would also serve its table and router routes
        canonical_url=url,  # how the assignor tells other workers to reach us (None: Faust's default)
        stream_wait_empty=True,
        producer_linger_ms=5,
        broker_commit_interval=1.0,
        # faust's default is 60 s: after a kill -9 the dead worker's table partitions waited a minute for a
        # new owner (measured 61.7 s vs 15.6 s); 10 s is aiokafka's own default, as our other consumers use
        broker_session_timeout=10.0,
    )
    app.producer.buffer.max_messages = CHANGELOG_BUFFER
    table = GeoTable(
        app,
        name=CACHE_TABLE,
        key_type=bytes,  # faust's "raw": the store, the changelog and recovery all see the IP's own bytes
        value_type=bytes,
        partitions=settings.partitions,
        options=dict(ROCKSDB_OPTIONS),
        beacon=app.tables.beacon,
    )
    app.tables.add(table)
    policy, stats = retry_policy(settings), Stats()
    offline = offline_providers(settings)
    sources = offline_sources(offline)
    sight = first_sight_factory(sources, settings.providers, policy)
    near = NearCache(settings.near_cache_size)
    replica = Replica(settings.data_dir / REPLICA_DIR)
    router = Router(
        near,
        settings.max_event_bytes,
        provisional_factory(sources, settings.providers, policy),
        key_hash,
        settings.pending_timeout,
        touch_every=policy.seen_every,  # the owner moves last_seen this often: touch it no less often
        recall=replica.get,
        fields=settings.ip_fields,
        output_format=settings.output_format,
        key_mode=settings.enriched_key_mode,
        trusted=networks(settings.trusted_proxies),
    )
    install(app)  # the fixes for Faust's stalled-partition race (see faustx)
    # a record Faust lost on the cache agent's inputs: hold the commits there and read it again
    inputs = (settings.seen_topic, settings.results_topic)
    hold_commits_at_gaps(app.consumer, inputs, on_gap=seek_back(app.consumer))
    bound_stop_drain(app)  # a stop waits for the batch in hand, not forever: an unfinished one is replayed
    guard = DeliveryGuard(app)
    guard.install()
    # the cache agent's own inputs: a partition there with lag and no progress is a stall, not a slow batch
    watch = StallWatch(app, topics=set(inputs))
    cache = CacheAgent(app, settings, table, policy, stats, sight, fatal=guard.fail)
    cache.register()
    hotpath = HotPath(settings, stats, router, replica)
    resolver = Resolver(settings, stats, providers, offline)
    for service in (hotpath, resolver):  # neither reads the table: they serve while it recovers
        start_early(app, service)
    store = cast(IndexedStore, table.data)  # created now; its partition databases open on assignment
    timer = RetryTimer(app, settings, store, stats)
    timer.register()
    VersionSweep(app, settings, store, sources).register()
    register_stall_check(app, watch)
    if "mmdb" in offline:
        register_reload(app, offline["mmdb"])
    register_progress(app, stats, watch)
    geo = GeoApp(settings, app, table, policy, stats, near, hotpath, resolver, cache, timer, guard, watch)
    if settings.data_sources:
        geo.updater = data_updater(settings, offline["mmdb"])
        start_with(app, geo.updater)
    return geo


def data_updater(settings: Settings, source: Any) -> DataUpdater:
    """The updater, handing each installed build straight to the mmdb source's reload."""

    async def installed(path: Any) -> None:
        if await asyncio.to_thread(source.maybe_reload):
            log.info("mmdb: reloaded, now %s", source.version)

    return DataUpdater(settings, on_installed=installed, label=settings.worker_label)


def offline_providers(settings: Settings) -> dict[str, Any]:
    """The in-process providers, one instance per worker shared by the hot path and the resolver: iptocc's
    registry data ("offline", always: first sights need it) and the MaxMind-format files ("mmdb")."""
    found: dict[str, Any] = {"offline": OfflineProvider()}
    if settings.mmdb or settings.data_sources:
        from pipeline.providers.mmdb import MmdbLoadError, MmdbSource

        try:
            found["mmdb"] = MmdbSource(settings.mmdb, managed=managed_paths(settings))
        except (MmdbLoadError, OSError) as exc:
            raise ConfigError(f"GEO_MMDB: {exc}") from None
    return found


def offline_sources(offline: dict[str, Any]) -> dict[str, OfflineSource]:
    """Provider name -> the synchronous source behind it (the "offline" provider wraps iptocc's)."""
    return {name: provider.source if name == "offline" else provider for name, provider in offline.items()}


OfflineAnswer = tuple[AddressKind, GeoData | None, str | None, str | None]  # kind, geo, provider, version
TAILS_MAX = 1_000  # first-sight JSON tails kept: (kind, country, provider, version) per batch, a few hundred


def offline_answer_factory(
    sources: dict[str, OfflineSource], order: Sequence[str]
) -> Callable[[str], OfflineAnswer]:
    """ip -> what the offline data knows at once: the first in-process provider in GEO_PROVIDERS order
    that knows the country answers (iptocc at the end); a non-global address is classified only."""
    names = [name for name in order if name in sources and name != "offline"] + ["offline"]
    chain = [(name, sources[name].lookup_with_version) for name in names]

    def answer(ip: str) -> OfflineAnswer:
        kind = classify(ip)
        if kind is AddressKind.GLOBAL:
            for name, lookup in chain:
                geo, version = lookup(ip)
                if geo is not None and geo.country_code:
                    return kind, geo, name, version
        return kind, None, None, None

    return answer


def first_sight_factory(
    sources: dict[str, OfflineSource], order: Sequence[str], policy: RetryPolicy
) -> Callable[[str, float], GeoEntry]:
    """(ip, now) -> the entry of an IP never seen before, with what the offline data knows at once."""
    answer = offline_answer_factory(sources, order)

    def sight(ip: str, now: float) -> GeoEntry:
        kind, geo, provider, version = answer(ip)
        return first_sight(ip, kind, geo, provider, now, policy, version)

    return sight


def provisional_factory(
    sources: dict[str, OfflineSource], order: Sequence[str], policy: RetryPolicy
) -> Callable[[str, float], bytes]:
    """(ip, now) -> the first-sight entry's JSON, the bytes `first_sight_factory(...)(ip, now).to_json()`
    writes, for the hot path, which builds one per new IP.

    Why a tail cache: within an input batch `now` is one value, and a first-sight entry differs from
    another IP's with the same offline answer only in its first field, the IP. So the JSON after the IP is
    built once per (offline answer, now) and reused; building it per IP cost a fifth of a burst of new IPs.
    """
    answer = offline_answer_factory(sources, order)
    tails: dict[tuple[OfflineAnswer, float], bytes] = {}

    def provisional(ip: str, now: float) -> bytes:
        found = answer(ip)
        head = b'{"ip":"' + ip.encode() + b'"'  # a normalised IP needs no JSON escaping
        tail = tails.get((found, now))
        if tail is not None:
            return head + tail
        kind, geo, provider, version = found
        full = first_sight(ip, kind, geo, provider, now, policy, version).to_json()
        if full.startswith(head):
            if len(tails) >= TAILS_MAX:
                tails.clear()
            tails[found, now] = full[len(head) :]
        return full

    return provisional


@contextlib.asynccontextmanager
async def running(
    geo: GeoApp, *, timeout: float = 60.0, services: Sequence[ServiceT] = ()
) -> AsyncIterator[GeoApp]:
    """Run a worker in this event loop (demo, benchmark, tests) until the block exits.

    `services` (the HTTP API, say) start before the app and stop after it, as `geo-pipeline worker` runs
    them. Waits until the worker has an assignment and its tables have recovered, so callers can produce at
    once.
    """
    await ensure_topics(geo.settings)
    for service in services:
        await service.start()
    await geo.app.start()
    try:
        deadline = time.monotonic() + timeout
        while not (geo.app.consumer.assignment() and ready(geo)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {geo.settings.app_id} got no partitions within {timeout:.0f}s")
            await asyncio.sleep(
                0.1
            )  # polling Faust's state: it exposes no event for "assigned and recovered"
        yield geo
    finally:
        await geo.app.stop()
        for service in reversed(services):
            await service.stop()


def ready(geo: GeoApp) -> bool:
    """Assigned, tables recovered, not rebalancing, and the hot path started."""
    return faustx.recovered(geo.app) and not geo.app.rebalancing and geo.hotpath._consumer is not None
