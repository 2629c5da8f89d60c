"""No offset is committed past a record the worker failed to send: crash and replay instead of skipping.

Why: Faust flushes its producer before every offset commit (`faust/transport/consumer.py`,
`Consumer._commit_offsets`), but the flush reports no delivery error: a resolved record, a resolve request or
a changelog write that failed is simply gone, and the input that caused it is committed. Every record the
Faust side of a worker sends (the cache agent, the retry timer, table changelogs) goes through the app's
producer, so the guard wraps that producer's `send`: a failed send (raised, or its delivery future failed)
is remembered, the next commit is refused, and the worker crashes. Its inputs are replayed from the last
commit by whoever owns them next; every step is idempotent, so a replay repeats, never loses.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

log = logging.getLogger(__name__)


class DeliveryGuard:
    """Watches every send of one Faust app and refuses its commits once one has failed."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self.failure: BaseException | None = None
        self.sent = 0
        self._crashing: asyncio.Future[None] | None = None

    def install(self) -> None:
        """Wrap the app's producer `send` and its consumer's commit; call before the app starts."""
        producer: Any = self.app.producer
        consumer: Any = self.app.consumer
        send, commit = producer.send, consumer._commit

        async def guarded_send(*args: Any, **kwargs: Any) -> Any:
            try:
                future = await send(*args, **kwargs)
            except Exception as exc:
                self._failed(exc, args[0] if args else kwargs.get("topic"))
                raise
            self.sent += 1
            future.add_done_callback(lambda f, topic=args[0] if args else None: self._check(f, topic))
            return future

        async def guarded_commit(offsets: Any) -> bool:
            if self.failure is not None:
                log.error(
                    "commit refused: a send failed (%r); the worker stops, its input is replayed",
                    self.failure,
                )
                return False
            return bool(await commit(offsets))

        producer.send = guarded_send
        consumer._commit = guarded_commit

    def _check(self, future: asyncio.Future[Any], topic: Any) -> None:
        if future.cancelled():
            self._failed(asyncio.CancelledError("send cancelled"), topic)
        elif future.exception() is not None:
            self._failed(future.exception(), topic)  # type: ignore[arg-type]  # checked just above

    def _failed(self, exc: BaseException, topic: Any) -> None:
        first = self.failure is None
        self.failure = self.failure or exc
        if first:
            log.error("a record to %s was not delivered (%r): refusing commits and stopping", topic, exc)
            self._crashing = asyncio.ensure_future(self.app.crash(exc))
