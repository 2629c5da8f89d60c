"""The resolved topic's partition count is part of the topic contract on the real broker (issue 19,
item 8): a count changed under the workers stops the next start with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.app import ensure_topics
from pipeline.errors import ConfigError
from tests.support.kafka import create_topics
from tests.support.pipeline import make_settings

pytestmark = pytest.mark.integration


async def test_a_resolved_topic_with_another_count_refuses_the_start(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A compacted resolved topic with more partitions than GEO_PARTITIONS (grown by an operator) refuses the
    start, naming the topic, both counts and the fix: an IP's records would sit in two partitions."""
    settings = make_settings(kafka_bootstrap, tmp_path)
    await create_topics(
        kafka_bootstrap, {settings.resolved_topic: settings.partitions + 2}, {"cleanup.policy": "compact"}
    )
    with pytest.raises(ConfigError) as refused:
        await ensure_topics(settings)
    text = str(refused.value)
    assert f"topic {settings.resolved_topic} has {settings.partitions + 2} partitions" in text
    assert f"GEO_PARTITIONS={settings.partitions}" in text
