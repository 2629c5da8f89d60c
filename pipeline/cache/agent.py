"""The cache agent: the only writer of the geo table. Seen IPs and results in; entries, asks and answers out.

Inputs, both keyed by the normalised IP and co-partitioned with the table (same partition count, same key
bytes), because Faust writes a table change to the changelog partition of the event being processed:
- `<app>-ips-seen`: a worker saw an IP for the first time (the hot path already enriched its events);
- `<app>-geo-results`: a provider's answer (from the resolver) or a retry (from the timer).
For each, a pure function in `policy` decides; the agent writes the entry, publishes it to the resolved
topic (key = IP, compacted: consumers and every worker's replica read it) and asks the resolver.

Faust rules this module lives by: a table is written only with an input event current (a write from a
timer raises), and the change goes to that event's changelog partition. The agent consumes
`stream.take_events(BATCH_MAX, BATCH_WITHIN)`: Faust acks a batch's events only once the agent asks for
the next batch, so nothing of a batch is committed before all of it is applied; a batch left unfinished (the
task cancelled by a stop, a fatal error) has its acks withheld (`faustx.withhold_acks`), since the take
buffer acks it when it is closed all the same. Each event of the batch
is made current while it is decided and applied (`faustx.as_current`), its writes go through Faust's
`Table.on_key_set` (the changelog record, to its own partition) and are gathered into one RocksDB write
batch per partition, its reads come from one multi-get per partition, a key repeated in the batch reads
its own earlier write, and the records go out in order once the batch is written (`pipeline/cache/batch.py`).
An exception escaping the agent acks and loses the batch, so a bug in decoding or deciding one record
(`BUGS`: a replay would fail the same way) is logged and that record skipped, and anything else (a store
I/O error: disk full) refuses every commit and stops the worker (`fatal`, the delivery guard's), so the
batch is replayed after a restart instead of acked with its writes lost; concurrency 1, because
concurrent iterations can commit past an unfinished batch. A failed send is caught by
`faustx.DeliveryGuard`, which refuses the commit and crashes the worker, so the batch is replayed instead
of skipped; every decision is idempotent, so a replay repeats work, never loses it. A replay also writes
the current entry again when it changes nothing: a crash between the store's write batch and the
changelog records' delivery keeps on this disk writes the changelog never got.
"""

from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import faust

from pipeline.addresses import normalise_ip
from pipeline.cache.batch import Outbox, TableBatch, by_partition
from pipeline.cache.operator import on_forget, on_operator_retry
from pipeline.cache.policy import Decision, RetryPolicy, apply_result, on_reanswer, on_retry, on_seen
from pipeline.config.settings import Settings
from pipeline.errors import InvalidAddress
from pipeline.kafka.faustx import as_current, withhold_acks
from pipeline.messages import (
    ForgetMessage,
    OperatorRetry,
    ReanswerMessage,
    ResolveRequest,
    RetryMessage,
    decode_results_message,
    decode_seen,
    encode_resolve_request,
)
from pipeline.models import GeoEntry
from pipeline.stats import Stats

log = logging.getLogger(__name__)

BATCH_MAX = 500  # input events applied together: one multi-get and one write batch per partition for them
BATCH_WITHIN = 0.05  # s a batch waits to fill: bounds the delay a lone first sight gets on a quiet stream
ECHO_EVERY = 10.0  # s: a known IP's entry is echoed for first sights at most this often (bounds a burst)
ECHOED_MAX = 100_000  # IPs whose last echo is remembered (~100 B each); the oldest go first

# decode and policy bugs: the same input fails the same way on every replay, so it is logged and skipped;
# everything else (rocksdict raises plain Exception on I/O errors, OSError, a failed send) stops the worker
BUGS = (ValueError, TypeError, LookupError, AttributeError, ArithmeticError, AssertionError)

RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


