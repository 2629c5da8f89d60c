"""IpApiProvider against a tiny local server: what it sends, how it maps each answer, what it never leaks."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pipeline.config.limits import FREE_TIER_REQUESTS, FREE_TIER_WINDOW
from pipeline.config.secret import Secret
from pipeline.models import Resolved, TransientFailure
from pipeline.providers.base import GeoProvider
from pipeline.providers.ipapi import (
    IpApiProvider,
)
from pipeline.providers.throttle import ResolveBudget
from tests.support.ipapi_items import GOOGLE, KEY

# -- IpApiProvider against a local server -----------------------------------------------------------------


class FakeClock:
    """Fake monotonic time for the budget, so nothing in these tests waits on the rate limit."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def local_server(handler: Handler) -> AsyncIterator[tuple[str, list[web.Request], list[Any]]]:
    """Serve `handler` at /batch on 127.0.0.1, a free port; yield (base URL, requests, JSON bodies)."""
    seen: list[web.Request] = []
    bodies: list[Any] = []

    async def recording(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        bodies.append(await request.json())
        return await handler(request)

    app = web.Application()
    app.router.add_post("/batch", recording)
    runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)  # its log would show the key
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", seen, bodies
    finally:
        await runner.cleanup()


def answer(status: int, payload: object, rl: int = 14, ttl: int = 60) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.json_response(payload, status=status, headers={"X-Rl": str(rl), "X-Ttl": str(ttl)})

    return handle


async def run_provider(
    handler: Handler, ips: list[str], *, timeout: float = 5.0, rounds: int = 1, base: str | None = None
) -> tuple[list[dict[str, Any]], ResolveBudget, list[web.Request], list[Any]]:
    budget = ResolveBudget(
        FakeClock(), limit=FREE_TIER_REQUESTS, window=FREE_TIER_WINDOW, rng=random.Random(0)
    )
    async with local_server(handler) as (url, seen, bodies), aiohttp.ClientSession() as session:
        provider: GeoProvider = IpApiProvider(
            session, budget, base_url=base or url, api_key=Secret(KEY), timeout=timeout
        )
        results = [dict(await provider.resolve(ips)) for _ in range(rounds)]
    return results, budget, seen, bodies


def reasons(results: list[dict[str, Any]]) -> list[str]:
    return [r.reason for batch in results for r in batch.values() if not isinstance(r, Resolved)]


def test_provider_success_sends_key_and_fields_and_feeds_headers_to_budget() -> None:
    """A 200 is parsed, the key reaches the server, items carry fields, and X-Rl/X-Ttl reach the budget."""
    results, budget, seen, bodies = asyncio.run(
        run_provider(answer(200, [GOOGLE], rl=11, ttl=42), ["8.8.8.8", "8.8.8.8", "1.1.1.1"])
    )
    assert isinstance(results[0]["8.8.8.8"], Resolved)
    assert results[0]["1.1.1.1"] == TransientFailure("missing from response", "ipapi")
    assert seen[0].query["key"] == KEY
    assert [item["query"] for item in bodies[0]] == ["8.8.8.8", "1.1.1.1"]
    assert all(item["fields"].startswith("status,message,query") for item in bodies[0])
    state = budget.snapshot()
    assert (state.sent, state.server_remaining, state.server_reset_at) == (1, 11, 43.0)


def test_provider_x_rl_zero_stops_the_next_call_without_sending() -> None:
    """After X-Rl 0 the provider fails the next batch as 'rate budget exhausted' and sends nothing."""
    handler = answer(200, [GOOGLE], rl=0, ttl=30)
    results, budget, seen, _ = asyncio.run(run_provider(handler, ["8.8.8.8"], rounds=2))
    assert len(seen) == 1
    assert results[1]["8.8.8.8"] == TransientFailure("rate budget exhausted", "ipapi")
    assert budget.delay() == pytest.approx(31.0)


def test_provider_maps_429_to_transient_and_pauses_the_budget() -> None:
    """A 429 is a transient 'rate limited' for every IP, pauses the budget and halves its rate."""
    handler = answer(429, {"message": "slow"}, rl=0, ttl=20)
    results, budget, _, _ = asyncio.run(run_provider(handler, ["8.8.8.8"]))
    assert results[0]["8.8.8.8"] == TransientFailure("rate limited", "ipapi")
    assert budget.delay() == pytest.approx(21.0)
    assert budget.effective_limit == 7 and budget.snapshot().rate_limited == 1


@pytest.mark.parametrize("status", [503, 422, 404])
def test_provider_maps_error_statuses_to_transient(status: int) -> None:
    """5xx and unexpected 4xx are transient 'HTTP <status>' and count as failures in the budget."""
    results, budget, _, _ = asyncio.run(run_provider(answer(status, {}), ["8.8.8.8"]))
    assert results[0]["8.8.8.8"] == TransientFailure(f"HTTP {status}", "ipapi")
    assert budget.snapshot().consecutive_failures == 1


def test_provider_timeout_is_transient_and_key_never_leaks(caplog: pytest.LogCaptureFixture) -> None:
    """A server slower than the timeout gives a transient failure; the key appears in no reason or log."""
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        with suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), 2.0)
        return web.json_response([])

    async def scenario() -> tuple[list[dict[str, Any]], ResolveBudget]:
        try:
            results, budget, _, _ = await run_provider(stall, ["8.8.8.8"], timeout=0.2)
        finally:
            release.set()
        return results, budget

    with caplog.at_level(logging.DEBUG):
        results, budget = asyncio.run(scenario())
    assert isinstance(results[0]["8.8.8.8"], TransientFailure)
    assert budget.snapshot().transport_failures == 1
    assert not any(KEY in reason for reason in reasons(results))
    assert KEY not in caplog.text and "s3cr3t" not in caplog.text


def test_provider_connection_refused_is_transient_without_the_key(caplog: pytest.LogCaptureFixture) -> None:
    """A connection error becomes a transient failure whose reason and log omit the key."""

    async def scenario() -> tuple[list[dict[str, Any]], ResolveBudget, list[web.Request], list[Any]]:
        return await run_provider(answer(200, []), ["8.8.8.8"], base="http://127.0.0.1:1")

    with caplog.at_level(logging.DEBUG):
        results, budget, _, _ = asyncio.run(scenario())
    assert results[0]["8.8.8.8"].reason.startswith("transport error")
    assert budget.snapshot().transport_failures == 1
    assert KEY not in " ".join(reasons(results)) and "s3cr3t" not in caplog.text


def test_provider_caps_the_body_size() -> None:
    """A response larger than the cap is dropped as a transient 'response too large'."""

    async def huge(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"[" + b" " * (2 << 20) + b"]", headers={"X-Rl": "10", "X-Ttl": "5"})

    results, _, _, _ = asyncio.run(run_provider(huge, ["8.8.8.8"]))
    assert results[0]["8.8.8.8"] == TransientFailure("response too large", "ipapi")


def test_provider_refuses_oversized_batches_without_sending() -> None:
    """More than 100 distinct IPs are failed transiently and nothing is sent."""
    ips = [f"1.1.{i // 250}.{i % 250}" for i in range(101)]
    results, budget, seen, _ = asyncio.run(run_provider(answer(200, []), ips))
    assert not seen and budget.snapshot().sent == 0
    assert set(results[0].values()) == {TransientFailure("batch over 100", "ipapi")}


def test_provider_empty_batch_sends_nothing() -> None:
    """An empty batch returns no results and spends no budget."""
    results, budget, seen, _ = asyncio.run(run_provider(answer(200, []), []))
    assert results == [{}] and not seen and budget.snapshot().sent == 0
