"""Upgrades keep state: a worker of this version starts on topics and a changelog that version 0.2.0 (and the
versions before it) wrote, and keeps every entry, serves it, and folds later answers into it.

The previous versions' records are written here as literal JSON text, field by field as those versions'
encoders wrote them (compact, in their field order), never produced by today's encoders: a later change of
the format cannot silently rewrite these fixtures. Only the times (which the retry and forgetting policies
read against the clock) and iptocc's version are filled in.
"""

from __future__ import annotations

import json
import time
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipeline.app import build, ensure_topics, running
from pipeline.devtools.fake_ipapi import IpApiServer, ServerConfig, expected_answer
from pipeline.devtools.workloads import publish
from pipeline.kafka.topics import changelog_topic
from pipeline.models import GeoEntry
from pipeline.web.server import WebServer, listen
from tests.support.kafka import produce, wait_for
from tests.support.pipeline import WINDOW, Outputs, make_settings

pytestmark = pytest.mark.integration

DAY = 86400.0
NULL_GEO = (
    '{"country_code":null,"country_name":null,"region":null,"city":null,"latitude":null,"longitude":null,'
    '"asn":null,"as_name":null,"isp":null,"org":null}'
)
# Entries as the changelog and geo-resolved hold them. 0.1.x wrote no data_version and no last_seen; 0.2.0
# wrote both; neither wrote the proxy/hosting/mobile flags. Placeholders: {first} {updated} {due} {seen}.
OLD_ENTRIES = {
    # 0.1.x: resolved by ip-api
    "8.8.8.8": (
        '{"ip":"8.8.8.8","status":"resolved","geo":{"country_code":"US","country_name":"United States",'
        '"region":"California","city":"Mountain View","latitude":37.422,"longitude":-122.085,"asn":15169,'
        '"as_name":"GOOGLE","isp":"Google LLC","org":"Google Public DNS"},"provider":"ipapi","attempts":1,'
        '"first_seen":{first},"updated_at":{updated},"next_retry_at":{due},"last_error":null}'
    ),
    # 0.1.x: a private address (final, never due)
    "10.20.30.40": (
        '{"ip":"10.20.30.40","status":"private","geo":' + NULL_GEO + ',"provider":null,"attempts":0,'
        '"first_seen":{first},"updated_at":{first},"next_retry_at":null,"last_error":"private"}'
    ),
    # 0.1.x: pending with the offline country; its resolve request (attempt 1) is still on geo-resolve
    "104.16.0.1": (
        '{"ip":"104.16.0.1","status":"pending","geo":{"country_code":"US","country_name":"United States",'
        '"region":null,"city":null,"latitude":null,"longitude":null,"asn":null,"as_name":null,"isp":null,'
        '"org":null},"provider":"offline","attempts":0,"first_seen":{first},"updated_at":{first},'
        '"next_retry_at":{due},"last_error":null}'
    ),
    # 0.2.0: resolved by ip-api, seen today
    "81.2.69.142": (
        '{"ip":"81.2.69.142","status":"resolved","geo":{"country_code":"GB","country_name":"United Kingdom",'
        '"region":"England","city":"London","latitude":51.5142,"longitude":-0.0931,"asn":20712,'
        '"as_name":"Andrews & Arnold Ltd","isp":"Andrews & Arnold Ltd","org":"AAISP"},"provider":"ipapi",'
        '"attempts":1,"first_seen":{first},"updated_at":{updated},"next_retry_at":{due},"last_error":null,'
        '"data_version":"ipapi","last_seen":{seen}}'
    ),
    # 0.2.0: ip-api called the address invalid
    "2001:4860:4860::8888": (
        '{"ip":"2001:4860:4860::8888","status":"invalid","geo":' + NULL_GEO + ',"provider":"ipapi",'
        '"attempts":1,"first_seen":{first},"updated_at":{updated},"next_retry_at":{due},'
        '"last_error":"invalid query","data_version":null,"last_seen":{seen}}'
    ),
    # 0.2.0: partial (ip-api failed, the offline country kept); its retry (attempt 2) is on geo-resolve
    "1.1.1.1": (
        '{"ip":"1.1.1.1","status":"partial","geo":{"country_code":"AU","country_name":"Australia",'
        '"region":null,"city":null,"latitude":null,"longitude":null,"asn":null,"as_name":null,"isp":null,'
        '"org":null},"provider":"offline","attempts":1,"first_seen":{first},"updated_at":{updated},'
        '"next_retry_at":{due},"last_error":"ip-api: HTTP 503","data_version":"iptocc:{iptocc}",'
        '"last_seen":{seen}}'
    ),
}
ANSWERED_LATER = {"104.16.0.1": 1, "1.1.1.1": 2}  # IP -> the attempt its pending resolve request asks
SERVED = ("8.8.8.8", "81.2.69.142", "10.20.30.40", "2001:4860:4860::8888")  # events of these go through
FLAGS = ("proxy", "hosting", "mobile")