class CacheAgent:
    """Applies seen records, results and retries to the geo table, a batch of events at a time."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        table: Any,
        policy: RetryPolicy,
        stats: Stats,
        first_sight: Callable[[str, float], GeoEntry],
        fatal: Callable[[BaseException, str], None] | None = None,
    ) -> None:
        self.app, self.settings, self.table, self.policy, self.stats = app, settings, table, policy, stats
        self._fatal = fatal  # (error, where): refuse commits and stop the worker (the delivery guard's)
        self._first_sight = first_sight  # (ip, now) -> the entry of an IP never seen before
        self._rng = random.Random()
        self._by = settings.worker_label  # named in resolve requests: who asked, for operators and tests
        self._echoed: OrderedDict[bytes, float] = OrderedDict()  # IP -> when its entry was last echoed
        self.inputs = app.topic(
            settings.seen_topic, settings.results_topic, partitions=settings.partitions, **RAW
        )

    def register(self) -> None:
        """Declare the agent on the app (nothing runs until the app starts)."""
        self.app.agent(self.inputs, concurrency=1, name="geo-cache")(self._run)

    async def _run(self, stream: Any) -> None:
        async for events in stream.take_events(BATCH_MAX, BATCH_WITHIN):  # acked after the batch
            try:
                await self.handle_batch(events)
            except BaseException:  # cancelled by a stop, or fatal: the take buffer would ack it all the same
                withhold_acks(events, self.app.consumer)
                raise

    async def handle_batch(self, events: Sequence[Any]) -> None:
        """Apply a batch of input events in order: each decided and written with its event current, the
        store writes in one write batch per partition, then every record sent. A bug skips its event only;
        anything else stops the worker with no event of the batch committed."""
        table, outbox = TableBatch(self.table), Outbox()
        where = _where(events[0].message) if events else "an empty batch"
        try:
            ips = {event.key: _ip_key(event.key) for event in events}  # parsed once per key, not per use
            table.prefetch(by_partition((e.message.partition, e.key) for e in events if ips[e.key]))
            for event in events:
                msg = event.message
                where = _where(msg)
                try:
                    with as_current(event):
                        where_ = (msg.topic, msg.partition, msg.offset)
                        self._apply(table, outbox, where_, event.key, event.value, ips[event.key])
                except BUGS:  # replaying it would fail the same way: logged, counted, skipped
                    self.stats.errors += 1
                    log.exception("cache agent failed on %s", where)
            where = f"the write batch ending at {where}"
            table.flush()
            where = f"the records of the batch ending at {_where(events[-1].message)}" if events else where
            await outbox.send(self.app.producer.send)
        except Exception as exc:  # a store I/O error, a send refused: never ack the batch; stop, replay it
            log.critical("cache agent: %r on %s: stopping the worker, the batch is replayed", exc, where)
            if self._fatal is not None:
                self._fatal(exc, where)
            raise

    async def handle(self, where: tuple[str, int, int], key: bytes | None, value: bytes | None) -> None:
        """One input record from (topic, partition, offset) as a batch of its own; call with its event
        current (a table write needs it)."""
        table, outbox = TableBatch(self.table), Outbox()
        self._apply(table, outbox, where, key, value, _ip_key(key))
        table.flush()
        await outbox.send(self.app.producer.send)

    def _apply(
        self,
        table: TableBatch,
        outbox: Outbox,
        where: tuple[str, int, int],
        key: bytes | None,
        value: bytes | None,
        ip: str | None,
    ) -> None:
        """Decide one input record (`ip`: its key as a normalised IP, or None) and stage what it does
        (nothing awaited: see `pipeline/cache/batch.py`)."""
        topic = where[0]
        if ip is None:
            self._malformed(where, "key is not a normalised IP", key)
            return
        assert key is not None  # _ip_key returned an IP
        raw = table.get(where[1], key)
        old = GeoEntry.from_json(raw) if raw else None
        now = time.time()
        if topic == self.settings.seen_topic:
            seen = decode_seen(value)
            if seen is None:
                self._malformed(where, "not a seen record", value)
                return
            self.stats.seen_applied += 1
            fresh = self._first_sight(ip, now) if old is None else None
            decision = on_seen(old, fresh, now, self.policy, seen.first)
            if decision.echo and not self._echo_due(key, now):  # echoed a moment ago: once is enough
                decision = replace(decision, echo=False)
            self.stats.entries_created += old is None
        else:
            message = decode_results_message(value)
            if message is None:
                self._malformed(where, "not a result or retry", value)
                return
            if isinstance(message, RetryMessage):
                decision = on_retry(old, now, self.policy)
            elif isinstance(message, ReanswerMessage):
                decision = on_reanswer(old, self._first_sight(ip, now), now)
                self.stats.reanswered += decision.entry is not None
            elif isinstance(message, OperatorRetry):
                decision = on_operator_retry(old, message.at, message.statuses)
            elif isinstance(message, ForgetMessage):
                decision = on_forget(old)
            else:
                new = apply_result(old, message.attempt, message.result, now, self.policy, self._rng)
                self.stats.results_applied += new is not None
                decision = Decision(new, publish=True)  # a duplicate republishes the current entry
        self._carry_out(table, outbox, where[1], key, decision, old)

    def _carry_out(
        self,
        table: TableBatch,
        outbox: Outbox,
        partition: int,
        key: bytes,
        decision: Decision,
        old: GeoEntry | None,
    ) -> None:
        resolved = self.settings.resolved_topic
        if decision.delete:
            # idempotent and replay-safe: an absent entry is deleted again (the store ignores it, the
            # changelog gets its tombstone again), so a crash after the store's delete and before either
            # tombstone went out is repaired by the replay. The store drops the index keys in the same write.
            table.delete(key)
            outbox.add(resolved, key, None)  # every near cache forgets
            self.stats.forgotten += old is not None
            return
        entry = decision.entry or old
        if entry is None:
            return
        value = entry.to_json()
        if decision.entry is not None or decision.publish:
            # the store indexes it in the same write; an unchanged entry that is republished (a replay, a
            # duplicate) is written again so its changelog record goes out again (same value, same index key)
            table.set(partition, key, entry, value)
        if (decision.publish or decision.echo) and outbox.add(resolved, key, value):
            self.stats.resolved_published += 1
            self.stats.echoed += decision.echo and not decision.publish
        if decision.resolve_attempt is not None:
            request = ResolveRequest(entry.ip, decision.resolve_attempt, self._by)
            self.stats.resolve_sent += outbox.add(
                self.settings.resolve_topic, key, encode_resolve_request(request)
            )

    def _echo_due(self, key: bytes, now: float) -> bool:
        """Whether a first sight of a known IP may be answered with its entry now: at most once per
        ECHO_EVERY per IP, so a burst of workers all missing one IP costs one record, not one each."""
        last = self._echoed.get(key)
        if last is not None and now - last < ECHO_EVERY:
            return False
        self._echoed[key] = now
        self._echoed.move_to_end(key)
        if len(self._echoed) > ECHOED_MAX:
            self._echoed.popitem(last=False)
        return True

    def _malformed(self, where: tuple[str, int, int], why: str, data: bytes | None) -> None:
        self.stats.malformed += 1
        log.warning("cache agent: skipping %s[%d]@%d (%s): %r", *where, why, (data or b"")[:120])


def _where(msg: Any) -> str:
    return f"{msg.topic}[{msg.partition}]@{msg.offset}"


def _ip_key(key: bytes | None) -> str | None:
    """The record key as a normalised IP, or None when it is not one (a foreign or corrupt record)."""
    if not key or len(key) > 64:
        return None
    try:
        text = key.decode("ascii")
        return text if normalise_ip(text) == text else None
    except (UnicodeDecodeError, InvalidAddress, *BUGS):  # a parser bug marks the record, not the batch
        return None
