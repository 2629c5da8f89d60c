"""The asked log's compaction lag on the real broker (issue 19, item 9): created with it, an existing
topic without it mended at start (another broken contract still refuses the start)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from pipeline.app import ensure_topics
from pipeline.errors import ConfigError
from pipeline.kafka import topics
from pipeline.kafka.topics import LAG, asked_lag_ms
from tests.support.kafka import create_topics
from tests.support.pipeline import make_settings

pytestmark = pytest.mark.integration


async def topic_configs(bootstrap: str, topic: str) -> dict[str, str]:
    """Every config of `topic` as the broker reports it (defaults included)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        [(error, _, _, _, entries)] = response.resources
        assert not error
        return {name: value for name, value, *_ in entries}
    finally:
        await admin.close()


async def test_the_asked_log_is_created_with_its_compaction_lag(kafka_bootstrap: str, tmp_path: Path) -> None:
    """ensure_topics creates the asked log with min.compaction.lag.ms of two budget windows plus slack and a
    retention at least that long."""
    settings = make_settings(kafka_bootstrap, tmp_path)
    await ensure_topics(settings)
    configs = await topic_configs(kafka_bootstrap, settings.asked_topic)
    assert int(configs[LAG]) == asked_lag_ms(settings.budget_window) == 180_000
    assert int(configs["retention.ms"]) >= int(configs[LAG])


async def test_an_asked_log_without_the_lag_is_mended_at_start_keeping_its_other_configs(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """An asked log created without the lag (as every version before this one did) is given it when a
    worker starts, keeping the topic's other configs; `topics check` then finds nothing to fix."""
    settings = make_settings(kafka_bootstrap, tmp_path)
    legacy = {"cleanup.policy": "compact,delete", "retention.ms": "1800000", "segment.ms": "600000"}
    await create_topics(kafka_bootstrap, {settings.asked_topic: settings.resolve_partitions}, legacy)
    assert [p.topic for p in (await topics.run(settings, fix=False))[0]] == [settings.asked_topic]
    await ensure_topics(settings)  # mends it instead of refusing
    assert (await topics.run(settings, fix=False))[0] == []
    configs = await topic_configs(kafka_bootstrap, settings.asked_topic)
    assert int(configs[LAG]) == asked_lag_ms(settings.budget_window)
    assert configs["retention.ms"] == "1800000" and configs["cleanup.policy"] == "compact,delete"


async def test_another_broken_contract_still_refuses_the_start(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Only the asked log's lag is mended: a resolved topic that is not compacted still stops the worker."""
    settings = make_settings(kafka_bootstrap, tmp_path)
    deleting = {"cleanup.policy": "delete"}
    await create_topics(kafka_bootstrap, {settings.resolved_topic: settings.partitions}, deleting)
    with pytest.raises(ConfigError) as refused:
        await ensure_topics(settings)
    assert settings.resolved_topic in str(refused.value)
