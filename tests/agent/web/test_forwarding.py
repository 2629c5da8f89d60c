"""Forwarded lookups and readiness against hostile or careless peers (issue 19, items 3 and 13d): no
redirect followed, no oversized answer relayed, no peer outside the allowed networks asked, workers sharing
a URL unready, one broker check however many probes arrive at once."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from pipeline.web.server import FORWARD_BODY_MAX
from tests.agent.web.test_server import CHANGELOG, PARTITIONS, FakeStore, fake_geo, get, serving
from tests.support.kafka import wait_for

IP = "8.8.8.8"


@asynccontextmanager
async def peer(handler: Any) -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback HTTP server answering every path with `handler`; yields its URL and the paths it was
    asked for (what reached it)."""
    asked: list[str] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        asked.append(request.path)
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", asked
    finally:
        await runner.cleanup()


def owned_by(url: str) -> dict[str, Any]:
    """A distribution where `url` holds every partition of the table (so any IP is forwarded there)."""
    return {url: {CHANGELOG: list(range(PARTITIONS))}}


async def metadata_answer(request: web.Request) -> web.Response:
    return web.json_response({"AccessKeyId": "ASIA-not-for-you", "SecretAccessKey": "x"})


async def test_a_redirect_from_the_owner_is_not_followed() -> None:
    """An owner answering 302 to an internal URL (a cloud metadata endpoint, say): the worker answers 502
    and no request reaches the redirect's target."""
    async with peer(metadata_answer) as (internal, reached):

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPFound(f"{internal}/latest/meta-data/iam/security-credentials/role")

        async with peer(redirect) as (owner, _), serving(fake_geo(FakeStore({}), owned_by(owner))) as w:
            status, body, text = await get(f"{w.url}/geo/{IP}")
    assert reached == []
    assert status == 502 and "redirect" in body["error"] and "ASIA" not in text


async def test_an_oversized_answer_from_the_owner_is_not_relayed() -> None:
    """An owner answering more than FORWARD_BODY_MAX bytes: 502, and none of its body is relayed."""
    huge = b'{"pad":"' + b"a" * (8 * FORWARD_BODY_MAX) + b'"}'

    async def flood(request: web.Request) -> web.Response:
        return web.Response(body=huge, content_type="application/json")

    async with peer(flood) as (owner, reached), serving(fake_geo(FakeStore({}), owned_by(owner))) as w:
        status, body, text = await get(f"{w.url}/geo/{IP}")
    assert reached == [f"/geo/{IP}"]
    assert status == 502 and "too large" in body["error"] and len(text) < 1_000


async def test_an_owner_outside_the_allowed_networks_is_not_asked() -> None:
    """With GEO_FORWARD_NETWORKS set, an owner whose address (literal or resolved name) lies outside them
    gets no request; the lookup answers 502 naming the setting."""
    async with peer(metadata_answer) as (owner, reached):
        by_name = owner.replace("127.0.0.1", "localhost")
        for url in (owner, by_name):
            geo = fake_geo(FakeStore({}), owned_by(url))
            geo.settings = dataclasses.replace(geo.settings, forward_networks=("10.0.0.0/8",))
            async with serving(geo) as w:
                status, body, _ = await get(f"{w.url}/geo/{IP}")
            assert status == 502 and "GEO_FORWARD_NETWORKS" in body["error"], (url, body)
    assert reached == []


async def test_an_owner_inside_the_allowed_networks_answers() -> None:
    """An owner inside GEO_FORWARD_NETWORKS (by address or by name) is asked and its answer relayed."""

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"ip": IP, "entry": {"ip": IP}, "worker": {"url": "owner"}})

    async with peer(answer) as (owner, reached):
        for url in (owner, owner.replace("127.0.0.1", "localhost")):
            geo = fake_geo(FakeStore({}), owned_by(url))
            geo.settings = dataclasses.replace(geo.settings, forward_networks=("127.0.0.0/8", "::1/128"))
            async with serving(geo) as w:
                status, body, _ = await get(f"{w.url}/geo/{IP}")
            assert status == 200 and body["entry"]["ip"] == IP and "forwarded_by" in body
    assert len(reached) == 2


async def test_two_members_sharing_a_url_make_the_worker_unready() -> None:
    """Two group members advertising one URL (Faust merges them): /ready is 503 naming the URL."""
    geo = fake_geo(FakeStore({}), {})
    async with serving(geo) as w:
        geo.app.assignor.changelog_distribution = {w.url: {CHANGELOG: [0, 1, 2, 3]}}
        geo.members = [w.url]
        assert (await get(f"{w.url}/ready"))[0] == 200
        geo.members = [w.url, w.url]
        w._members.expire()  # let the next check ask again (it is cached like the broker's)
        status, body, _ = await get(f"{w.url}/ready")
    assert status == 503
    assert any("advertise" in r and w.url in r for r in body["reasons"]), body["reasons"]


class CountingAssignor:
    """The fake app's assignor, counting how often readiness read its distribution."""

    def __init__(self, distribution: dict[str, Any]) -> None:
        self._distribution = distribution
        self.reads = 0

    @property
    def changelog_distribution(self) -> dict[str, Any]:
        self.reads += 1
        return self._distribution


async def test_concurrent_readiness_probes_share_one_broker_check() -> None:
    """Twenty /ready calls arriving while the broker check is slow cause one broker request, not twenty."""
    geo = fake_geo(FakeStore({}), {})
    gate = asyncio.Event()
    calls = 0

    async def slow_broker(timeout: float) -> bool:
        nonlocal calls
        calls += 1
        await gate.wait()
        return True

    geo.hotpath.broker_reachable = slow_broker
    async with serving(geo) as w:
        assignor = CountingAssignor({w.url: {}})
        geo.app.assignor = assignor
        w._broker.expire()  # the cached answer has expired
        probes = [asyncio.create_task(get(f"{w.url}/ready")) for _ in range(20)]
        await wait_for(lambda: assignor.reads >= 20, 10, message="twenty probes inside readiness")
        gate.set()
        answers = await asyncio.gather(*probes)
    assert [status for status, _, _ in answers] == [200] * 20
    assert calls == 1 and w._broker.runs == 1
