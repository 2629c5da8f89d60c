"""`geo-pipeline demo`: the whole product on one machine in about a minute.

Starts (unless KAFKA_BOOTSTRAP_SERVERS is set) a local Kafka broker, the ip-api-compatible test server
from tests/ (short rate window, so the throttle is visible), and one worker; publishes demo events (public,
private and invalid addresses, JSON and bare text); prints progress until every event is accounted for and
every public IP has its geography; then prints samples and a summary and stops everything it started.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from .app import build, running
from .scratch import scratch
from .settings import Settings

DEMO_WINDOW = 10.0  # seconds: a short fake-API window so pacing shows within the demo
DEMO_TIMEOUT = 180.0  # give up (and say so) if the demo has not converged by then


def demo_events(n: int, seed: int = 7) -> list[bytes]:
    """Mostly public addresses (with repeats, like real ban logs), some private, some garbage."""
    rng = random.Random(seed)
    public = [
        f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        for _ in range(max(1, n // 4))
    ]
    out: list[bytes] = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.05:
            out.append(rng.choice([b"not-an-ip", b"{broken json", b'{"host":"x"}', b"010.1.1.1"]))
        elif roll < 0.12:
            out.append(
                json.dumps({"ip": f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}", "n": i}).encode()
            )
        elif roll < 0.5:
            out.append(rng.choice(public).encode())  # bare text, as a fail2ban action emits
        else:
            out.append(json.dumps({"ip": rng.choice(public), "jail": "sshd", "n": i}).encode())
    return out


async def run_demo(base: Settings, environ: Mapping[str, str], *, events: int) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/ lives beside the package
    from tests.ipapi_server import IpApiServer, ServerConfig

    options = {"budget_window": DEMO_WINDOW, "retry_interval": 5.0, "retry_base": 5.0, "partitions": 4}
    with scratch("demo", base, environ, **options) as run:
        async with IpApiServer(ServerConfig(window=DEMO_WINDOW)) as api:
            settings = dataclasses.replace(run.settings, ipapi_url=api.url)
            print(
                f"demo: broker {settings.kafka_bootstrap}, fake ip-api {api.url} "
                f"(15 requests / {DEMO_WINDOW:.0f}s), topics demo-*-{run.run}"
            )
            geo = build(settings)
            async with running(geo):
                payloads = demo_events(events)
                await _produce(settings, payloads)
                ok = await _watch(settings, geo, payloads)
            print(f"fake ip-api: {api.summary()}")
            return 0 if ok else 1


async def _produce(settings: Settings, payloads: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        for i, value in enumerate(payloads):
            await producer.send(settings.events_topic, value, key=str(i % 13).encode())
        await producer.flush()
    finally:
        await producer.stop()
    print(f"demo: published {len(payloads)} events to {settings.events_topic}")


async def _watch(settings: Settings, geo: Any, payloads: list[bytes]) -> bool:
    consumer = AIOKafkaConsumer(
        settings.enriched_topic,
        settings.dlq_topic,
        settings.resolved_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    enriched: list[dict[str, Any]] = []
    dlq: list[dict[str, Any]] = []
    latest: dict[str, dict[str, Any]] = {}
    started = last = time.monotonic()
    try:
        while time.monotonic() - started < DEMO_TIMEOUT:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    value = json.loads(record.value)
                    if tp.topic == settings.enriched_topic:
                        enriched.append(value)
                    elif tp.topic == settings.dlq_topic:
                        dlq.append(value)
                    else:
                        latest[value["ip"]] = value
            waiting = [e for e in latest.values() if e["status"] in ("pending", "unresolved")]
            wanted = {e["ip"] for e in enriched if e["geo"]["status"] != "private"}
            done = len(enriched) + len(dlq) == len(payloads) and wanted <= set(latest) and not waiting
            if done or time.monotonic() - last > 2:
                last = time.monotonic()
                resolved = sum(1 for e in latest.values() if e["status"] == "resolved")
                print(
                    f"  {time.monotonic() - started:5.1f}s enriched={len(enriched)} dlq={len(dlq)} "
                    f"geo resolved={resolved}/{len(wanted)} worker: {geo.stats.line()}",
                    flush=True,
                )
            if done:
                break
    finally:
        await consumer.stop()
    _summary(payloads, enriched, dlq, latest)
    return len(enriched) + len(dlq) == len(payloads)


def _summary(
    payloads: list[bytes],
    enriched: list[dict[str, Any]],
    dlq: list[dict[str, Any]],
    latest: dict[str, dict[str, Any]],
) -> None:
    print("\nsamples:")
    for e in enriched[:3]:
        print("  enriched:", json.dumps(e)[:300])
    for ip, entry in sorted(latest.items(), key=lambda kv: kv[1]["status"] != "resolved")[:3]:
        geo = entry["geo"]
        print(f"  resolved: {ip} -> {entry['status']} {geo['country_code']} {geo['city']} AS{geo['asn']}")
    for d in dlq[:3]:
        print("  dead letter:", d["reason"], repr(d.get("original_preview")))
    statuses: dict[str, int] = {}
    for entry in latest.values():
        statuses[entry["status"]] = statuses.get(entry["status"], 0) + 1
    print(
        f"\nsummary: in={len(payloads)} enriched={len(enriched)} dlq={len(dlq)} "
        f"(in = enriched + dlq: {len(payloads) == len(enriched) + len(dlq)}); "
        f"distinct IPs by status: {statuses}"
    )
