"""Faults on worker processes against the real broker and the fake ip-api with bans on: a failed Faust-side
send, kill -9 while results flow, rolling restarts of the resolver's owner under a backlog, SIGTERM in every
state, and a broker restart. Each test counts what came out (events in/enriched/dlq/duplicates, 429s, bans,
stuck entries, index drift, stop durations) and prints it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline.app import CACHE_TABLE, ensure_topics
from pipeline.devtools.fake_ipapi import IpApiServer, ServerConfig
from tests.support.chaos import Crew, audit_table, committed, disagreements
from tests.support.kafka import create_topics, wait_for
from tests.support.pipeline import WINDOW, make_settings, publish_values, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# A first-sight entry's changelog record fits under this, a resolved one (with city, ASN, ISP) does not:
# the result's table write is the one whose changelog send fails.
TIGHT_MESSAGE_BYTES = 480
DEFAULT_MESSAGE_BYTES = 1024 * 1024 + 12  # Kafka's default max.message.bytes


async def set_topic_config(bootstrap: str, topic: str, config: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, config)])
    finally:
        await admin.close()


def latest(records: list, ip: str) -> dict | None:
    values = [json.loads(r.value) for r in records if r.key == ip.encode() and r.value is not None]
    return values[-1] if values else None


async def test_a_failed_changelog_send_is_replayed_and_the_replay_repairs_the_changelog(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A result whose table write never reaches the changelog stops the worker without committing the
    result; restarted on the same data dir (the write already in its RocksDB) it replays the result, and
    the changelog, a table rebuilt from it on an empty data dir and geo-resolved all hold the same entry."""
    ip = "81.2.69.142"
    async with IpApiServer(ServerConfig(window=WINDOW)) as api:
        settings = make_settings(
            kafka_bootstrap,
            tmp_path,
            providers=("ipapi",),
            ipapi_url=api.url,
            budget_window=WINDOW,
            partitions=1,
        )
        changelog = f"{settings.app_id}-{CACHE_TABLE}-changelog"
        tight = {"cleanup.policy": "compact", "max.message.bytes": str(TIGHT_MESSAGE_BYTES)}
        await create_topics(kafka_bootstrap, {changelog: 1}, tight)
        await ensure_topics(settings)  # keeps the changelog as created
        crew = Crew(settings, tmp_path / "crew", 1)
        try:
            await crew.ready()
            await publish_values(kafka_bootstrap, settings.events_topic, [json.dumps({"ip": ip}).encode()])
            worker = crew.workers[0]
            await wait_for(lambda: worker.proc.poll() is not None, 60, message=lambda: worker.tail())
            log = worker.log_path.read_text(errors="replace")
            assert worker.proc.returncode != 0
            assert "was not delivered (MessageSizeTooLargeError" in log and "commit refused" in log
            assert latest(await read_topic(kafka_bootstrap, changelog), ip)["status"] == "pending"
            results = await read_topic(kafka_bootstrap, settings.results_topic)
            assert [json.loads(r.value)["type"] for r in results] == ["result"]
            tp = TopicPartition(settings.results_topic, 0)
            assert (await committed(kafka_bootstrap, settings.app_id, [tp])).get(tp, 0) == 0, "committed past"

            await set_topic_config(
                kafka_bootstrap, changelog, {**tight, "max.message.bytes": str(DEFAULT_MESSAGE_BYTES)}
            )
            crew.restart(0)

            async def result_committed() -> bool:
                return (await committed(kafka_bootstrap, settings.app_id, [tp])).get(tp, 0) >= 1

            await wait_for(result_committed, 90, message=lambda: crew.workers[0].tail())
            stopped_in = crew.stop(0)
            resolved = latest(await read_topic(kafka_bootstrap, settings.resolved_topic), ip)
            assert resolved is not None and resolved["status"] == "resolved"
            in_changelog = latest(await read_topic(kafka_bootstrap, changelog), ip)
            same_dir = audit_table(tmp_path / "crew" / "w0")
            crew.restart(0, data_dir=tmp_path / "crew" / "fresh")  # rebuilt from the changelog alone
            await crew.ready()
            crew.stop(0)
            rebuilt = audit_table(tmp_path / "crew" / "fresh")
        finally:
            crew.close()
    print(
        f"\nfailed send: replayed, stop {stopped_in:.1f}s; same dir {same_dir.line()}; "
        f"rebuilt {rebuilt.line()}; changelog {in_changelog and in_changelog['status']}"
    )
    assert in_changelog == resolved, "the changelog lost the replayed result"
    for audit in (same_dir, rebuilt):
        assert audit.drift == 0 and not audit.doubles
        assert disagreements(audit.entries, {ip: resolved}) == []
    assert api.count_429 == 0 and not api.banned
