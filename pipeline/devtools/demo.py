"""`geo-pipeline demo`: the whole product on one machine in about a minute.

Starts (unless KAFKA_BOOTSTRAP_SERVERS is set) a local Kafka broker, the ip-api-compatible test server
shipped in the package (pipeline/devtools/fake_ipapi.py; short rate window, so the throttle is visible),
and one worker; publishes demo events (public, private and invalid addresses, JSON and bare text); prints
progress until every event is accounted for and every public IP has its geography; then prints samples
and a summary and stops everything it started.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer

from pipeline.app import build, running
from pipeline.config.settings import Settings
from pipeline.devtools.fake_ipapi import IpApiServer, ServerConfig
from pipeline.devtools.scratch import scratch
from pipeline.devtools.workloads import demo_events, publish

DEMO_WINDOW = 10.0  # seconds: a short fake-API window so pacing shows within the demo
DEMO_TIMEOUT = 180.0  # give up (and say so) if the demo has not converged by then


async def run_demo(base: Settings, environ: Mapping[str, str], *, events: int) -> int:

    options = {"budget_window": DEMO_WINDOW, "retry_interval": 5.0, "retry_base": 5.0, "partitions": 4}
    # the fake API first: settings with its short window are valid only together with its URL
    async with IpApiServer(ServerConfig(window=DEMO_WINDOW)) as api:
        with scratch("demo", base, environ, ipapi_url=api.url, **options) as run:
            settings = run.settings
            print(
                f"demo: broker {settings.kafka_bootstrap}, fake ip-api {api.url} "
                f"(15 requests / {DEMO_WINDOW:.0f}s), topics demo-*-{run.run}"
            )
            geo = build(settings)
            async with running(geo):
                payloads = demo_events(events)
                await publish(
                    settings.kafka_bootstrap, settings.events_topic, payloads, mixed_keys=True, label="demo"
                )
                ok = await _watch(settings, geo, payloads)
            print(f"fake ip-api: {api.summary()}")
            return 0 if ok else 1


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
