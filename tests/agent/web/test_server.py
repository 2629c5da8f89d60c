"""The HTTP API against in-memory workers: answers from the owner (local or forwarded once), the status
codes, readiness reasons and the metrics text, without Kafka or Faust."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
from faust.types import TP

from pipeline.config.settings import Settings
from pipeline.hotpath.replica import Replica
from pipeline.hotpath.routing import NearCache
from pipeline.kafka.faustx import StallWatch
from pipeline.kafka.partitioner import key_hash
from pipeline.models import EntryStatus, GeoData, GeoEntry
from pipeline.providers.throttle import ResolveBudget
from pipeline.stats import Stats
from pipeline.web.server import WebServer, advertised_url, bind_listener, reachable_host

PARTITIONS = 4
CHANGELOG = "geo-geo-cache-changelog"


def entry(ip: str, status: EntryStatus = EntryStatus.RESOLVED) -> bytes:
    return GeoEntry(ip, status, geo=GeoData("US", "United States")).to_json()


def partition_of(ip: str) -> int:
    return key_hash(ip.encode()) % PARTITIONS


@dataclass
class FakeStore:
    """Active partitions as dicts of IP bytes -> entry JSON."""

    dbs: dict[int, dict[bytes, bytes]] = field(default_factory=dict)

    def active_partitions(self) -> list[tuple[int, dict[bytes, bytes]]]:
        return sorted(self.dbs.items())

    def entries_by_status(self) -> Counter[str]:
        return Counter(json.loads(v)["status"] for db in self.dbs.values() for v in db.values())


class FakeHotPath:
    def __init__(self) -> None:
        self.caught_up = asyncio.Event()
        self.caught_up.set()
        self.reachable = True
        self.replica = Replica(Path("unopened"))  # never opened: no disk bytes

    async def lag(self) -> dict[tuple[str, int], int]:
        return {("events", 0): 5, ("events", 1): 0}

    async def broker_reachable(self, timeout: float) -> bool:
        return self.reachable


def fake_geo(store: FakeStore, distribution: dict[str, Any], budget: ResolveBudget | None = None) -> Any:
    completed = asyncio.Event()
    completed.set()
    app = SimpleNamespace(
        rebalancing=False,
        tables=SimpleNamespace(recovery=SimpleNamespace(completed=completed)),
        assignor=SimpleNamespace(changelog_distribution=distribution),
    )
    return SimpleNamespace(
        settings=Settings.from_env({}, app_id="geo", partitions=PARTITIONS, worker_name="w"),
        app=app,
        table=SimpleNamespace(name="geo-cache"),
        store=store,
        stats=Stats(
            consumed=7,
            enriched=6,
            hits=4,
            new=2,
            dead_lettered=1,
            countries=Counter(US=5, private=1),
            fields_failed=Counter(invalid_ip=3),
            ips_skipped=9,
        ),
        near=NearCache(10),
        resolver=SimpleNamespace(budget=budget, offline={}),
        watch=SimpleNamespace(stalled=frozenset(), blind=None),
        hotpath=FakeHotPath(),
    )


async def distribution_members(geo: Any) -> list[str]:
    """The group's member URLs as the fake app's assignor holds them (a test may set `geo.members`)."""
    members = getattr(geo, "members", None)
    return list(members if members is not None else geo.app.assignor.changelog_distribution)


@asynccontextmanager
async def serving(geo: Any) -> AsyncIterator[WebServer]:
    sock = bind_listener("127.0.0.1", 0)
    url = advertised_url(geo.settings, sock.getsockname()[1])
    web = WebServer(geo, sock, url, members=lambda: distribution_members(geo))
    await web.start()
    try:
        yield web
    finally:
        await web.stop()


async def get(url: str) -> tuple[int, Any, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        text = await reply.text()
        body = json.loads(text) if reply.content_type == "application/json" else None
        return reply.status, body, text


async def test_owner_answers_locally_and_the_other_worker_forwards_once() -> None:
    """An IP of b's partition asked of a: a forwards to b, b answers from its table; the body names both."""
    ips = {partition_of(ip): ip for ip in (f"8.8.{i}.{j}" for i in range(4) for j in range(1, 20))}
    store_a, store_b = FakeStore({0: {}, 1: {}}), FakeStore({2: {}, 3: {}})
    for p, ip in ips.items():
        (store_a if p < 2 else store_b).dbs[p][ip.encode()] = entry(ip)
    distribution: dict[str, Any] = {}
    geo_a, geo_b = fake_geo(store_a, distribution), fake_geo(store_b, distribution)
    async with serving(geo_a) as a, serving(geo_b) as b:
        distribution.update({a.url: {CHANGELOG: [0, 1]}, b.url: {CHANGELOG: [2, 3]}})
        for p, ip in ips.items():
            status, body, _ = await get(f"{a.url}/geo/{ip}")
            assert status == 200 and body["entry"]["ip"] == ip and body["partition"] == p
            owner = a if p < 2 else b
            assert body["worker"]["url"] == owner.url
            assert ("forwarded_by" in body) is (owner is b)
        # b asked by a forwarded request for a partition it does not hold: no second hop
        async with aiohttp.ClientSession() as session:
            headers = {"X-Geo-Forwarded": a.url}
            async with session.get(f"{b.url}/geo/{ips[0]}", headers=headers) as reply:
                assert reply.status == 503 and reply.headers["Retry-After"] == "1"


