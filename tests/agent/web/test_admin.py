"""The operator routes against an in-memory worker: what /admin/retry and /admin/forget send to the results
topic, their progress answer, and the refusal of a peer that is not loopback."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import aiohttp

from pipeline.cache.policy import schedule_key
from pipeline.messages import ForgetMessage, OperatorRetry, decode_results_message
from pipeline.models import EntryStatus, GeoData, GeoEntry
from pipeline.web.admin import Admin
from tests.agent.web.test_server import FakeStore, fake_geo, partition_of, serving
from tests.support.kafka import wait_for


class SortedDb(dict[bytes, bytes]):
    """A partition database: a dict with rocksdict's sorted `keys(from_key=...)`."""

    def keys(self, from_key: bytes = b"") -> list[bytes]:  # type: ignore[override]
        return sorted(k for k in iter(self) if k >= from_key)


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send(self, topic: str, key: bytes, value: bytes, *rest: Any) -> None:
        self.sent.append((topic, key, value))


def put(store: FakeStore, entry: GeoEntry) -> None:
    db = store.dbs[partition_of(entry.ip)]
    db[entry.ip.encode()] = entry.to_json()
    db[str(schedule_key(entry)).encode()] = b""


def worker() -> tuple[Any, FakeStore, Producer, dict[str, GeoEntry]]:
    store = FakeStore({p: SortedDb() for p in (0, 1)})  # partitions 2 and 3 are another worker's
    entries: dict[str, GeoEntry] = {}
    statuses = [EntryStatus.PARTIAL, EntryStatus.UNRESOLVED, EntryStatus.RESOLVED, EntryStatus.INVALID]
    for n in range(80):
        ip = f"8.8.{n}.1"
        if partition_of(ip) in (0, 1):
            status = statuses[n % 4]
            geo = GeoData("US") if status is not EntryStatus.UNRESOLVED else GeoData()
            entries[ip] = GeoEntry(ip, status, geo=geo, attempts=1, updated_at=1.0, next_retry_at=9e9)
            put(store, entries[ip])
    geo = fake_geo(store, {})
    producer = Producer()
    geo.app.producer = producer
    return geo, store, producer, entries


async def post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as reply:
        return reply.status, await reply.json()


async def get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        return reply.status, await reply.json()


async def retry(base: str, body: dict[str, Any]) -> tuple[int, Any]:
    """POST /admin/retry; once accepted, the progress answer after the selection finished."""
    status, answer = await post(f"{base}/admin/retry", body)
    if status != 202:
        return status, answer

    async def selected() -> Any:
        status, progress = await get(f"{base}/admin/retry")
        return progress if status == 200 and not progress["selecting"] else None

    return 202, await wait_for(selected, 10, interval=0.05, message="the selection to finish")


async def test_retry_by_status_sends_one_operator_retry_per_matching_entry_of_the_active_partitions() -> None:
    """Partial entries of this worker's partitions each get one record keyed by the IP; none other does."""
    geo, _, producer, entries = worker()
    async with serving(geo) as web:
        status, body = await retry(web.url, {"statuses": ["partial"]})
        wanted = {ip for ip, e in entries.items() if e.status is EntryStatus.PARTIAL}
        assert status == 202 and body["matched"] == len(wanted) > 0 and not body["interrupted"]
        assert {key.decode() for _, key, _ in producer.sent} == wanted and len(producer.sent) == len(wanted)
        for topic, _, value in producer.sent:
            message = decode_results_message(value)
            assert topic == geo.settings.results_topic
            assert isinstance(message, OperatorRetry) and message.statuses == ("partial",)
        assert body["statuses"] == {"partial": len(wanted)}


