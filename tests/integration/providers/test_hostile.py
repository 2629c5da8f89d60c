"""Hostile input and hostile answers on the real broker: nothing stalls, nothing poisons, nothing bloats."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from pipeline.app import build, running
from pipeline.devtools.fake_ipapi import Faults, IpApiServer, ServerConfig
from pipeline.devtools.workloads import public_ips
from pipeline.messages import MAX_RECORD_BYTES
from tests.support.kafka import wait_for
from tests.support.pipeline import (
    WINDOW,
    CountingProvider,
    Outputs,
    make_settings,
    publish_values,
    read_topic,
    wait_all,
)

pytestmark = pytest.mark.integration

GOOD_BEHIND_EACH = 1_000
MAX_EVENT = 64 * 1024


def at_limit(size: int) -> bytes:
    """A valid JSON event of exactly `size` bytes."""
    head, tail = b'{"ip":"8.8.4.4","pad":"', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


# (name, key, value, headers, goes to the DLQ)
HOSTILE: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]], bool]] = [
    ("oversized key and value", b"k" * (400 * 1024), b"\xff" * (500 * 1024), [], True),
    ("key only (null value)", b"tombstone", None, [], True),
    ("headers", None, b'{"ip":"1.1.1.1","h":1}', [("h" * 200, b"v" * 10_000), ("x", b"")] * 5, False),
    ("invalid UTF-8 in the key, valid value", b"\xff\xfe\x00", b'{"ip":"9.9.9.9"}', [], False),
    ("invalid UTF-8 in the key, invalid value", b"\xc3\x28", b"999.1.1.1", [], True),
    ("exactly the size limit", None, at_limit(MAX_EVENT), [], False),
    ("one byte over the size limit", None, at_limit(MAX_EVENT + 1), [], True),
]


async def test_hostile_records_never_stall_their_partition(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Each hostile record, followed by a thousand good events in the same partition: every good event
    comes out enriched, each bad record is dead-lettered exactly once (bounded, with the reason), the
    valid odd ones are enriched, and the worker never replays a batch."""
    settings = make_settings(kafka_bootstrap, tmp_path / "w", max_event_bytes=MAX_EVENT)
    geo = build(settings, providers=[CountingProvider()])
    seq = 0
    good = 0
    async with running(geo), Outputs(settings) as out:
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, linger_ms=5, max_request_size=2**20 + 1024
        )
        await producer.start()
        try:
            for _, key, value, headers, _ in HOSTILE:
                await (
                    await producer.send(settings.events_topic, value, key=key, headers=headers, partition=0)
                )
                futures = []
                for _ in range(GOOD_BEHIND_EACH):
                    event = json.dumps({"ip": f"8.8.{seq % 200}.{seq % 250 + 1}", "seq": seq}).encode()
                    futures.append(await producer.send(settings.events_topic, event, partition=0))
                    seq += 1
                for future in futures:
                    await future
        finally:
            await producer.stop()
        bad = sum(1 for *_, dead in HOSTILE if dead)
        good = seq + len(HOSTILE) - bad

        async def all_out() -> bool:
            await out.poll()
            return len(out.enriched) >= good and len(out.dlq) >= bad

        await wait_for(
            all_out, 120, interval=0.1, message=lambda: f"enriched {len(out.enriched)} dlq {len(out.dlq)}"
        )
    assert geo.stats.replays == 0, "a hostile record made the worker replay a batch"
    seqs = sorted(e["event"]["seq"] for e in out.enriched if "seq" in e["event"])
    assert seqs == list(range(seq))  # every good event, exactly once
    assert len(out.dlq) == bad and len({d["offset"] for d in out.dlq}) == bad  # each bad one once
    reasons = {d["reason"] for d in out.dlq}
    assert reasons == {
        f"message too large ({500 * 1024} bytes > {MAX_EVENT})",
        "empty message (null value)",
        "invalid ip: not an IP address",
        f"message too large ({MAX_EVENT + 1} bytes > {MAX_EVENT})",
    }
    oversized = next(d for d in out.dlq if d["reason"].startswith(f"message too large ({500 * 1024}"))
    assert oversized["key_size"] == 400 * 1024 and oversized["key_truncated"]
    records = await read_topic(kafka_bootstrap, settings.dlq_topic)
    assert all(len(r.value) < MAX_RECORD_BYTES for r in records)
    odd = {e["ip"] for e in out.enriched if "seq" not in e["event"]}
    assert odd == {"1.1.1.1", "9.9.9.9", "8.8.4.4"}


async def test_hostile_answers_are_cleaned_or_retried_and_never_bloat_the_outputs(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """With a third of the API's answers spoiled (8 KiB org, markup, control characters, absurd numbers,
    a country code with HTML), every IP still ends resolved, no text field on the resolved topic is longer
    than the cap or holds a control character, every country code is two letters, and no ban."""
    ips = public_ips(300, seed=53, offline_known=True)
    async with IpApiServer(ServerConfig(window=WINDOW), faults=Faults(hostile_rate=0.3)) as api:
        settings = make_settings(
            kafka_bootstrap,
            tmp_path / "w",
            providers=("ipapi", "offline"),
            ipapi_url=api.url,
            budget_window=WINDOW,
            retry_interval=1.0,
            retry_base=1.0,
            retry_cap=4.0,
        )
        async with running(build(settings)), Outputs(settings) as out:
            await publish_values(
                kafka_bootstrap, settings.events_topic, [json.dumps({"ip": ip}).encode() for ip in ips]
            )
            await wait_all(
                out, ips, lambda e: e["status"] == "resolved", 180, "resolved despite hostile answers"
            )
        assert api.hostile and not api.banned and api.violations == 0
    records = await read_topic(kafka_bootstrap, settings.resolved_topic)
    control = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e]")
    for record in records:
        entry = json.loads(record.value)
        for name, value in entry["geo"].items():
            if isinstance(value, str):
                assert len(value) <= 257 and not control.search(value), (name, value[:80])
        code = entry["geo"]["country_code"]
        assert code is None or re.fullmatch("[A-Z]{2}", code), code
        assert len(record.value) < 8 * 1024
    kinds = sorted({kind for _, kind in api.hostile})
    print(f"\nhostile answers served: {len(api.hostile)} items of kinds {kinds}; all {len(ips)} IPs resolved")
