"""Fault-test helpers: worker processes a test kills and restarts, tagged input whose every record is
accounted for, a RocksDB audit of a stopped worker's table, and the API requests read back from the asked
log.

What the fault tests prove is counted, not eyeballed: every input position comes out (enriched, found by
the `seq` tag the enriched record carries verbatim, or dead-lettered, found by the source position the dead
letter names), how many came out twice, and whether a table rebuilt from disk or from the changelog agrees
with its index and with `geo-resolved`.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import rocksdict
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from faust.stores.rocksdb import Store

from pipeline.cache.policy import is_index_key
from pipeline.cache.table import index_keys
from pipeline.config.settings import Settings
from pipeline.devtools.processes import WorkerProcess
from pipeline.kafka.topics import CACHE_TABLE
from pipeline.messages import decode_asked
from tests.support.kafka import wait_for
from tests.support.pipeline import Outputs, read_topic

# Faust's consumer group keeps a member that died without leaving for its session timeout (Faust's default:
# 60 s, during which its table partitions are served by nobody). Fault tests give it the 10 s the plain
# aiokafka consumers of the hot path and the resolver have, so a kill costs seconds, not a minute.
FAST_FAILOVER = {"BROKER_SESSION_TIMEOUT": "10"}
READY_TIMEOUT = 90.0  # a worker start on two busy cores, recovery included
# the start of a line of Faust's worker log: "[2026-11-30 17:26:48,218] [8784] [INFO] ..."
LOG_LINE = re.compile(r"\[(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] \[(?P<pid>\d+)\] ")
LOADED = "resolver: asked log loaded for resolve partitions [0]"  # the resolver seeded its budget
ASSIGNED = "resolver: assigned ["  # the resolver's partitions after a rebalance


class Crew:
    """Worker processes on one app, each on its own data dir, killed (SIGKILL), stopped (SIGTERM) and
    restarted on that same data dir by the test; every start logs to a file of its own."""

    def __init__(self, settings: Settings, workdir: Path, n: int, **env: str) -> None:
        self.settings, self.workdir, self.env = settings, workdir, {**FAST_FAILOVER, **env}
        workdir.mkdir(parents=True, exist_ok=True)
        self.starts = [0] * n
        self.workers = [self._start(i) for i in range(n)]
        self.kills = 0
        self.restarts = 0
        self.stops: list[float] = []  # seconds each SIGTERM took, in order
        self.exit_codes: list[int] = []  # of those stops: 0 is a clean shutdown, -9 a SIGKILL after 30 s

    def _start(self, i: int, data_dir: Path | None = None, **env: str) -> WorkerProcess:
        self.starts[i] += 1
        log = self.workdir / f"w{i}.{self.starts[i]}.log"
        return WorkerProcess(self.settings, data_dir or self.workdir / f"w{i}", log, **self.env, **env)

    async def ready(self, *only: int, timeout: float = READY_TIMEOUT) -> None:
        """Wait until every worker (or those numbered `only`) is ready; one that died fails at once."""
        workers = [self.workers[i] for i in only] if only else self.workers
        await wait_for(lambda: all(w.ready() for w in workers), timeout, message="workers ready")

    def kill(self, i: int) -> None:
        """SIGKILL worker `i`: no shutdown, no final commit, producer buffers lost."""
        self.workers[i].kill()
        self.kills += 1

    async def stop(self, i: int) -> float:
        """SIGTERM worker `i` and wait for it to exit; returns the seconds it took. The wait runs in a
        thread: this loop may be serving the fake API the worker is calling."""
        took = await asyncio.to_thread(self.workers[i].terminate)
        self.stops.append(took)
        self.exit_codes.append(self.workers[i].proc.returncode)
        return took

    def restart(self, i: int, data_dir: Path | None = None, **env: str) -> WorkerProcess:
        """Start worker `i` again (it must be stopped), on its own data dir unless another is given, with
        `env` added to its environment for this start."""
        assert self.workers[i].proc.poll() is not None, "restart a stopped worker only"
        self.workers[i]._log.close()
        self.workers[i] = self._start(i, data_dir, **env)
        self.restarts += 1
        return self.workers[i]

    def by_label(self, label: str) -> int | None:
        """The index of the running worker whose `worker_label` (host:pid) is `label`."""
        for i, worker in enumerate(self.workers):
            if label.endswith(f":{worker.pid}") and worker.proc.poll() is None:
                return i
        return None

    async def stop_all(self) -> list[float]:
        return [await self.stop(i) for i, w in enumerate(self.workers) if w.proc.poll() is None]

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()

    def resolver_owner(self) -> int | None:
        """The running worker whose resolver holds the resolve partition: the latest `resolver: assigned`
        line of each running worker says what it holds (the newest claim wins during a rebalance)."""
        claims = []
        for i, worker in enumerate(self.workers):
            if worker.proc.poll() is not None:
                continue
            lines = [ln for ln in worker.log_path.read_text(errors="replace").splitlines() if ASSIGNED in ln]
            if lines and f"{self.settings.resolve_topic}[0]" in lines[-1]:
                claims.append((lines[-1][:25], i))  # the line starts with its time stamp
        return max(claims)[1] if claims else None

    def log_events(self, needle: str) -> list[tuple[float, str]]:
        """(Unix time, pid) of every log line of every start that contains `needle`."""
        events = []
        for path in sorted(self.workdir.glob("w*.log")):
            for line in path.read_text(errors="replace").splitlines():
                found = LOG_LINE.match(line)
                if found and needle in line:
                    stamp = datetime.strptime(found["at"], "%Y-%m-%d %H:%M:%S,%f")
                    events.append((stamp.timestamp(), found["pid"]))  # the worker logs local time
        return sorted(events)


# -- input with known positions, and what came out of it ---------------------------------------------------


@dataclass
class Tally:
    """Every input record by (partition, offset) with its seq; what the outputs hold of each."""

    positions: dict[tuple[int, int], int] = field(default_factory=dict)  # (partition, offset) -> seq
    valid: set[int] = field(default_factory=set)  # seqs that must be enriched; the rest dead-lettered
    ips: set[str] = field(default_factory=set)  # the IPs of the valid ones: each must end with an entry

    def count(self, out: Outputs) -> TallyCounts:
        enriched = Counter(
            e["event"]["seq"]
            for e in out.enriched
            if isinstance(e.get("event"), dict) and "seq" in e["event"]
        )
        topic = out.settings.events_topic
        dead = Counter(
            self.positions.get((d["partition"], d["offset"]), -1) for d in out.dlq if d.get("topic") == topic
        )
        seqs = set(self.positions.values())
        invalid = seqs - self.valid
        return TallyCounts(
            events_in=len(seqs),
            enriched=sum(1 for s in self.valid if s in enriched),
            dlq=sum(1 for s in invalid if s in dead),
            missing=sorted((self.valid - set(enriched)) | (invalid - set(dead))),
            misrouted=sorted((set(enriched) & invalid) | (set(dead) & self.valid)),
            duplicates=sum(n - 1 for n in enriched.values() if n > 1)
            + sum(n - 1 for n in dead.values() if n > 1),
        )


async def drained(out: Outputs, tally: Tally, timeout: float, note: Callable[[], str] = str) -> TallyCounts:
    """Follow the outputs until every tagged input came out and every IP of the valid ones is resolved;
    the counts then. On timeout the message shows the counts, the statuses and `note()`."""

    async def quiet() -> bool:
        await out.poll()
        resolved = all(out.resolved.get(ip, {}).get("status") == "resolved" for ip in tally.ips)
        return resolved and tally.count(out).complete

    await wait_for(
        quiet, timeout, interval=0.5, message=lambda: f"{tally.count(out).line()} {out.statuses()} {note()}"
    )
    return tally.count(out)


@dataclass(frozen=True)
class TallyCounts:
    events_in: int
    enriched: int  # distinct valid events enriched at least once
    dlq: int  # distinct invalid events dead-lettered at least once
    missing: list[int]  # seqs that never came out
    misrouted: list[int]  # valid ones dead-lettered or invalid ones enriched
    duplicates: int  # extra copies (at least once: a crash replays the batch in hand)

    @property
    def complete(self) -> bool:
        return not self.missing

    def line(self) -> str:
        return (
            f"events in={self.events_in} enriched={self.enriched} dlq={self.dlq} missing={len(self.missing)} "
            f"duplicates={self.duplicates}"
        )


def tagged_events(
    ips: Sequence[str], n: int, *, start: int = 0, bad_every: int = 50
) -> list[tuple[int, bytes]]:
    """(seq, value) for events `start`..`start+n-1` over `ips`; every `bad_every`-th one is invalid (its ip
    is a number) and must be dead-lettered."""
    events = []
    for seq in range(start, start + n):
        ip: Any = 42 if bad_every and seq % bad_every == 0 else ips[seq % len(ips)]
        events.append((seq, json.dumps({"ip": ip, "seq": seq}, separators=(",", ":")).encode()))
    return events


async def publish_tagged(
    bootstrap: str,
    topic: str,
    events: Iterable[tuple[int, bytes]],
    tally: Tally,
    *,
    partitions: int,
    seed: int,
) -> None:
    """Send each event to a random partition (keys mixed, like foreign producers) and note where it landed."""
    rng = random.Random(seed)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        sent = []
        for seq, value in events:
            key = rng.choice([None, b"k%d" % rng.randrange(50)])
            sent.append(
                (seq, value, await producer.send(topic, value, key=key, partition=rng.randrange(partitions)))
            )
        for seq, value, future in sent:
            meta = await future
            tally.positions[meta.partition, meta.offset] = seq
            ip = json.loads(value)["ip"]
            if isinstance(ip, str):
                tally.valid.add(seq)
                tally.ips.add(ip)
    finally:
        await producer.stop()


# -- the table on disk --------------------------------------------------------------------------------------


@dataclass
class TableAudit:
    """A stopped worker's geo table, read from its RocksDB partition databases."""

    partitions: list[int] = field(default_factory=list)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)  # ip -> entry
    index_keys: int = 0
    orphans: list[str] = field(default_factory=list)  # index keys whose entry is missing or implies another
    unindexed: list[str] = field(default_factory=list)  # scheduled entries without their index key
    doubles: list[str] = field(default_factory=list)  # IPs found in two partitions

    @property
    def drift(self) -> int:
        return len(self.orphans) + len(self.unindexed)

    def line(self) -> str:
        return (
            f"partitions={self.partitions} entries={len(self.entries)} index_keys={self.index_keys} "
            f"orphan_keys={len(self.orphans)} unindexed_entries={len(self.unindexed)}"
        )


