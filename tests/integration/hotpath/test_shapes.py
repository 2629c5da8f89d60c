"""Each output shape end to end on the real broker, with events as users have them (tests/support/
realistic.py): an ECS firewall event (two fields and an array, a private destination), a Suricata alert
(top-level fields, IPv6), an nginx log behind proxies (a forwarded chain with a forged hop), a fail2ban
bare IP, an `ip:port` value beside an invalid field, and an event without any valid IP. The input's
headers (a traceparent) and timestamp come out on the enriched record, which names its shape."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import iptocc
import pytest
from aiokafka import AIOKafkaProducer

from pipeline.app import build, running
from tests.support import realistic
from tests.support.kafka import wait_for
from tests.support.pipeline import CountingProvider, make_settings, read_topic

pytestmark = pytest.mark.integration

TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
STAMP = int(time.time() * 1000) - 3_600_000  # an hour ago: the producer's time, not the worker's


async def _run(bootstrap: str, data_dir: Path, fmt: str) -> tuple[dict[str, Any], list[Any], list[Any], Any]:
    """One worker in `fmt`; every fixture published with its name as the key, a traceparent and STAMP.
    Returns the enriched records by key, the dead letters, the seen records and the worker's stats."""
    settings = make_settings(
        bootstrap, data_dir, ip_fields=realistic.FIELDS, trusted_proxies=realistic.TRUSTED, output_format=fmt
    )
    payloads = realistic.payloads()
    geo = build(settings, providers=[CountingProvider()])
    async with running(geo):
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for name, value in payloads.items():
                headers = [("traceparent", TRACEPARENT), ("fixture", name.encode())]
                await producer.send_and_wait(
                    settings.events_topic, value, key=name.encode(), headers=headers, timestamp_ms=STAMP
                )
        finally:
            await producer.stop()
        await wait_for(lambda: geo.stats.consumed >= len(payloads), 60, message=lambda: geo.stats.line())
        enriched = await read_topic(bootstrap, settings.enriched_topic)
        dead = await read_topic(bootstrap, settings.dlq_topic)
        seen = await read_topic(bootstrap, settings.seen_topic)
    return {r.key.decode(): r for r in enriched}, dead, seen, geo.stats


def _country(ip: str) -> str | None:
    return iptocc.country_code(ip) or None


def _check_records(by_key: dict[str, Any], dead: list[Any], seen: list[Any], stats: Any, fmt: str) -> None:
    """What every shape shares: one enriched record per event with a valid IP, keyed by the input key,
    with the input's headers and timestamp and the format header; one dead letter; one seen record per
    distinct IP; the failed field counted."""
    assert sorted(by_key) == sorted(realistic.EXPECTED)
    for name, record in by_key.items():
        headers = dict(record.headers)
        assert headers["traceparent"] == TRACEPARENT and headers["fixture"] == name.encode()
        assert headers["geo-format"] == fmt.encode() and record.timestamp == STAMP
    assert [json.loads(d.value)["reason"] for d in dead] == ["invalid ip: not an IP address"]
    assert dict(dead[0].headers)["traceparent"] == TRACEPARENT
    distinct = {ip for fields in realistic.EXPECTED.values() for ip in fields.values()}
    assert sorted(r.key.decode() for r in seen) == sorted(distinct)
    assert stats.fields_failed == {"invalid_ip": 1} and stats.enriched == len(realistic.EXPECTED)


async def test_the_envelope_carries_every_ip_of_realistic_events(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """envelope/2: `ip`/`geo` are the first IP's public view (no retry bookkeeping), `ips` lists each
    field's IP (the forwarded chain's client, not the forged hop; the private address as `private`; the
    invalid field with its error); the event is the input verbatim."""
    by_key, dead, seen, stats = await _run(kafka_bootstrap, tmp_path / "w", "envelope")
    _check_records(by_key, dead, seen, stats, "envelope/2")
    payloads = realistic.payloads()
    for name, fields in realistic.EXPECTED.items():
        doc = json.loads(by_key[name].value)
        first = next(iter(fields.values()))
        assert doc["ip"] == first and doc["geo"]["country_code"] == _country(first)
        assert not {"attempts", "next_retry_at", "last_error", "first_seen", "last_seen"} & set(doc["geo"])
        if name != "fail2ban":
            assert doc["event"] == json.loads(payloads[name])
        shown = {i["field"]: i.get("ip") for i in doc.get("ips", [doc | {"field": "ip"}])}
        assert {field: shown[field] for field in fields} == fields
    ecs = json.loads(by_key["ecs"].value)["ips"]
    assert [(i["field"], i.get("index"), i["geo"]["status"] == "private") for i in ecs] == [
        ("source.ip", None, False),
        ("destination.ip", None, True),
        ("related.ip", 0, False),
        ("related.ip", 1, True),
    ]
    broken = json.loads(by_key["broken"].value)["ips"]
    assert broken[1] == {"field": "destination.ip", "error": "invalid ip: not an IP address"}


async def test_ecs_adds_standard_fields_to_realistic_events(kafka_bootstrap: str, tmp_path: Path) -> None:
    """ecs/1: the event itself with source.geo.country_iso_code etc. beside each field (top-level
    fields: <field>_geo), nothing beside a private address, and geo_pipeline's status per field."""
    by_key, dead, seen, stats = await _run(kafka_bootstrap, tmp_path / "w", "ecs")
    _check_records(by_key, dead, seen, stats, "ecs/1")
    docs = {name: json.loads(record.value) for name, record in by_key.items()}
    fw = docs["ecs"]
    assert fw["source"]["geo"]["country_iso_code"] == _country("185.220.101.34") == "DE"
    assert fw["source"]["port"] == 51234 and "geo" not in fw["destination"]
    assert fw["geo_pipeline"]["fields"]["destination.ip"]["status"] == "private"
    assert [g and g["country_iso_code"] for g in fw["related"]["geo"]] == ["DE", None]
    suricata = docs["suricata"]
    assert suricata["src_ip_geo"]["country_iso_code"] == "RU"
    assert (
        suricata["dest_ip_geo"]["country_iso_code"] == "DE" and suricata["alert"]["signature_id"] == 2024897
    )
    nginx = docs["nginx"]
    assert nginx["http_x_forwarded_for_geo"]["country_iso_code"] == "GB"
    assert nginx["geo_pipeline"]["fields"]["http_x_forwarded_for"]["ip"] == "81.2.69.142"
    assert docs["fail2ban"]["ip_geo"]["country_iso_code"] == "HK"
    broken = docs["broken"]
    assert (
        broken["source"]["geo"]["country_iso_code"] == "RU" and broken["source"]["ip"] == "5.188.206.26:4444"
    )
    assert broken["geo_pipeline"]["fields"]["destination.ip"] == {"error": "invalid ip: not an IP address"}
    assert all(doc["geo_pipeline"]["format"] == "ecs/1" for doc in docs.values())
