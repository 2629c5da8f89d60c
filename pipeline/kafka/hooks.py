"""The private Faust and aiokafka names this package hooks, and a start-up check that each is still on its
call path, so a new Faust or aiokafka cannot switch a fix off without a word.

Every fix in `faustx.py` and `commits.py` (the delivery guard, the commit gap hold, the unfinished batch,
the rewind, the fetch snapshot, the livelock check, the stall watch) and the geo table's store
(`pipeline/cache/table.py`) replaces or reads a private name. If a release renamed the name, or its caller
stopped calling it, the patch would sit on an attribute nobody calls and the worker would run without the
fix. pyproject.toml pins the releases these were checked against; `require()` checks the installed ones at
every start: each hooked name must exist where it is hooked, and the function that calls it (read from its
source) must still name it. A worker where one is missing refuses to start
with one error naming every hook that is off its path (`HooksOffPath`, exit 2 from the CLI).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pipeline.errors import PipelineError

CHECKED_WITH = ("faust-streaming", "aiokafka", "mode-streaming")  # named in the error, with their versions


class HooksOffPath(PipelineError):
    """A hooked private Faust/aiokafka name is gone or no longer called: the fix behind it would be off."""


@dataclass(frozen=True)
class Hook:
    """One private name we patch or read: `owner.attribute` must exist, and `caller` (when given) must
    still contain `call` in its source: the call through which Faust reaches our hook."""

    fix: str  # what depends on it, as the error names it ("fetch snapshot")
    owner: Any  # the class holding the name
    attribute: str
    caller: tuple[Any, str] | None = None  # (class, method) that must call it; None: reading it is the hook
    call: str = ""  # text of the call in the caller's source, e.g. "self._fetch_records"

    @property
    def where(self) -> str:
        return f"{_name(self.owner)}.{self.attribute}"


def problems(hooks: Sequence[Hook]) -> list[str]:
    """One line per hook that is not on its call path (empty: every hook is)."""
    found = []
    for hook in hooks:
        if not hasattr(hook.owner, hook.attribute):
            found.append(f"{hook.fix}: {hook.where} no longer exists")
            continue
        if hook.caller is None:
            continue
        holder, method = hook.caller
        caller = f"{_name(holder)}.{method}"
        try:
            source = inspect.getsource(getattr(holder, method))
        except (AttributeError, OSError, TypeError):
            found.append(f"{hook.fix}: the source of {caller} cannot be read to find its call")
            continue
        if hook.call not in source:
            found.append(f"{hook.fix}: {caller} no longer calls {hook.call} ({hook.where})")
    return found


def require(hooks: Sequence[Hook]) -> None:
    """HooksOffPath naming every hook off its call path, and the installed versions; else nothing."""
    found = problems(hooks)
    if found:
        raise HooksOffPath(
            "refusing to start: a fix that hooks Faust/aiokafka internals would be off ("
            + "; ".join(found)
            + f"); installed {installed()}: install the versions pinned in pyproject.toml (constraints.txt)"
        )


def installed() -> str:
    """`name version` of the libraries the hooks were checked with."""
    parts = []
    for name in CHECKED_WITH:
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return ", ".join(parts)


def _name(obj: Any) -> str:
    return str(getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or obj)


def faust_hooks() -> list[Hook]:
    """The hooks of `faustx.py` (the worker's consumer, producer and app) and of the geo table's store."""
    import faust.streams as streams
    from aiokafka import AIOKafkaConsumer as Client
    from aiokafka.consumer.subscription_state import Assignment, SubscriptionState, TopicPartitionState
    from faust.app.base import App
    from faust.stores.base import SerializedStore
    from faust.stores.rocksdb import Store
    from faust.tables.base import Collection
    from faust.tables.table import Table
    from faust.transport.consumer import Consumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
    from faust.types.tuples import Message

    Stream = streams.Stream

    thread = AIOKafkaConsumerThread
    return [
        Hook("cache batch", streams, "_current_event", (streams, "current_event"), "_current_event.get("),
        Hook("cache batch", Table, "partition_for_key", (Table, "on_key_set"), "self.partition_for_key("),
        Hook("unfinished batch", Message, "acked", (Message, "ack"), "if not self.acked"),
        Hook("unfinished batch", Stream, "ack", (Stream, "take_events"), "await self.ack(event)"),
        Hook(
            "commit gap hold",
            Consumer,
            "_new_offset",
            (Consumer, "_filter_committable_offsets"),
            "self._new_offset(",
        ),
        # a floor is lifted when its record is acked again: Consumer.ack records the offset in this index
        Hook("commit floor", Consumer, "ack", (Consumer, "ack"), "self._acked_index[tp]"),
        Hook("stop drain", App, "_consumer_wait_empty", (App, "_stop_consumer"), "._consumer_wait_empty("),
        Hook("delivery guard", Consumer, "_commit", (Consumer, "_commit_offsets"), "self._commit("),
        Hook("delivery guard", AIOKafkaConsumer, "_commit"),
        Hook("rewind", Consumer, "seek_to_committed", (Consumer, "perform_seek"), "self.seek_to_committed("),
        Hook("rewind", Consumer, "_is_changelog_tp"),
        Hook("rewind", thread, "seek_to_beginning"),
        Hook("fetch snapshot", thread, "_fetch_records", (thread, "getmany"), "self._fetch_records"),
        Hook(
            "livelock check",
            thread,
            "verify_event_path",
            (AIOKafkaConsumer, "verify_event_path"),
            "self._thread.verify_event_path(",
        ),
        Hook("stall watch", thread, "_ensure_consumer"),
        Hook("stall watch", thread, "call_thread"),
        Hook("stall watch", Client, "__init__", (Client, "__init__"), "self._subscription = "),
        Hook("stall watch", SubscriptionState, "subscription"),
        Hook("stall watch", Assignment, "state_value"),
        Hook("stall watch", TopicPartitionState, "has_valid_position"),
        Hook(
            "start with the app",
            App,
            "on_started_init_extra_services",
            (App, "on_started_init_extra_services"),
            "self._extra_services",
        ),
        Hook("geo table store", SerializedStore, "_set", (SerializedStore, "__setitem__"), "self._set("),
        Hook("geo table store", SerializedStore, "_del", (SerializedStore, "__delitem__"), "self._del("),
        Hook(
            "geo table store",
            Store,
            "apply_changelog_batch",
            (Collection, "apply_changelog_batch"),
            "self.data.apply_changelog_batch(",
        ),
        Hook(
            "geo table store",
            Store,
            "_open_for_partition",
            (Store, "_db_for_partition"),
            "self._open_for_partition(",
        ),
        Hook("geo table store", Store, "_dbs_for_actives"),
        Hook("geo table store", Store, "_visible_keys", (Store, "_iterkeys"), "self._visible_keys("),
        Hook("geo table store", Store, "_visible_items", (Store, "_iteritems"), "self._visible_items("),
        Hook(
            "geo table store",
            Collection,
            "_new_store_by_url",
            (Collection, "_new_store"),
            "self._new_store_by_url(",
        ),
    ]
