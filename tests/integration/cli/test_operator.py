"""The operator's view against the real broker: the HTTP API and metrics of a running worker, answers from
the table's owner across two worker processes, the CLI end to end, and the topic contract at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.app import build, ensure_topics, running
from pipeline.cli.cluster import parse_metrics, worker_urls
from pipeline.cli.present import Samples
from pipeline.config.settings import Settings
from pipeline.devtools.fake_ipapi import IpApiServer, ServerConfig
from pipeline.devtools.processes import PACKAGE_ROOT
from pipeline.devtools.workloads import public_ips
from pipeline.errors import ConfigError
from pipeline.kafka import topics
from pipeline.kafka.partitioner import key_hash
from pipeline.web.server import WebServer, listen
from tests.support.kafka import create_topics, wait_for
from tests.support.pipeline import WINDOW, make_settings, publish_values
from tests.support.workers import running_workers, settings_env

pytestmark = pytest.mark.integration

PRIVATE = "10.9.0.1"
UNKNOWN = "203.0.113.99"  # documentation space: never produced by these tests


async def get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        text = await reply.text()
        return reply.status, json.loads(text) if reply.content_type == "application/json" else text


async def metrics(url: str) -> Samples:
    status, text = await get(f"{url}/metrics")
    assert status == 200
    return parse_metrics(text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for found, v in samples.get(name, ()) if all(found.get(k) == x for k, x in labels.items()))


async def test_api_and_metrics_of_a_running_worker(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A worker on the real broker with the fake ip-api: a resolved IP, a private one, an unknown one and
    garbage get 200/200/404/400; /health and /ready are 200; the metrics count what flowed through."""
    public = public_ips(5, seed=31)
    async with IpApiServer(ServerConfig(window=WINDOW)) as api:
        settings = make_settings(
            kafka_bootstrap,
            tmp_path,
            providers=("ipapi", "offline"),
            ipapi_url=api.url,
            budget_window=WINDOW,
            web_port=0,
        )
        sock, url = listen(settings)
        geo = build(settings, url=url)
        async with running(geo, services=[WebServer(geo, sock, url)]):
            before = await metrics(url)
            events = [json.dumps({"ip": ip, "n": n}).encode() for n in range(2) for ip in public]
            events += [PRIVATE.encode(), b"010.1.1.1", b'{"host": "x"}']
            await publish_values(
                kafka_bootstrap, settings.events_topic, events, partitions=4, mixed_keys=True
            )

            async def all_resolved() -> bool:
                answers = [await get(f"{url}/geo/{ip}") for ip in public]
                return all(s == 200 and body["entry"]["status"] == "resolved" for s, body in answers)

            await wait_for(all_resolved, 60, interval=0.3, message=lambda: geo.stats.line())
            status, body = await get(f"{url}/geo/{public[0]}")
            assert body["entry"]["provider"] == "ipapi" and body["worker"]["url"] == url
            status, body = await get(f"{url}/geo/{PRIVATE}")
            assert (status, body["entry"]["status"]) == (200, "private")
            assert (await get(f"{url}/geo/{UNKNOWN}"))[0] == 404
            assert (await get(f"{url}/geo/not-an-ip"))[0] == 400
            assert (await get(f"{url}/health"))[0] == 200
            status, body = await get(f"{url}/ready")
            assert (status, body["reasons"]) == (200, [])

            async def flowed() -> Samples | None:
                after = await metrics(url)
                return after if value(after, "geo_events_in_total") == len(events) else None

            after = await wait_for(flowed, 30, message="every event counted")
    assert value(before, "geo_events_in_total") == 0
    assert value(after, "geo_events_enriched_total") == len(events) - 2
    assert value(after, "geo_events_dead_lettered_total", reason="invalid_ip") == 1
    assert value(after, "geo_events_dead_lettered_total", reason="missing_ip") == 1
    assert (
        value(after, "geo_near_cache_misses_total") + value(after, "geo_near_cache_hits_total")
        == len(events) - 2
    )
    assert value(after, "geo_resolve_answers_total", provider="ipapi", outcome="resolved") >= len(public)
    assert value(after, "geo_ipapi_requests_total", status="2xx") >= 1
    assert value(after, "geo_ipapi_breaker_state", state="closed") == 1
    assert value(after, "geo_ipapi_requests_sent_total") >= 1
    assert value(after, "geo_table_entries", status="resolved") == len(public)
    assert value(after, "geo_table_entries", status="private") == 1
    assert {labels["partition"] for labels, _ in after["geo_consumer_lag"]} == {"0", "1", "2", "3"}
    assert value(after, "geo_consumer_lag") == 0
    assert value(after, "geo_worker_ready") == 1
    assert value(after, "geo_http_requests_total", route="/geo/{ip}", status="400") == 1


