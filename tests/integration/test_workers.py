"""Several worker processes on the same topics: partitions shared, counts add up, no IP resolved twice,
and a killed worker's due entries are retried by the survivor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.app import ensure_topics
from tests.integration.pipeline_utils import Outputs, make_settings
from tests.integration.test_resolver import WINDOW, addresses, publish_all
from tests.integration.workers import WorkerProcess
from tests.ipapi_server import Faults, IpApiServer, ServerConfig
from tests.kafka_utils import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_two_workers_share_partitions_and_never_resolve_an_ip_twice(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Two worker processes: in = enriched + dlq, every public IP asked of the API exactly once, the
    server's request rate never above the budget."""
    public, private, invalid = addresses(1_500, seed=21)
    async with IpApiServer(ServerConfig(window=WINDOW)) as api:
        settings = make_settings(
            kafka_bootstrap, tmp_path, providers=("ipapi",), ipapi_url=api.url, budget_window=WINDOW
        )
        await ensure_topics(settings)
        workers = [WorkerProcess(settings, tmp_path / f"w{i}", tmp_path / f"w{i}.log") for i in range(2)]
        try:
            await wait_for(lambda: all(w.ready() for w in workers), 90, message="both workers ready")
            values = [json.dumps({"ip": ip, "n": n}).encode() for n in range(2) for ip in public + private]
            values += invalid
            async with Outputs(settings) as out:
                await publish_all(kafka_bootstrap, settings.events_topic, values)

                async def done() -> bool:
                    await out.poll()
                    resolved = sum(out.resolved.get(ip, {}).get("status") == "resolved" for ip in public)
                    return resolved == len(public) and len(out.enriched) + len(out.dlq) == len(values)

                await wait_for(done, 180, interval=0.2, message=lambda: f"{out.statuses()} {api.summary()}")
            assert len(out.dlq) == len(invalid)
        finally:
            for w in workers:
                w.stop()
        logs = [w.log_path.read_text(errors="replace") for w in workers]
        assert all("progress:" in log or "summary:" in log for log in logs)
        assert all("enriched=0 " not in _last_summary(log) for log in logs), "a worker got no partitions"
    seen = api.ips_seen()
    assert set(seen) == set(public) and max(seen.values()) == 1
    assert api.count_429 == 0 and api.max_in_window() <= 15


def _last_summary(log: str) -> str:
    lines = [line for line in log.splitlines() if "summary:" in line]
    return lines[-1] if lines else ""


async def test_killed_worker_due_entries_are_retried_by_the_survivor(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Entries left NULL by a rate-limited period are resolved after one of two workers is killed."""
    public, _, _ = addresses(400, seed=23)
    faults = Faults(force_429=True)
    async with IpApiServer(ServerConfig(window=WINDOW), faults=faults) as api:
        settings = make_settings(
            kafka_bootstrap,
            tmp_path,
            providers=("ipapi",),
            ipapi_url=api.url,
            budget_window=WINDOW,
            retry_interval=1.0,
            retry_base=2.0,
            retry_cap=8.0,
            # a request the killed worker wrote down as pending but never delivered is re-emitted after this
            # (longer than the survivor's takeover plus its cold-start wait, shorter than the test)
            pending_timeout=30.0,
        )
        await ensure_topics(settings)
        workers = [WorkerProcess(settings, tmp_path / f"w{i}", tmp_path / f"w{i}.log") for i in range(2)]
        try:
            await wait_for(lambda: all(w.ready() for w in workers), 90, message="both workers ready")
            async with Outputs(settings) as out:
                await publish_all(
                    kafka_bootstrap, settings.events_topic, [json.dumps({"ip": ip}).encode() for ip in public]
                )

                async def all_null() -> bool:
                    await out.poll()
                    return all(out.resolved.get(ip, {}).get("status") == "unresolved" for ip in public)

                await wait_for(all_null, 120, interval=0.2, message=lambda: f"NULL: {out.statuses()}")
                workers[0].kill()
                faults.force_429 = False

                async def all_resolved() -> bool:
                    await out.poll()
                    return all(out.resolved[ip]["status"] == "resolved" for ip in public)

                await wait_for(
                    all_resolved,
                    180,
                    interval=0.2,
                    message=lambda: f"resolved: {out.statuses()}\n{workers[1].tail()}",
                )
        finally:
            for w in workers:
                w.stop()
        assert not api.banned and api.violations == 0
        asked = api.ips_seen()
        assert set(asked) == set(public)
        # Known gap (issue 5 stays open): after a SIGKILL the same attempt can be asked up to 4 times
        # (survivor's timer, redelivered resolve batch, pending timeout); printed for the record.
        print(f"max asks per IP after the crash: {max(asked.values())}")
