"""The asked log on the real broker: a resolver starting over redelivered requests asks only what the
log does not show in flight."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipeline.app import build, ensure_topics, running
from pipeline.devtools.fake_ipapi import IpApiServer, ServerConfig
from pipeline.messages import decode_asked, encode_asked
from pipeline.resolver.dedupe import asked_horizon
from tests.support.kafka import produce, wait_for
from tests.support.pipeline import WINDOW, make_settings, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_a_restarted_resolver_does_not_ask_again_what_the_asked_log_holds(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Requests whose attempt the asked log shows in flight, answered or superseded are not sent to the
    API; one whose ask is older than the horizon (its answer lost) and a new one are, once each."""
    async with IpApiServer(ServerConfig(window=WINDOW)) as api:
        settings = make_settings(
            kafka_bootstrap, tmp_path / "w", providers=("ipapi",), ipapi_url=api.url, budget_window=WINDOW
        )
        await ensure_topics(settings)
        horizon = asked_horizon(settings.pending_timeout)
        in_flight, answered, lost, stale, new = "8.8.8.8", "8.8.4.4", "1.1.1.1", "9.9.9.9", "208.67.222.222"
        now = time.time()
        # what a dead resolver wrote before asking, and the requests it had not committed
        await produce(
            kafka_bootstrap,
            settings.asked_topic,
            [
                (in_flight.encode(), encode_asked(1, now - 1, "dead")),
                (answered.encode(), encode_asked(1, now - horizon - 60, "dead", answered=True)),
                (lost.encode(), encode_asked(1, now - horizon - 60, "dead")),
                (stale.encode(), encode_asked(2, now - 1, "dead")),
            ],
        )
        await produce(
            kafka_bootstrap,
            settings.resolve_topic,
            [
                (ip.encode(), json.dumps({"ip": ip, "attempt": 1, "by": "dead"}).encode())
                for ip in (in_flight, answered, lost, stale, new)
            ],
        )
        geo = build(settings)
        async with running(geo):

            def settled() -> bool:
                return geo.stats.resolve_deduped >= 3 and {lost, new} <= set(api.ips_seen())

            await wait_for(settled, 60, message=lambda: f"{geo.stats.line()} {api.summary()}")
        assert api.ips_seen() == {lost: 1, new: 1}
        assert geo.stats.resolve_deduped == 3
    records = await read_topic(kafka_bootstrap, settings.asked_topic)
    asks = [r for r in records if r.value is not None]  # and the tombstones read for the broker's clock
    ours = [(r.key.decode(), decode_asked(r.value)) for r in asks if json.loads(r.value)["by"] != "dead"]
    flags = sorted((ip, value.attempt, value.answered) for ip, value in ours if value is not None)
    assert flags == sorted((ip, 1, done) for ip in (lost, new) for done in (False, True)), flags