def fixture(template: str, now: float) -> bytes:
    """One previous-format record with its times (relative to `now`) and iptocc's version filled in: {first}
    ten days ago, {updated} two days ago, {due} in twenty days, {seen} an hour ago, {at} a minute ago."""
    times = {
        "{first}": repr(round(now - 10 * DAY, 3)),
        "{updated}": repr(round(now - 2 * DAY, 3)),
        "{due}": repr(round(now + 20 * DAY, 3)),
        "{seen}": repr(round(now - 3600, 3)),
        "{at}": repr(round(now - 60, 3)),
        "{iptocc}": package_version("iptocc"),
    }
    for mark, value in times.items():
        template = template.replace(mark, value)
    return template.encode()


def served_geo(record: dict[str, Any]) -> dict[str, Any]:
    """The place fields of an enriched record: nested (`geo.geo`, the full entry) or flat (a public view)."""
    wrapper = record["geo"]
    return wrapper["geo"] if isinstance(wrapper.get("geo"), dict) else wrapper


async def lookup(session: aiohttp.ClientSession, url: str, ip: str) -> tuple[int, dict[str, Any]]:
    async with session.get(f"{url}/geo/{ip}") as reply:
        body: dict[str, Any] = await reply.json()
        return reply.status, body


async def test_a_worker_started_on_the_previous_versions_records_keeps_serves_and_updates_every_entry(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Six entries in 0.1.x and 0.2.0 form on the changelog and geo-resolved, with old-format seen, results,
    asked and resolve records beside them: the new worker shows every entry with every field on /geo and in
    its table, enriches events with them, and the two pending requests come back with ip-api's answer:
    resolved, first_seen and last_seen kept, the proxy/hosting/mobile flags added, on /geo and in the
    enriched events that follow."""
    now = time.time()
    entries = {ip: fixture(template, now) for ip, template in OLD_ENTRIES.items()}
    old = {ip: json.loads(raw) for ip, raw in entries.items()}
    async with IpApiServer(ServerConfig(window=WINDOW)) as api:
        settings = make_settings(
            kafka_bootstrap,
            tmp_path / "w",
            providers=("ipapi",),
            ipapi_url=api.url,
            budget_window=WINDOW,
            web_port=0,
        )
        await ensure_topics(settings)
        records: list[tuple[bytes | None, bytes]] = [(ip.encode(), raw) for ip, raw in entries.items()]
        await produce(kafka_bootstrap, changelog_topic(settings), records)
        await produce(kafka_bootstrap, settings.resolved_topic, records)
        await produce(  # 0.2.0's resolve requests carry "by"; 0.1.x's did not
            kafka_bootstrap,
            settings.resolve_topic,
            [
                (b"104.16.0.1", b'{"ip":"104.16.0.1","attempt":1}'),
                (b"1.1.1.1", b'{"ip":"1.1.1.1","attempt":2,"by":"geo-0.2.0-worker"}'),
            ],
        )
        await produce(  # seen without "first" (a first sight, then): the owner echoes the entry
            kafka_bootstrap,
            settings.seen_topic,
            [(b"8.8.8.8", fixture('{"at":{at},"by":"geo-0.1-worker"}', now))],
        )
        await produce(  # a timer retry not yet due and a stale permanent answer without "version"
            kafka_bootstrap,
            settings.results_topic,
            [
                (b"81.2.69.142", fixture('{"type":"retry","due":{at}}', now)),
                (
                    b"2001:4860:4860::8888",
                    b'{"type":"result","attempt":1,"result":{"kind":"permanent","provider":"ipapi",'
                    b'"reason":"invalid query"}}',
                ),
            ],
        )
        await produce(  # an asked record without "by" and "answered" (an answered attempt long ago)
            kafka_bootstrap, settings.asked_topic, [(b"8.8.8.8", fixture('{"attempt":1,"at":{at}}', now))]
        )
        sock, url = listen(settings)
        geo = build(settings, url=url)
        async with running(geo, services=[WebServer(geo, sock, url)]), Outputs(settings) as out:
            events = [json.dumps({"ip": ip, "n": n}).encode() for n in range(2) for ip in SERVED]
            await publish(kafka_bootstrap, settings.events_topic, events)
            async with aiohttp.ClientSession() as session:

                async def answered() -> bool:
                    views = [await lookup(session, url, ip) for ip in ANSWERED_LATER]
                    return all(s == 200 and body["entry"]["status"] == "resolved" for s, body in views)

                await wait_for(answered, 90, interval=0.3, message=lambda: geo.stats.line())
                views = {ip: await lookup(session, url, ip) for ip in OLD_ENTRIES}

            async def enriched() -> bool:
                await out.poll()
                return sum(r["ip"] in SERVED for r in out.enriched) >= len(events)

            await wait_for(enriched, 60, interval=0.1, message=lambda: f"{len(out.enriched)} enriched")

            async def flags_served() -> bool:
                """An event of each answered IP carries the answer (the replica follows geo-resolved, so
                an event may still meet the pending entry: then another one is sent)."""
                await out.poll()
                done = {r["ip"] for r in out.enriched if r["geo"]["status"] == "resolved"}
                missing = [ip for ip in ANSWERED_LATER if ip not in done]
                if missing:
                    await publish(
                        kafka_bootstrap,
                        settings.events_topic,
                        [b'{"ip":"%s"}' % ip.encode() for ip in missing],
                    )
                return not missing

            await wait_for(flags_served, 60, interval=0.5, message=lambda: f"{len(out.enriched)} enriched")
            table = {ip: geo.table.get(ip.encode()) for ip in OLD_ENTRIES}

    # every entry is there, in the table and on /geo, with every field it had
    assert all(raw is not None for raw in table.values()), table
    for ip, (status, body) in views.items():
        assert status == 200, (ip, body)
        entry, before = body["entry"], old[ip]
        stored = GeoEntry.from_json(table[ip] or b"").to_dict()  # the table holds what /geo showed (a
        assert {**stored, "last_seen": 0} == {**entry, "last_seen": 0}, ip  # touch may have come since)
        assert entry["first_seen"] == before["first_seen"], ip
        if "last_seen" in before:
            assert entry["last_seen"] >= before["last_seen"], ip
        else:  # 0.1.x entries were last seen no later than first seen; a touch moves it to today
            assert entry["last_seen"] >= before["first_seen"], ip
        if ip in ANSWERED_LATER:
            continue
        kept = {k: v for k, v in before.items() if k not in ("geo", "last_seen")}
        assert {k: entry[k] for k in kept} == kept, ip
        assert {k: entry["geo"][k] for k in before["geo"]} == before["geo"], ip
        assert [entry["geo"][flag] for flag in FLAGS] == [None, None, None], ip  # nobody said: null
        assert entry.get("data_version") == before.get("data_version"), ip
    # the pending requests were answered by ip-api: its answer and flags added, the entry's history kept
    for ip, attempt in ANSWERED_LATER.items():
        entry, before, answer = views[ip][1]["entry"], old[ip], expected_answer(ip)
        assert (entry["status"], entry["provider"], entry["attempts"]) == ("resolved", "ipapi", attempt)
        assert entry["geo"]["country_code"] == before["geo"]["country_code"] == answer["countryCode"]
        assert entry["geo"]["city"] == answer["city"] and entry["data_version"] == "ipapi"
        assert {flag: entry["geo"][flag] for flag in FLAGS} == {flag: answer[flag] for flag in FLAGS}
        assert entry["last_error"] is None
    assert views["1.1.1.1"][1]["entry"]["geo"]["hosting"] is True  # a flag that is set, not only False
    assert views["104.16.0.1"][1]["entry"]["geo"]["mobile"] is True
    # the hot path served the old entries: every event carries its entry's place; and the new answers' flags
    assert sum(r["ip"] in SERVED for r in out.enriched) == len(events) and not out.dlq
    for record in out.enriched:
        if record["ip"] in ANSWERED_LATER:
            if record["geo"]["status"] == "resolved":
                answer = expected_answer(record["ip"])
                assert {f: served_geo(record)[f] for f in FLAGS} == {f: answer[f] for f in FLAGS}, record
            continue
        ip, served = record["ip"], served_geo(record)
        if old[ip]["status"] == "resolved":
            assert served["city"] == old[ip]["geo"]["city"] and served["asn"] == old[ip]["geo"]["asn"], record
        assert record["geo"]["status"] == old[ip]["status"], record
