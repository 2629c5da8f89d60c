"""The resolver: geo-resolve -> dedupe against the asked log -> provider chain -> geo-results.

A plain aiokafka consumer (group `<app>-resolve`) running inside the worker as a service, not a Faust
agent: it must wait for the API budget, give a resolve partition up at once on a rebalance and stop within
seconds, and a Faust agent holding unacked events can do none of that (the rebalance and the shutdown wait
for them). One loop, per batch of up to 100 distinct IPs:

1. take requests for up to `resolve_batch_wait` seconds, keep the highest attempt per IP, and drop what the
   asked log says is in flight or answered (`asked.AskedLog`); a batch of duplicates commits and ends here,
   without touching the budget;
2. wait for the budget, outside the lock a rebalance waits on; if the remote cannot be asked within a normal
   pacing wait (breaker open, a long server pause), answer from the offline data at once instead: the entry
   gets the offline country and stays due for the remote;
3. write "asked" records and wait for the broker's ack, commit the batch's start position (the fence, below),
   call the provider chain (HTTP bounded by its timeout), publish the results keyed by IP (co-partitioned
   with the table), mark the asks answered, commit.

Writing before asking is what survives a crash: a successor reading the asked log knows what the dead
resolver may have asked. Whoever is assigned a resolve partition reads its asked log back before asking,
and seeds the budget with the asks of the current window (they bound what the previous owner sent from
the same egress IP): no over-budget burst after a handover, and no full window of silence either. How long
ago each request left is measured on the broker's clock (the asked log's append times, `asked_log.py`), so
neither owner's clock error counts; on an older asked log without them, a request time after the
reader's own clock (the previous owner's clock runs ahead) counts as sent now.

The fence: a resolver frozen past its session (a stalled loop, a paused VM, SIGSTOP) wakes up still
believing it owns its partition until its next poll; its batch in hand would be asked in its successor's
window. Just before the call it commits the position its batch started from (what is committed already,
so nothing moves): the group coordinator refuses that commit from a stale generation, and the batch is
abandoned, unasked, for the partition's new owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError
from mode import Service

from pipeline.addresses import AddressKind, classify
from pipeline.config.settings import Settings
from pipeline.kafka import clients
from pipeline.kafka.config import client_kwargs
from pipeline.kafka.topics import asked_keep
from pipeline.messages import ASKED_TIME_DIGITS, decode_resolve_request, encode_asked, encode_result
from pipeline.models import LookupResult, PermanentFailure, Resolved, TransientFailure
from pipeline.providers.base import GeoProvider, OfflineProvider, ProviderChain
from pipeline.providers.ipapi import MAX_BATCH, remote_provider
from pipeline.providers.throttle import ResolveBudget
from pipeline.resolver.asked_log import broker_now, read_asked
from pipeline.resolver.dedupe import (
    SKEW_MARGIN,
    AskedLog,
    ahead,
    asked_horizon,
    broker_clock,
    request_times,
)
from pipeline.stats import Stats

log = logging.getLogger(__name__)

FETCH_WAIT_MS = 500  # an idle poll returns this often, so a stop is noticed quickly
PACE_STEP = 0.5  # seconds between budget checks while waiting: short, so a stop or rebalance is quick
STOP_GRACE = 3.0  # seconds a call in flight may finish after a stop; then it is answered from the fallback
CALL_TIMEOUT_FACTOR = 2.0  # a provider call may take this many HTTP timeouts before it is given up
STOPPING = "stopping"  # why a budget wait ended without asking: the batch is abandoned, its next owner asks


class _Handover(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.resolver.generation += 1  # a batch taken before this is abandoned, not committed
        async with self.resolver.lock:  # the call in hand (bounded by the HTTP timeout) finishes first
            pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.resolver.generation += 1
        self.resolver.to_load = frozenset(tp.partition for tp in assigned)
        log.info("resolver: assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


class Resolver(Service):
    """One worker's resolver: its consumer, producer, provider chain and API budget."""

    def __init__(
        self,
        settings: Settings,
        stats: Stats,
        providers: Sequence[GeoProvider] | None = None,
        offline: dict[str, GeoProvider] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.settings, self.stats = settings, stats
        self._providers = providers  # tests and benchmarks pass their own; else built from settings at start
        self._offline = offline or {}  # in-process providers by name, shared with the hot path
        self.chain: ProviderChain = ProviderChain([OfflineProvider()])
        self.budget: ResolveBudget | None = None
        self._session: aiohttp.ClientSession | None = None
        self.asked = AskedLog(asked_horizon(settings.pending_timeout), asked_keep(settings.pending_timeout))
        self.lock = asyncio.Lock()
        self.generation = 0
        self.to_load: frozenset[int] | None = None  # resolve partitions whose asked log is still to read
        # times (as the asked log holds them) of the requests this resolver asked: its budget counts them
        # already, so seeding it from the asked log after an assignment must not count them again
        self._own_asks: set[float] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._stopping = asyncio.Event()

    @property
    def offline(self) -> dict[str, GeoProvider]:
        """The in-process providers by name (the metrics read the offline data's build dates)."""
        return self._offline

    async def on_start(self) -> None:
        s = self.settings
        self.chain, self.budget = self._open_chain()
        self._producer = clients.producer(s)
        self._consumer = AIOKafkaConsumer(
            **client_kwargs(s),
            group_id=f"{s.app_id}-resolve",
            # the worker's name in the member id: the broker's logs say whose member it is, and the group's
            # round-robin assignor (members sorted by id) gives the partitions in the workers' name order
            client_id=f"{s.app_id}-resolve-{s.worker_label}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=MAX_BATCH,
        )
        await asyncio.gather(self._producer.start(), self._consumer.start())
        self._consumer.subscribe([s.resolve_topic], listener=_Handover(self))
        self.add_future(self._run())

    async def on_stop(self) -> None:
        self._stopping.set()  # ends a budget wait at once; a call in flight gets STOP_GRACE
        async with self.lock:
            pass  # the batch in hand is answered and committed (or abandoned) first
        # not under the lock: leaving the group revokes our partitions, and revocation waits for the lock
        clients = [c for c in (self._consumer, self._producer) if c is not None]
        await asyncio.gather(*(c.stop() for c in clients), return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def _open_chain(self) -> tuple[ProviderChain, ResolveBudget | None]:
        """The provider chain and the remote's budget; the HTTP session is this service's, one per worker."""
        if self._providers is not None:
            return ProviderChain(self._providers), getattr(self._providers[0], "budget", None)
        s = self.settings
        chain: list[GeoProvider] = []
        budget: ResolveBudget | None = None
        for name in s.providers:
            if name != "ipapi":
                chain.append(self._offline.get(name) or OfflineProvider())
                continue
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=s.http_timeout))
            remote, budget = remote_provider(s, self._session, asyncio.get_running_loop().time)
            chain.append(remote)
        return ProviderChain(chain), budget

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._load_asked()
                await self.run_once()
            except ConsumerStoppedError:
                continue
            except Exception:  # a bad batch must not end the resolver: its IPs come back by the timer
                self.stats.errors += 1
                log.exception("resolver batch failed")
                await self._pause(1.0)  # back-off before the next batch, not synchronisation

    async def run_once(self) -> None:
        """One batch: take, dedupe, wait for the budget or fall back, resolve, publish, commit."""
        assert self._consumer is not None
        generation = self.generation
        wanted, partition, first = await self._take()
        if not wanted:
            return
        try:
            await self._answer(generation, wanted, partition, first)
        except Exception:
            # a failed batch is read again, never skipped: skipped, its IPs would wait out a pending timeout
            # and a re-emission (asks already written are dropped by the asked log on the way back)
            self._rewind(first)
            raise

    async def _answer(
        self,
        generation: int,
        wanted: dict[str, int],
        partition: dict[str, int],
        first: dict[TopicPartition, int],
    ) -> None:
        assert self._consumer is not None
        now = time.time()
        self.asked.prune(now)
        chosen = self.asked.select(wanted, now)
        self.stats.resolve_deduped += len(wanted) - len(chosen)
        why_not = await self._wait_for_remote() if chosen and self.budget is not None else None
        async with self.lock:
            if generation != self.generation or why_not == STOPPING or self._stopping.is_set():
                # given up (a rebalance or a stop came first): nothing committed, its next owner reads it
                self._rewind(first)
                return
            if chosen and not await self._resolve(chosen, partition, why_not, first):
                self._rewind(first)  # fenced: a newer generation owns the partition, its owner asks
                return
            await self._consumer.commit()

    def _rewind(self, first: dict[TopicPartition, int]) -> None:
        """Seek back to the batch's first offsets, so whoever owns them next reads the batch again."""
        assert self._consumer is not None
        try:
            assigned = self._consumer.assignment()
            for tp, offset in first.items():
                if tp in assigned:
                    self._consumer.seek(tp, offset)
        except KafkaError as exc:  # stopped or unassigned meanwhile: the next owner reads the batch
            log.warning("resolver: could not rewind the batch (%r); its next owner reads it", exc)

    async def _take(self) -> tuple[dict[str, int], dict[str, int], dict[TopicPartition, int]]:
        """Up to 100 distinct IPs with their highest attempt and resolve partition, gathered for at most the
        batch wait, and the first offset taken per partition."""
        assert self._consumer is not None
        wanted: dict[str, int] = {}
        partition: dict[str, int] = {}
        first: dict[TopicPartition, int] = {}
        deadline: float | None = None
        while len(wanted) < MAX_BATCH and not self._stopping.is_set():
            left = FETCH_WAIT_MS if deadline is None else int(max(0.0, deadline - time.monotonic()) * 1000)
            batch = await self._consumer.getmany(timeout_ms=left, max_records=MAX_BATCH - len(wanted))
            for tp, records in batch.items():
                if records:
                    first.setdefault(tp, records[0].offset)
                for record in records:
                    request = decode_resolve_request(record.value)
                    if request is None:
                        self.stats.malformed += 1
                        where = (tp.topic, tp.partition, record.offset)
                        sample = (record.value or b"")[:120]
                        log.warning(
                            "resolver: skipping %s[%d]@%d (not a resolve request): %r", *where, sample
                        )
                        continue
                    # defensive: only global addresses ever reach a provider, whatever is on the topic
                    if classify(request.ip) is not AddressKind.GLOBAL:
                        continue
                    if request.attempt >= wanted.get(request.ip, 0):
                        wanted[request.ip], partition[request.ip] = request.attempt, tp.partition
            if deadline is None:
                if not batch:
                    break  # idle: go round the loop (stop, rebalance, asked log)
                deadline = time.monotonic() + self.settings.resolve_batch_wait
            elif time.monotonic() >= deadline:
                break
        return wanted, partition, first

    async def _wait_for_remote(self) -> str | None:
        """None when the remote may be asked now; else why not (answer from the fallback instead)."""
        assert self.budget is not None
        while True:
            if self._stopping.is_set():
                return STOPPING
            down = self.budget.unavailable()
            if down is not None:
                return down
            delay = self.budget.delay()
            if delay <= 0:
                return None
            await self._pause(min(delay, PACE_STEP))

    async def _resolve(
        self,
        chosen: dict[str, int],
        partition: dict[str, int],
        why_not: str | None,
        first: dict[TopicPartition, int],
    ) -> bool:
        """Answer the batch (the remote, or the fallback); False when the fence said the partition has a
        newer owner: nothing was asked."""
        ips = list(chosen)
        asked_at = time.time()  # the request's time, in its asks and again in their answers
        if why_not is not None:
            results = await self.chain.fallback(ips, why_not)
            self.stats.fallback_answers += len(ips)
        else:
            if self.budget is not None:
                self._remember_ask(asked_at, self.budget.window + self.budget.slack)
                await self._write_asked(chosen, partition, asked_at, answered=False)
            if not await self._fence(first):
                return False
            results = await self._call(ips)
            self.stats.lookups += len(ips)
            self.stats.batches += 1
        assert self._producer is not None
        deliveries = []
        for ip in ips:
            result = results.get(ip) or TransientFailure("no result", self.chain.name)
            value = encode_result(chosen[ip], result)
            deliveries.append(await self._producer.send(self.settings.results_topic, value, key=ip.encode()))
        await asyncio.gather(*deliveries)
        for ip in ips:
            self.stats.answers[answer_label(results.get(ip))] += 1
        # no remote in the chain, no budget to protect: an in-process answer costs less than holding it
        # (about 270 bytes an IP, 200,000 IPs at most), and a repeated request is answered again
        if self.budget is not None:
            await self._remember_answered(chosen, partition, asked_at, why_not is None)
        return True

    async def _remember_answered(
        self, chosen: dict[str, int], partition: dict[str, int], asked_at: float, remote_asked: bool
    ) -> None:
        """Only once the answers are on the broker may the log say "answered": from then on a repeat of
        these requests (redelivery, a re-emission crossing the answer) is dropped whatever its age."""
        if remote_asked:
            await self._write_asked(chosen, partition, asked_at, answered=True)
        else:
            for ip, attempt in chosen.items():
                self.asked.record(ip, attempt, time.time(), answered=True)

    async def _fence(self, first: dict[TopicPartition, int]) -> bool:
        """Commit the batch's start position just before the call: the group coordinator refuses it from a
        stale generation (CommitFailedError) or for a partition no longer ours, and a zombie stops here."""
        assert self._consumer is not None
        try:
            await self._consumer.commit(dict(first))
        except KafkaError as exc:  # CommitFailedError, IllegalStateError, a coordinator gone
            log.warning(
                "resolver: the group moved on before the call (%s): batch abandoned unasked for the "
                "partition's next owner",
                type(exc).__name__,
            )
            return False
        return True

    async def _call(self, ips: Sequence[str]) -> dict[str, LookupResult]:
        """The provider chain, bounded: a stop gives a call in flight STOP_GRACE, then the fallback answers
        for it."""
        call = asyncio.ensure_future(self.chain.resolve(ips))
        stopping = asyncio.ensure_future(self._stopping.wait())
        # each HTTP request has its own timeout; this bounds a provider that ignores it (a bug, a hang)
        limit = CALL_TIMEOUT_FACTOR * self.settings.http_timeout
        try:
            await asyncio.wait({call, stopping}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
            if stopping.done() and not call.done():
                await asyncio.wait({call}, timeout=STOP_GRACE)
            if not call.done():
                call.cancel()
                why = "stopped during the call" if stopping.done() else f"no answer within {limit:.0f}s"
                return await self.chain.fallback(ips, why)
            return call.result()
        except Exception as exc:  # a provider bug must not lose the batch: all become transient
            log.exception("provider chain raised")
            return {
                ip: TransientFailure(f"provider error: {type(exc).__name__}", self.chain.name) for ip in ips
            }
        finally:
            stopping.cancel()

    def _remember_ask(self, at: float, span: float) -> None:
        """Note a request of ours (as the asked log will hold its time); forget those older than `span`."""
        self._own_asks = {t for t in self._own_asks if t >= at - span}
        self._own_asks.add(round(at, ASKED_TIME_DIGITS))

    async def _write_asked(
        self, chosen: dict[str, int], partition: dict[str, int], at: float, *, answered: bool
    ) -> None:
        """Record asks (and wait for the broker: a successor must see them) or their answers, both with the
        time of the request: compaction keeps only an IP's latest record, and a successor seeding its budget
        must still see when the request left."""
        assert self._producer is not None
        by = self.settings.worker_label
        deliveries = []
        for ip, attempt in chosen.items():
            value = encode_asked(attempt, at, by, answered=answered)
            # the asked log is co-partitioned with the resolve topic: the record goes to the request's own
            # partition number, where that partition's next owner reads it back
            deliveries.append(
                await self._producer.send(
                    self.settings.asked_topic, value, key=ip.encode(), partition=partition[ip]
                )
            )
        await asyncio.gather(*deliveries)
        for ip, attempt in chosen.items():  # only once on the broker: an ask it refused was never made
            self.asked.record(ip, attempt, at, answered=answered)

    async def _load_asked(self) -> None:
        """After an assignment: read the asked log of our resolve partitions and seed the budget."""
        mine = self.to_load
        if mine is None or self._stopping.is_set():
            return
        self.to_load = None
        if not mine:  # assigned nothing: no asks to dedupe against, no budget of a partition to seed
            self.asked.replace(())
            return
        try:
            s = self.settings
            assert self._producer is not None
            clock = await broker_now(self._producer, s.asked_topic, min(mine))
            now, mono = time.time(), asyncio.get_running_loop().time()  # the moment the broker said `clock`
            records, appended = await read_asked(s, mine, since=now - self.asked.keep)
        except Exception:  # we cannot know what was sent: assume the worst, a full window
            log.exception("resolver: reading the asked log back failed; waiting out one window")
            if self.budget is not None:
                self.budget.assume_full_window()
            return
        self.asked.replace(records)
        self.asked.prune(now)
        recent: list[float] = []
        ours = 0
        left = broker_clock(appended, clock, now) if clock is not None else {}
        skew = ahead(records, now)
        if skew > SKEW_MARGIN:
            log.warning(
                "resolver: the asked log holds a request %.1fs after this worker's clock: a clock runs ahead "
                "(fix NTP); %s",
                skew,
                "measured by the broker's clock" if left else "counted as sent now",
            )
        if self.budget is not None:
            since = now - (self.budget.window + self.budget.slack)
            recent = request_times(records, since=since, now=now, left=left)
            # a rebalance can give us back the partition we had: our own requests are in the budget already
            theirs = [(ip, asked) for ip, asked in records if asked.at not in self._own_asks]
            others = request_times(theirs, since=since, now=now, left=left)
            ours = len(recent) - len(others)
            self.budget.note_sends([mono - (now - at) for at in others])
        log.info(
            "resolver: asked log loaded for resolve partitions %s: %d IPs, %d requests in the current window "
            "(%d of them ours)",
            sorted(mine),
            len(self.asked),
            len(recent),
            ours,
        )

    async def _pause(self, seconds: float) -> None:
        """Sleep, but end at once when the service stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


def answer_label(result: LookupResult | None) -> tuple[str, str]:
    """(provider, outcome) of one answer for the metrics: resolved, permanent or transient."""
    if result is None:
        return "none", "transient"
    outcome = {Resolved: "resolved", PermanentFailure: "permanent"}.get(type(result), "transient")
    return result.provider, outcome
