"""The updater every worker runs (and `geo-pipeline data update` runs once): it follows the data topic and
installs each new build, and while it holds the lease it downloads, checks and publishes.

The lease: every updater joins the consumer group `<app>-geo-data-lease` on the one-partition data topic
(the partition paused: nothing is fetched through it). Kafka's group coordinator gives that partition to
exactly one member of the current generation, so the downloader is whoever it is assigned to, agreed by
the group, not a race; when it dies or leaves, the group rebalances within the session timeout and
another member takes over. A member that loses the lease mid-download does not publish (checked just
before the manifest goes out), and a new leader reads the topic to its end (counts, statuses) before it
decides anything.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from mode import Service

from pipeline.config.settings import Settings
from pipeline.kafka.config import client_kwargs
from pipeline.providers.updates import builds, schedule, verify
from pipeline.providers.updates.builds import BuildError, Manifest, TopicState
from pipeline.providers.updates.fetch import FetchError, fetch
from pipeline.providers.updates.sources import Source, parse_sources

log = logging.getLogger(__name__)

TICK = 1.0  # seconds between looks at the schedule (cheap: no I/O unless something is due)
POLL_MS = 500  # the topic follower's poll
DOWNLOAD_TIMEOUT_FACTOR = 30  # a whole download may take this many GEO_HTTP_TIMEOUTs (large files)
OUTCOMES = ("published", "unchanged", "failed", "refused", "capped")


def data_dir(settings: Settings) -> Path:
    """Where the updater writes the builds it installs (one `<source>.mmdb` each)."""
    return settings.data_dir / "offline-data"


def managed_paths(settings: Settings) -> list[Path]:
    return [data_dir(settings) / f"{s.name}.mmdb" for s in parse_sources(settings.data_sources)]


class DataUpdater(Service):
    """Follows the data topic, installs builds; downloads and publishes while it holds the lease."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_installed: Callable[[Path], Awaitable[None]] | None = None,
        label: str = "",
        draw: Callable[[], float] = random.random,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.settings, self.on_installed, self.draw = settings, on_installed, draw
        self.who = label or "updater"
        self.sources = parse_sources(settings.data_sources)
        self.topic = TopicState()
        self.installed: dict[str, Manifest] = {}  # source -> the build in use here
        self._tried: dict[str, set[str]] = {}  # source -> SHA-256s of the builds tried (installed or not)
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (source, outcome) by this process
        self.checks = 0  # checks this updater ran as leaseholder (capped ones included)
        self.leader = False
        self.caught_up = asyncio.Event()
        self.changed = asyncio.Event()  # set whenever the state moves (the CLI waits on it)
        self._tp = TopicPartition(settings.data_topic, 0)
        self._position = 0
        self._draws: dict[tuple[str, float], float] = {}
        self._warned: dict[str, str] = {}
        self._reader: AIOKafkaConsumer | None = None
        self._lease: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    async def on_start(self) -> None:
        s = self.settings
        self._producer = AIOKafkaProducer(**client_kwargs(s), acks="all", linger_ms=5)
        self._reader = AIOKafkaConsumer(**client_kwargs(s), group_id=None, enable_auto_commit=False)
        self._lease = AIOKafkaConsumer(
            **client_kwargs(s), group_id=f"{s.app_id}-geo-data-lease", enable_auto_commit=False
        )
        await asyncio.gather(self._producer.start(), self._reader.start(), self._lease.start())
        self._reader.assign([self._tp])
        await self._reader.seek_to_beginning(self._tp)
        self._lease.subscribe([s.data_topic], listener=_Lease(self))
        self.add_future(self._follow())
        self.add_future(self._hold_lease())
        self.add_future(self._schedule())

    async def on_stop(self) -> None:
        clients = [c for c in (self._lease, self._reader, self._producer) if c is not None]
        await asyncio.gather(*(c.stop() for c in clients), return_exceptions=True)

    # -- following the topic: every worker --------------------------------------------------------------

    async def _follow(self) -> None:
        while not self.should_stop:
            try:
                await self._follow_once()
            except Exception as exc:  # a broker hiccup (leader moving, topic just created): try again
                log.warning("data: reading %s failed, retrying: %r", self.settings.data_topic, exc)
                await self.sleep(1.0)

    async def _follow_once(self) -> None:
        assert self._reader is not None
        batch = await self._reader.getmany(self._tp, timeout_ms=POLL_MS)
        for record in batch.get(self._tp, []):
            self.topic.apply(record.key, record.value)
        self._position = await self._reader.position(self._tp)
        if not self.caught_up.is_set():
            end = await self._end()
            log.debug("data: %s at %d of %d", self.who, self._position, end)
            if self._position >= end:
                self.caught_up.set()
        if batch or not self.installed:
            await self._install_new()
        if batch:
            self.changed.set()

    async def _end(self) -> int:
        assert self._reader is not None
        return int((await self._reader.end_offsets([self._tp]))[self._tp])

    async def sync(self, timeout: float = 30.0) -> None:
        """Wait until this updater has read everything on the topic as of now."""
        end, deadline = await self._end(), time.monotonic() + timeout
        while self._position < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.settings.data_topic} not read to its end within {timeout:.0f}s")
            await asyncio.sleep(0.05)  # the follower advances the position; polling it is all we need

    async def _install_new(self) -> None:
        for source in self.sources:
            manifest = self.topic.manifest(source.name)
            if manifest is None or manifest.sha256 in self._tried.get(source.name, ()):
                continue
            self._tried.setdefault(source.name, set()).add(manifest.sha256)  # one try (and report) per build
            target = data_dir(self.settings) / f"{source.name}.mmdb"
            try:
                data = self.topic.assemble(manifest)
                if not (target.exists() and builds.sha256(target.read_bytes()) == manifest.sha256):
                    await asyncio.to_thread(verify.write_checked, data, target, None)
            except BuildError as exc:
                log.error("data: %s build %s not installed: %s", source.name, manifest.sha256[:12], exc)
                continue  # the build in use stays; the next manifest is tried afresh
            self.installed[source.name] = manifest
            log.info("data: %s installed build %s (epoch %d)", source.name, manifest.sha256[:12],
                     manifest.build_epoch)
            if self.on_installed is not None:
                await self.on_installed(target)

    # -- the lease -------------------------------------------------------------------------------------

    async def _hold_lease(self) -> None:
        assert self._lease is not None
        while not self.should_stop:
            try:
                await self._lease.getmany(timeout_ms=1000)  # keeps the membership; the partition is paused
            except Exception as exc:
                log.warning("data: lease membership: %r", exc)
                await self.sleep(1.0)

    def _assigned(self, assigned: set[TopicPartition]) -> None:
        assert self._lease is not None
        self.leader = self._tp in assigned
        if self.leader:
            self._lease.pause(self._tp)
            log.info("data: %s holds the download lease", self.who)

    # -- the schedule: the leaseholder only -----------------------------------------------------------

    async def _schedule(self) -> None:
        await self.caught_up.wait()
        log.debug("data: %s caught up with %s", self.who, self.settings.data_topic)
        while not self.should_stop:
            self._warn_old()
            if self.leader:
                try:
                    await self.sync()
                    for source in self.sources:
                        now = time.time()
                        if self.leader and now >= self.due_at(source, now):
                            await self.check(source)
                except Exception:
                    log.exception("data: update check failed; the next one runs as usual")
            await self.sleep(TICK)

    def due_at(self, source: Source, now: float) -> float:
        """When `source` is next due, from what the topic says (cluster-wide, survives restarts)."""
        s, status = self.settings, self.topic.status(source.name)
        last = status.get("at")
        requested = self.topic.values.get(b"request/" + source.name.encode())
        if not isinstance(last, int | float):
            return now
        if requested is not None and json.loads(requested).get("at", 0) > last:
            return now  # `geo-pipeline data update` asked
        failures = status.get("failures", 0)
        if status.get("outcome") == "failed" and isinstance(failures, int) and failures > 0:
            return last + schedule.backoff(failures, s.data_retry_base, s.data_update_interval)
        draw = self._draws.setdefault((source.name, last), self.draw())
        return schedule.next_check(last, now, s.data_update_interval, s.data_update_jitter, draw)

    async def check(self, source: Source) -> str:
        """One attempt for `source` within the cap: download, check, publish. Returns the outcome."""
        s, now = self.settings, time.time()
        self.checks += 1
        day = schedule.day_of(now)
        count = self.topic.count(source.name, day)
        attempt = schedule.may_download(count, s.data_daily_cap, 0.0, now)
        status = self.topic.status(source.name)
        failures = status.get("failures", 0)
        failures = failures if isinstance(failures, int) else 0
        if not attempt.allowed:
            if status.get("outcome") != "capped" or status.get("day") != day:
                log.warning("data: %s not downloaded: %s", source.name, attempt.reason)
                await self._status(source, "capped", attempt.reason, failures, day=day)
            return "capped"
        await self._put(builds.count_key(source.name, day), json.dumps({"count": count + 1}).encode())
        previous = self.topic.manifest(source.name)
        try:
            fetched = await fetch(
                source, source.requests(s, now), s.http_timeout * DOWNLOAD_TIMEOUT_FACTOR, s.data_max_bytes
            )
            data = builds.unpack(fetched.body, fetched.request.archive, s.data_max_bytes)
            scratch = data_dir(s) / f".{source.name}.check"
            layout = previous.layout if previous else None
            db = await asyncio.to_thread(verify.check_bytes, data, scratch, layout)
        except FetchError as exc:
            outcome = "refused" if exc.auth else "failed"
            log.error("data: %s download failed (%d today): %s", source.name, count + 1, exc)
            return await self._status(source, outcome, str(exc), failures + 1)
        except BuildError as exc:
            log.error("data: %s build rejected, nothing published, data in use stays: %s", source.name, exc)
            return await self._status(source, "failed", str(exc), failures + 1)
        digest = builds.sha256(data)
        if previous is not None and previous.sha256 == digest:
            return await self._status(source, "unchanged", f"build {db.build_epoch} again", 0)
        if not self.leader:
            return await self._status(source, "failed", "lost the lease before publishing", failures + 1)
        manifest = Manifest(
            source.name, db.build_epoch, db.database_type, db.layout.value, len(data), digest,
            builds.chunk_count(len(data)), time.time(), s.worker_name or self.who,
        )
        for index, piece in enumerate(builds.chunks(data)):
            await self._put(manifest.chunk_key(index), piece, wait=False)
        await self._put(builds.manifest_key(source.name), manifest.to_json())
        for key in self.topic.obsolete(source.name, manifest, day):
            await self._put(key, None, wait=False)
        log.info("data: %s published build %s (epoch %d, %d bytes, %d chunks)", source.name, digest[:12],
                 db.build_epoch, len(data), manifest.chunks)
        return await self._status(source, "published", f"build {db.build_epoch}", 0)

    async def request(self) -> float:
        """Ask the leaseholder (maybe this updater) to check every source now; returns the request time."""
        at = time.time()
        for source in self.sources:
            await self._put(b"request/" + source.name.encode(), json.dumps({"at": at}).encode())
        return at

    async def _status(self, source: Source, outcome: str, detail: str, failures: int, **extra: Any) -> str:
        self.outcomes[(source.name, outcome)] += 1
        body = {"at": time.time(), "outcome": outcome, "detail": detail, "failures": failures,
                "by": self.settings.worker_name or self.who, **extra}
        await self._put(builds.status_key(source.name), json.dumps(body).encode())
        return outcome

    async def _put(self, key: bytes, value: bytes | None, *, wait: bool = True) -> None:
        assert self._producer is not None
        if wait:
            await self._producer.send_and_wait(self._tp.topic, value, key=key, partition=0)
        else:
            await self._producer.send(self._tp.topic, value, key=key, partition=0)
        self.topic.apply(key, value)

    def _warn_old(self) -> None:
        now = time.time()
        day = schedule.day_of(now)
        for name, manifest in self.installed.items():
            fresh = schedule.freshness(manifest.build_epoch, now)
            if fresh is not schedule.Freshness.FRESH and self._warned.get(name) != day:
                self._warned[name] = day
                age = (now - manifest.build_epoch) / 86400
                log.warning("data: %s is %.0f days old (%s): check the updates (docs/data-updates.md)",
                            name, age, fresh)

    def report(self) -> list[dict[str, Any]]:
        """Per source: the build in use here, its age, the last outcome, today's downloads (metrics, CLI)."""
        now, day = time.time(), schedule.day_of(time.time())
        rows = []
        for source in self.sources:
            manifest = self.installed.get(source.name)
            status = self.topic.status(source.name)
            rows.append({
                "source": source.name,
                "build_epoch": manifest.build_epoch if manifest else None,
                "age": now - manifest.build_epoch if manifest else None,
                "freshness": schedule.freshness(manifest.build_epoch, now).value if manifest else "none",
                "outcome": status.get("outcome", "none"),
                "detail": status.get("detail", ""),
                "downloads_today": self.topic.count(source.name, day),
            })
        return rows


class _Lease(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, updater: DataUpdater) -> None:
        self.updater = updater

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.updater.leader = False

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.updater._assigned(set(assigned))