async def test_status_codes_for_unknown_invalid_and_normalised_ips() -> None:
    """404 for an IP never seen, 400 for text that is not an IP, and an IPv4-mapped IPv6 is its IPv4."""
    ip = "8.8.8.8"
    store = FakeStore({p: {} for p in range(PARTITIONS)})
    store.dbs[partition_of(ip)][ip.encode()] = entry(ip)
    store.dbs[partition_of("10.1.2.3")][b"10.1.2.3"] = entry("10.1.2.3", EntryStatus.PRIVATE)
    async with serving(fake_geo(store, {})) as web:
        assert (await get(f"{web.url}/geo/::ffff:8.8.8.8"))[1]["entry"]["ip"] == ip
        assert (await get(f"{web.url}/geo/10.1.2.3"))[1]["entry"]["status"] == "private"
        status, body, _ = await get(f"{web.url}/geo/9.9.9.9")
        assert (status, body["error"]) == (404, "never seen")
        status, body, _ = await get(f"{web.url}/geo/010.1.1.1")
        assert status == 400 and body["error"].startswith("invalid ip")


async def test_no_owner_while_rebalancing_is_503_and_an_unreachable_owner_502() -> None:
    """A partition without an owner is retried later; an owner that does not answer is named."""
    store = FakeStore({})
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
    distribution = {f"http://127.0.0.1:{dead.getsockname()[1]}": {CHANGELOG: [0, 1, 2, 3]}}
    geo = fake_geo(store, {})
    async with serving(geo) as web:
        status, body, _ = await get(f"{web.url}/geo/8.8.8.8")
        assert status == 503 and "no owner" in body["error"]
        geo.app.assignor.changelog_distribution = distribution
        status, body, _ = await get(f"{web.url}/geo/8.8.8.8")
        assert status == 502 and body["owner"] in distribution
        geo.app.rebalancing = True
        assert (await get(f"{web.url}/geo/8.8.8.8"))[0] == 503
    dead.close()


async def test_health_always_ready_only_when_every_check_passes() -> None:
    """/health is 200 whatever the state; /ready turns 503 with the reasons (a stall, the broker)."""
    geo = fake_geo(FakeStore({}), {})
    async with serving(geo) as web:
        geo.app.assignor.changelog_distribution = {web.url: {}}
        assert (await get(f"{web.url}/ready"))[0] == 200
        geo.watch.stalled = frozenset({("geo-ips-seen", 2)})
        web._broker.expire()  # let the next check ask again
        geo.hotpath.reachable = False
        status, body, _ = await get(f"{web.url}/ready")
        assert status == 503 and body["ready"] is False
        assert any("geo-ips-seen[2]" in r for r in body["reasons"])
        assert any(r.startswith("broker unreachable") for r in body["reasons"])
        assert (await get(f"{web.url}/health"))[0] == 200