def audit_table(data_dir: Path, table: str = CACHE_TABLE) -> TableAudit:
    """Read every partition database of `table` under a STOPPED worker's data dir (RocksDB allows one
    writer) and check the due-time and version indexes against the entries both ways."""
    audit = TableAudit()
    for path in sorted(data_dir.rglob(f"{table}-*.db")):
        partition = int(path.name.removesuffix(".db").rpartition("-")[2])
        audit.partitions.append(partition)
        db = rocksdict.Rdict(
            str(path), options=rocksdict.Options(raw_mode=True), access_type=rocksdict.AccessType.read_only()
        )
        try:
            values: dict[bytes, bytes] = {}
            keys: set[bytes] = set()
            for key, value in db.items():
                if key == Store.offset_key or key.startswith(b"~~"):  # markers and status counts
                    continue
                if is_index_key(key):
                    keys.add(key)
                else:
                    values[key] = value
        finally:
            db.close()
        implied = {derived: key for key, value in values.items() for derived in index_keys(value)}
        audit.index_keys += len(keys)
        audit.orphans += sorted(k.decode() for k in keys - implied.keys())
        audit.unindexed += sorted(implied[k].decode() for k in implied.keys() - keys if k is not None)
        for key, value in values.items():
            ip = key.decode()
            if ip in audit.entries:
                audit.doubles.append(ip)
            audit.entries[ip] = json.loads(value)
    return audit