def cli(
    settings: Settings, *args: str, stdin: str = "", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline <args>` as an operator runs it, configured only through the environment."""
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(PACKAGE_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        input=stdin,
        env=env,
        cwd=PACKAGE_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
async def test_cli_and_owner_answers_across_two_workers(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Two worker processes: `produce` feeds them from stdin, `tail` shows the enriched events, `lookup`
    gets every IP from the worker owning its table partition (forwarded when asked of the other), `stats`
    sums both workers, `topics check` passes; with the workers gone, `lookup` reads the resolved topic."""
    settings = make_settings(kafka_bootstrap, tmp_path, providers=("offline",))
    public = public_ips(12, seed=33)
    lines = [*public, json.dumps({"ip": public[0], "jail": "sshd"}), PRIVATE, "not-an-ip", ""]
    async with running_workers(settings, tmp_path, n=2) as workers:
        try:
            urls = await wait_for(lambda: _two(worker_urls(settings)), 30, message="both workers")
        except AssertionError:
            raise AssertionError(
                f"{await _group(settings)}\n" + "\n".join(w.tail(40) for w in workers)
            ) from None

        async def settled() -> bool:
            """Both ready, and their hot paths share the input partitions (the groups settled)."""
            assigned = []
            for url in urls:
                if (await get(f"{url}/ready"))[0] != 200:
                    return False
                lag = (await metrics(url)).get("geo_consumer_lag", ())
                assigned.append({labels["partition"] for labels, _ in lag})
            return all(assigned) and set().union(*assigned) == {"0", "1", "2", "3"}

        try:
            await wait_for(settled, 60, interval=0.3, message="both workers ready and consuming")
        except (AssertionError, aiohttp.ClientError) as exc:
            logs = "\n".join(w.tail(60) for w in workers)
            raise AssertionError(f"{exc!r}: {urls}\n{logs}") from None
        produced = cli(settings, "produce", stdin="\n".join(lines) + "\n")
        assert produced.returncode == 0, produced.stderr
        assert f"produce: {len(lines) - 1} records" in produced.stderr

        last: list[Any] = []

        async def owners_answer() -> dict[str, Any] | None:
            bodies = {}
            for ip in public:
                status, body = await get(f"{urls[0]}/geo/{ip}")
                if status != 200 or body["entry"]["status"] != "resolved":
                    last[:] = [status, body]
                    return None
                bodies[ip] = body
            return bodies

        def why() -> str:
            logs = "\n".join(w.tail(40) for w in workers)
            return f"every public IP resolved; last answer {last}; {diag}; logs:\n{logs}"

        diag: list[Any] = []
        try:
            bodies = await wait_for(owners_answer, 60, interval=0.3, message="resolved")
        except AssertionError:
            diag.append(await _offsets(settings))
            raise AssertionError(why()) from None
        owners = {body["worker"]["url"] for body in bodies.values()}
        assert owners == set(urls), "both workers own table partitions"
        for ip, body in bodies.items():
            assert body["partition"] == key_hash(ip.encode()) % settings.partitions
            forwarded = body["worker"]["url"] != urls[0]
            assert (body.get("forwarded_by", {}).get("url") == urls[0]) is forwarded

        tail = cli(settings, "tail", "enriched", "--from-beginning", "--count", str(len(lines) - 2))
        assert tail.returncode == 0, tail.stderr
        shown = tail.stdout.splitlines()
        assert len(shown) == len(lines) - 2 and {line.split()[0] for line in shown} == {*public, PRIVATE}
        dlq = cli(settings, "tail", "dlq", "--from-beginning", "--count", "1", "--json")
        assert json.loads(dlq.stdout)["reason"].startswith("invalid ip")

        lookup = cli(settings, "lookup", public[0], PRIVATE, UNKNOWN)
        assert lookup.returncode == 1  # one IP is unknown
        found = lookup.stdout.splitlines()
        assert found[0].split()[:2] == [public[0], "resolved"] and "(worker " in found[0]
        assert found[1].split()[:2] == [PRIVATE, "private"]
        assert "never seen" in found[2]

        stats = cli(settings, "stats")
        assert stats.returncode == 0, stats.stderr
        table = stats.stdout.splitlines()
        assert {row.split()[0] for row in table[1:3]} == set(urls)
        assert table[3].split()[:2] == ["total", str(len(lines) - 1)]  # every record in, on some worker

        check = cli(settings, "topics", "check")
        assert check.returncode == 0 and "every existing topic matches" in check.stdout
    offline = cli(settings, "lookup", public[1], "--json")
    assert offline.returncode == 0, offline.stderr
    answer = json.loads(offline.stdout)
    assert answer["entry"]["status"] == "resolved"
    assert answer["source"] == f"topic {settings.resolved_topic} (no worker up)"
    mixed = cli(settings, "lookup", "not-an-ip", UNKNOWN, public[1], "--json")  # each answered in order
    assert mixed.returncode == 1
    bodies = [json.loads(line) for line in mixed.stdout.splitlines()]
    assert [body.get("error", "found") for body in bodies] == [
        "invalid ip: not an IP address",
        "never seen",
        "found",
    ]
    assert bodies[2]["entry"]["status"] == "resolved"


async def _offsets(settings: Settings) -> str:
    """Diagnostics: the Faust group's committed offsets beside the end offsets of the seen topic."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(settings.app_id)
        tps = [TopicPartition(settings.seen_topic, p) for p in range(settings.partitions)]
        ends = await consumer.end_offsets(tps)
        return "seen committed/end: " + ", ".join(
            f"{tp.partition}:{getattr(committed.get(tp), 'offset', None)}/{ends[tp]}" for tp in tps
        )
    finally:
        await consumer.stop()
        await admin.close()


async def _group(settings: Settings) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([settings.app_id])
        return repr([(g[2], [(m[0], len(m[3])) for m in g[5]]) for g in response.groups])
    finally:
        await admin.close()


async def _two(found: Any) -> list[str] | None:
    urls: list[str] = await found
    return urls if len(urls) == 2 else None


async def test_topic_contract_is_enforced_at_start_and_policies_are_fixed(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Existing topics with a delete policy where the layout compacts, and a co-partitioned topic with the
    wrong count, stop the start with one error naming both; `topics fix` sets the policy (keeping the
    topic's other configs), the partition count stays a problem with its own fix."""
    settings = make_settings(kafka_bootstrap, tmp_path)
    bystander = f"{settings.app_id}-never-created"
    found, _ = await topics.run(settings, fix=False)  # nothing exists yet: nothing wrong, nothing created
    assert found == []
    await create_topics(
        kafka_bootstrap,
        {settings.resolved_topic: 4},
        {"cleanup.policy": "delete", "retention.ms": "86400000"},
    )
    await create_topics(kafka_bootstrap, {settings.seen_topic: 2})
    with pytest.raises(ConfigError) as caught:
        await ensure_topics(settings)
    text = str(caught.value)
    assert text.startswith("2 topics break the pipeline's contract")
    assert f"topic {settings.resolved_topic} has cleanup.policy=delete" in text and "topics fix" in text
    assert f"topic {settings.seen_topic} has 2 partitions but GEO_PARTITIONS=4" in text

    found, fixed = await topics.run(settings, fix=True)
    assert [p.topic for p in fixed] == [settings.resolved_topic]
    left, _ = await topics.run(settings, fix=False)
    assert [p.topic for p in left] == [settings.seen_topic]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        configs = await topics.inspect(admin, [settings.resolved_topic, bystander])
        assert configs[settings.resolved_topic].policy == "compact"
        assert bystander not in await admin.list_topics()  # checking a name never creates it
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        [response] = await admin.describe_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC, settings.resolved_topic, configs={"retention.ms": None}
                )
            ]
        )
        assert response.resources[0][4][0][1] == "86400000"  # the fix kept the topic's other configs
    finally:
        await admin.close()
