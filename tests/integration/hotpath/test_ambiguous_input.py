"""Input objects consumers could read differently, end to end on the real broker (issue 19, item 13a):
refused to the dead-letter topic with their reason, never enriched."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from pipeline.app import build, running
from tests.support.kafka import produce, wait_for
from tests.support.pipeline import CountingProvider, Outputs, make_settings

pytestmark = pytest.mark.integration

AMBIGUOUS = {
    b'{"ip":"1.1.1.1","ip":"8.8.8.8"}': "duplicate key 'ip'",
    b'{"ip":"9.9.9.9","s":"\\ud800"}': "lone surrogate",
}
CLEAR = b'{"ip":"8.8.4.4","s":"\\ud83d\\ude00"}'  # a surrogate pair (one emoji): valid, passes verbatim


async def test_duplicate_keys_and_lone_surrogates_go_to_the_dead_letter_topic(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A worker dead-letters the object with a duplicate key and the one with a lone surrogate escape (the
    original bytes and the reason kept), and enriches only the clear event."""
    settings = make_settings(kafka_bootstrap, tmp_path / "w")
    geo = build(settings, providers=[CountingProvider()])
    async with running(geo), Outputs(settings) as out:
        await produce(kafka_bootstrap, settings.events_topic, [(None, raw) for raw in [*AMBIGUOUS, CLEAR]])
        await wait_for(lambda: _seen(out), 60, message=lambda: f"{len(out.enriched)} + {len(out.dlq)}")
    assert [e["ip"] for e in out.enriched] == ["8.8.4.4"]
    dead = {base64.b64decode(d["original_b64"]): d["reason"] for d in out.dlq}
    assert set(dead) == set(AMBIGUOUS)
    assert all(reason in dead[raw] for raw, reason in AMBIGUOUS.items())


async def _seen(out: Outputs) -> bool:
    await out.poll()
    return len(out.enriched) + len(out.dlq) >= 3