def disagreements(table: dict[str, dict[str, Any]], resolved: dict[str, dict[str, Any]]) -> list[str]:
    """IPs whose table entry differs from their latest `geo-resolved` record, or that only one side has."""
    return sorted(ip for ip in table.keys() | resolved.keys() if table.get(ip) != resolved.get(ip))


# -- the broker's view ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiRequest:
    """One request the resolver sent (or was about to send) to the API, from the asked log."""

    at: float  # Unix seconds, written just before the call
    by: str  # worker label, host:pid
    ips: int


async def api_requests(settings: Settings) -> list[ApiRequest]:
    """The API requests of every resolver, oldest first: the asks of one request and their answers share
    its timestamp (so a compacted log still shows it); `ips` counts the IPs whose latest record is left."""
    latest: dict[bytes, tuple[float, str]] = {}
    for record in await read_topic(settings.kafka_bootstrap, settings.asked_topic):
        asked = decode_asked(record.value)
        if asked is not None and record.key is not None:
            latest[record.key] = (asked.at, json.loads(record.value).get("by", ""))
    groups = Counter(latest.values())
    return [ApiRequest(at, by, n) for (at, by), n in sorted(groups.items())]


@dataclass(frozen=True)
class Rearm:
    """A resolver assigned the resolve partition (a handover, or a rebalance that left it where it was):
    it read the asked log back, seeded its budget, and sent its first request."""

    handover: bool  # the partition changed hands (else the owner kept it)
    last_before: float  # the last request before the assignment (Unix seconds), by anyone
    loaded: float  # the owner read the asked log back and seeded its budget
    first: float  # its first request after that
    allowed: float  # when a budget seeded with every earlier request allowed that request

    @property
    def silence(self) -> float:
        """No request between the last one before the assignment and the first one after."""
        return self.first - self.last_before

    @property
    def wait(self) -> float:
        """From seeding the budget to the first request."""
        return self.first - self.loaded

    @property
    def late(self) -> float:
        """How much later than its budget allowed the first request left."""
        return self.first - self.allowed


