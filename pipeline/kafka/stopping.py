"""A stop waits a bounded time for the batch in hand, then goes on without it.

Faust stops its consumer first, and before that waits until every message handed to a stream is acked
(`App._stop_consumer` -> `_consumer_wait_empty` -> `Consumer.wait_empty`, faust/app/base.py and
faust/transport/consumer.py), with no limit. One message never acked (one left behind in a take buffer
when Faust restarted a crashed agent) held a stop forever: a test waited out CI's 90 minutes in that loop
(tests/integration/cache/test_stop_mid_batch.py), and a worker would ignore SIGTERM the same way.

`bound_stop_drain(app, seconds)`: at a stop (not at a rebalance, which keeps Faust's wait) the wait ends
after `seconds` (Faust's loop ignores a cancel: the consumer's set of messages awaiting an ack is emptied,
which ends it); the agents are then cancelled, the cache agent withholds the acks of its unfinished batch
and its partitions commit no further than it (`pipeline/kafka/commits.py`), so the next start replays it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

log = logging.getLogger(__name__)

# s a stop waits for the batch in hand: twice the 10 s the fault suite allows a whole stop, and under the 30 s
# an orchestrator commonly grants before SIGKILL (the worker exits on its own, having committed what it did)
STOP_DRAIN = 20.0


def give_up(consumer: Any, seconds: float) -> None:
    """End Faust's wait: its loop runs while the consumer's set of messages awaiting an ack is not empty
    and swallows a cancel (`_wait_for_ack`); emptied, the loop ends at its next look (each second) and
    commits what was acked. A commit never reads the set."""
    if not consumer._unacked_messages:
        return
    log.warning(
        "stop: %d record(s) still in hand after %.0fs; stopping without them (not committed: the next start "
        "reads them again)",
        len(consumer._unacked_messages),
        seconds,
    )
    consumer._unacked_messages.clear()


def bound_stop_drain(app: faust.App, seconds: float = STOP_DRAIN) -> None:
    """Patch `app` (before it starts): its stop waits at most `seconds` for its streams to ack."""
    if getattr(app, "_geo_stop_drain", False):
        return
    target: Any = app  # the instance patch below replaces a private method of the App class
    original = target._consumer_wait_empty  # called by App._stop_consumer

    async def _consumer_wait_empty(consumer: Any, logger: Any) -> None:
        if not app.should_stop:  # a rebalance: the revoked partitions' batches are waited for, as Faust does
            await original(consumer, logger)
            return
        # Faust's wait runs as it always did, in this task; only when it outlasts the bound is it ended
        timer = asyncio.get_running_loop().call_later(seconds, give_up, consumer, seconds)
        try:
            await original(consumer, logger)
        finally:
            timer.cancel()

    target._consumer_wait_empty = _consumer_wait_empty
    target._geo_stop_drain = True