async def test_retry_of_named_ips_takes_only_the_ones_this_worker_owns_and_may_refresh_resolved() -> None:
    """Of named IPs, those of other partitions and unknown ones are left to their owners."""
    geo, _, producer, entries = worker()
    resolved = next(ip for ip, e in entries.items() if e.status is EntryStatus.RESOLVED)
    elsewhere = next(f"9.9.{n}.9" for n in range(50) if partition_of(f"9.9.{n}.9") in (2, 3))
    async with serving(geo) as web:
        status, body = await retry(web.url, {"ips": [resolved, elsewhere, "not-an-ip"]})
        assert status == 400 and "not an IP" in body["error"] and not producer.sent
        status, body = await retry(web.url, {"ips": [resolved, elsewhere]})
        assert status == 202 and body["matched"] == 1
        assert [key for _, key, _ in producer.sent] == [resolved.encode()]


async def test_forget_sends_a_forget_record_for_each_owned_ip() -> None:
    """Each owned IP gets one forget record; the answer lists them."""
    geo, _, producer, entries = worker()
    mine = sorted(entries)[:3]
    async with serving(geo) as web:
        status, body = await post(f"{web.url}/admin/forget", {"ips": [*mine, "9.9.9.9"]})
    owned = [ip for ip in [*mine, "9.9.9.9"] if partition_of(ip) in (0, 1)]
    assert status == 200 and body["forgotten"] == owned
    assert [(k.decode(), decode_results_message(v)) for _, k, v in producer.sent] == [
        (ip, ForgetMessage()) for ip in owned
    ]


async def test_a_peer_that_is_not_loopback_is_refused_and_nothing_is_sent() -> None:
    """The routes check the peer's address: one from outside loopback gets 403 and sends nothing."""
    geo, _, producer, _ = worker()
    admin = Admin(geo, lambda: {"name": "w", "url": "u"})
    request: Any = SimpleNamespace(remote="10.1.2.3", method="POST", path="/admin/forget")
    for route in (admin.retry, admin.forget, admin.progress):
        assert (await route(request)).status == 403
    assert not producer.sent


async def test_a_rebalance_during_a_long_walk_stops_it_and_the_answer_says_interrupted() -> None:
    """With 1,200 retry-lane entries and a rebalance starting after the first chunk, the walk stops at the
    next chunk boundary: fewer records than entries, and `interrupted` in the answer."""
    store = FakeStore({p: SortedDb() for p in (0, 1, 2, 3)})
    for n in range(1_200):
        ip = f"8.{n // 250}.{n % 250}.1"
        put(store, GeoEntry(ip, EntryStatus.PARTIAL, geo=GeoData("US"), updated_at=1.0, next_retry_at=9e9))
    geo = fake_geo(store, {})
    producer = Producer()
    geo.app.producer = producer

    async def send(topic: str, key: bytes, value: bytes, *rest: Any) -> None:
        producer.sent.append((topic, key, value))
        geo.app.rebalancing = True  # as soon as one record is out

    producer.send = send  # type: ignore[method-assign]
    async with serving(geo) as web:
        status, body = await retry(web.url, {})
    assert status == 202 and body["interrupted"] is True
    assert 0 < body["matched"] == len(producer.sent) < 1_200


async def test_a_second_retry_while_one_still_selects_is_refused() -> None:
    """While a selection runs (its sends blocked here), another POST gets 409 and starts nothing."""
    geo, _, producer, _ = worker()
    release = asyncio.Event()

    async def send(topic: str, key: bytes, value: bytes, *rest: Any) -> None:
        producer.sent.append((topic, key, value))
        await release.wait()

    producer.send = send  # type: ignore[method-assign]
    async with serving(geo) as web:
        assert (await post(f"{web.url}/admin/retry", {}))[0] == 202
        status, body = await post(f"{web.url}/admin/retry", {})
        assert status == 409 and len(producer.sent) == 1
        release.set()
        await wait_for(lambda: not web.admin.selecting, 10, interval=0.01, message="the first selection")
        status, body = await retry(web.url, {})  # once finished, a new one is accepted
        assert status == 202 and not body["selecting"]
