"""The stop's bounded wait for the batch in hand (`bound_stop_drain`), around a stand-in for Faust's app."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.kafka.stopping import bound_stop_drain


class App:
    """The two things the patch reads: whether the app is stopping, and Faust's wait for the streams."""

    def __init__(self, stopping: bool) -> None:
        self.should_stop = stopping
        self.waits = 0
        self.done = asyncio.Event()

    async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
        """Faust's loop: runs while a message awaits its ack, and a cancel does not end it."""
        self.waits += 1
        while consumer._unacked_messages and not self.done.is_set():
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self.done.wait(), 0.01)


def consumer() -> Any:
    return SimpleNamespace(_unacked_messages={"a record never acked"})


async def test_a_stop_gives_up_on_a_batch_that_never_finishes(caplog: pytest.LogCaptureFixture) -> None:
    """Stopping, Faust's wait (which ignores a cancel) ends after the bound, with a warning."""
    app = App(stopping=True)
    bound_stop_drain(app, 0.05)  # type: ignore[arg-type]
    await asyncio.wait_for(app._consumer_wait_empty(consumer(), None), 30)
    assert app.waits == 1
    assert "1 record(s) still in hand" in caplog.text


async def test_a_rebalance_keeps_fausts_wait() -> None:
    """Not stopping (a rebalance): the wait lasts until the batch is acked, past the bound."""
    app = App(stopping=False)
    bound_stop_drain(app, 0.01)  # type: ignore[arg-type]
    waiting = asyncio.ensure_future(app._consumer_wait_empty(consumer(), None))
    await asyncio.sleep(0.1)  # ten bounds: the bound is not applied
    assert not waiting.done()
    app.done.set()
    await asyncio.wait_for(waiting, 30)


async def test_installing_twice_wraps_once() -> None:
    """A second install is a no-op."""
    app = App(stopping=True)
    bound_stop_drain(app, 0.05)  # type: ignore[arg-type]
    first = app._consumer_wait_empty
    bound_stop_drain(app, 0.05)  # type: ignore[arg-type]
    assert app._consumer_wait_empty == first