async def test_a_stall_watch_that_cannot_read_the_partitions_makes_the_worker_unready() -> None:
    """A stall watch whose look fails on a renamed internal (the consumer has no `_thread`) is blind: /ready
    turns 503 naming it, and turns back to 200 once a look succeeds."""
    geo = fake_geo(FakeStore({}), {})
    consumer = SimpleNamespace(flow_active=True, assignment=lambda: {TP("geo-ips-seen", 0)})
    consumer._is_changelog_tp = lambda tp: False
    geo.app.consumer = consumer
    geo.app.conf = SimpleNamespace(consumer_auto_offset_reset="earliest")
    geo.watch = StallWatch(geo.app, topics={"geo-ips-seen"})
    async with serving(geo) as web:
        geo.app.assignor.changelog_distribution = {web.url: {}}
        assert (await get(f"{web.url}/ready"))[0] == 200
        assert await geo.watch.check(now=0.0) == []
        status, body, _ = await get(f"{web.url}/ready")
        assert status == 503, body
        assert body["reasons"] == [
            "stall watch cannot read the partitions' state: AttributeError: "
            "'types.SimpleNamespace' object has no attribute '_thread'"
        ]
        consumer.assignment = lambda: set()  # nothing assigned: a look that succeeds
        await geo.watch.check(now=1.0)
        assert (await get(f"{web.url}/ready"))[0] == 200


async def test_metrics_text_has_the_pipeline_names_and_counts_api_requests() -> None:
    """Counters from Stats, per-status entries, lag per partition, the breaker and budget, and the API's
    own requests by route and status, in Prometheus text format."""
    loop_time = asyncio.get_running_loop().time
    budget = ResolveBudget(loop_time, limit=15, window=60)
    store = FakeStore({0: {b"1.1.1.1": entry("1.1.1.1")}})
    geo = fake_geo(store, {}, budget)
    async with serving(geo) as web:
        await get(f"{web.url}/geo/nonsense")
        status, _, text = await get(f"{web.url}/metrics")
    assert status == 200
    lines = set(text.splitlines())
    for expected in (
        "geo_events_in_total 7.0",
        "geo_near_cache_hits_total 4.0",
        "geo_near_cache_misses_total 2.0",
        'geo_table_entries{status="resolved"} 1.0',
        'geo_consumer_lag{partition="0",topic="events"} 5.0',
        'geo_ipapi_breaker_state{state="closed"} 1.0',
        "geo_ipapi_budget_left 15.0",
        'geo_http_requests_total{route="/geo/{ip}",status="400"} 1.0',
        'geo_events_by_country_total{country="US"} 5.0',
        'geo_events_by_country_total{country="private"} 1.0',
        'geo_ip_fields_failed_total{reason="invalid_ip"} 3.0',
        "geo_ips_skipped_total 9.0",
    ):
        assert expected in lines, expected
    assert not any(line.split("{")[0].split(" ")[0].endswith("_created") for line in lines)  # no timestamps


def test_a_taken_port_is_replaced_by_a_free_one() -> None:
    """GEO_WEB_PORT in use: the API binds another port instead of failing; a free port is kept as asked."""
    first = bind_listener("127.0.0.1", 0)
    taken = first.getsockname()[1]
    second = bind_listener("127.0.0.1", taken)
    try:
        assert second.getsockname()[1] not in (taken, 0)
    finally:
        first.close()
        second.close()
    again = bind_listener("127.0.0.1", taken)  # free again
    assert again.getsockname()[1] == taken
    again.close()


def test_advertised_url_is_the_setting_or_the_bound_address() -> None:
    """GEO_ADVERTISED_URL wins; else the host bound, or this host's own address when bound to every
    interface."""
    base = Settings.from_env({})
    assert advertised_url(base, 7000) == "http://127.0.0.1:7000"
    assert advertised_url(Settings.from_env({"GEO_WEB_HOST": "0.0.0.0"}), 7000) == (
        f"http://{reachable_host()}:7000"
    )
    assert not reachable_host().startswith("127.")  # loopback would send other hosts to themselves
    explicit = Settings.from_env({"GEO_ADVERTISED_URL": "http://worker-3.geo:6066/"})
    assert advertised_url(explicit, 7000) == "http://worker-3.geo:6066"
