"""Run one `async def` test in a fresh event loop, bounded: a test that hangs fails with the stack of every
task still running, and the loop's clean-up cannot hang the session.

Why not `asyncio.run`: when pytest-timeout's alarm breaks into a stuck test, `asyncio.run` cancels the
remaining tasks and then waits, without limit, for each to finish and for the default executor's threads
to return. One task that swallows its cancel, or one thread blocked in a call, and the session waits
forever (a CI run once sat for the rest of its 90 minutes in one test). Here the test gets `limit`
seconds, then every task's stack is collected, the tasks are cancelled and given `SETTLE` seconds, and the
loop is closed whatever is left. Threads such a test started (Faust's consumer thread) would then keep the
process from exiting after the session: `abandoned` tells the session's end to exit at once
(tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
from collections.abc import Coroutine
from typing import Any

import pytest

CHAIN_MAX = 40  # frames shown per task: deep enough for Faust's service nesting
SETTLE = 10.0  # s for cancelled tasks (a worker's stop, producers closing) to finish


abandoned = False  # a test timed out: its loop is closed, but threads it started may keep the process alive


def run_bounded(coro: Coroutine[Any, Any, Any], limit: float) -> None:
    """Run `coro` to its end within `limit` seconds; past that, fail with the stacks of the tasks left."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # as asyncio.run does: code that asks for the current loop finds this one
    try:
        main = loop.create_task(coro)
        loop.run_until_complete(asyncio.wait([main], timeout=limit))
        if not main.done():
            global abandoned
            abandoned = True
            stacks = _stacks(loop)
            _cancel_all(loop)
            gc.collect()  # what the cancelled tasks leave is reported here, not in a later test
            pytest.fail(f"the test did not finish within {limit:.0f}s; tasks still running:\n{stacks}")
        main.result()  # the test's own failure or error, as raised
    finally:
        try:
            _cancel_all(loop)
            loop.run_until_complete(_bounded(loop.shutdown_asyncgens()))
            # threads blocked in a call are left behind rather than waited for without end
            loop.run_until_complete(_bounded(loop.shutdown_default_executor()))
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=SETTLE))
    for task in tasks:  # retrieve outcomes so none is reported as "never retrieved"
        if task.done() and not task.cancelled():
            task.exception()


async def _bounded(coro: Coroutine[Any, Any, None]) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(coro, SETTLE)


def _stacks(loop: asyncio.AbstractEventLoop) -> str:
    """Each pending task with its whole await chain (`Task.print_stack` shows only the outermost frame)."""
    lines = []
    for task in asyncio.all_tasks(loop):
        if task.done():
            continue
        lines.append(f"{task.get_name()}:")
        awaited: Any = task.get_coro()
        for _ in range(CHAIN_MAX):
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
            frame = frame or getattr(awaited, "gi_frame", None)
            if frame is None and type(awaited).__name__ == "async_generator_asend":
                # the generator an `asend` steps is reachable only through the garbage collector's view
                awaited = next((g for g in gc.get_referents(awaited) if inspect.isasyncgen(g)), None)
                frame = getattr(awaited, "ag_frame", None)
            if frame is None:
                if awaited is not None:
                    lines.append(f"    awaiting {awaited!r:.200}")
                break
            code = frame.f_code
            lines.append(f"    {code.co_filename}:{frame.f_lineno} in {code.co_name}")
            awaited = (
                getattr(awaited, "cr_await", None)
                or getattr(awaited, "ag_await", None)
                or getattr(awaited, "gi_yieldfrom", None)
            )
    return "\n".join(lines)