def rearms(requests: Sequence[ApiRequest], crew: Crew, limit: int, span: float) -> list[Rearm]:
    """Every time a resolver loaded the asked log for the resolve partition (its log says when) and then
    asked the API, with when a sliding window of `limit` requests per `span` seconds, seeded with all
    earlier requests, allowed that first request."""
    found = []
    loads = sorted(crew.log_events(LOADED))
    for n, (loaded, pid) in enumerate(loads):
        later = [t for t, p in loads[n + 1 :] if p == pid]
        until = later[0] if later else float("inf")
        mine = [r for r in requests if loaded <= r.at < until and r.by.endswith(f":{pid}")]
        before = [r for r in requests if r.at < loaded]
        if not mine or not before:
            continue  # stopped (or the backlog ended) before asking; or nothing to hand over
        first = mine[0]
        earlier = [r.at for r in requests if r.at < first.at]
        allowed = max(loaded, earlier[-limit] + span if len(earlier) >= limit else 0.0)
        found.append(Rearm(before[-1].by != first.by, before[-1].at, loaded, first.at, allowed))
    return found


async def committed(bootstrap: str, group: str, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
    """The committed offsets of `group` on `tps` (missing ones left out)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: offsets[tp].offset for tp in tps if tp in offsets and offsets[tp].offset >= 0}
