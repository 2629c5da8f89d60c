"""A real Prometheus server (Debian's `prometheus` package) for the integration tests: scraping given
targets every second, with deploy/prometheus's recording rules evaluated every second too."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from pipeline.devtools.broker import free_port
from pipeline.devtools.processes import LoggedProcess
from tests.support.kafka import wait_for
from tests.support.promql import RULE_FILES, tool

STEP = "1s"  # scrape and rule evaluation interval: the recorded values follow the workers within seconds
START_TIMEOUT = 30.0  # seconds for the server to answer /-/ready (about 2 s measured)
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=5)


class Prometheus(LoggedProcess):
    label = "prometheus"

    def __init__(self, workdir: Path, targets: Sequence[str]) -> None:
        rules = workdir / "recording.rules.yml"
        doc = yaml.safe_load(RULE_FILES[0].read_text())
        for group in doc["groups"]:
            group["interval"] = STEP
        rules.write_text(yaml.safe_dump(doc))
        config = {
            "global": {"scrape_interval": STEP, "evaluation_interval": STEP, "scrape_timeout": STEP},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "geo-pipeline", "static_configs": [{"targets": list(targets)}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        command = [
            tool("prometheus"),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={self.url.removeprefix('http://')}",
            "--log.level=warn",
        ]
        super().__init__(command, workdir / "prometheus.log", cwd=workdir)

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of `expr` now: a list of {"metric": labels, "value": [time, "text"]}."""
        async with (
            aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session,
            session.get(f"{self.url}/api/v1/query", params={"query": expr}) as reply,
        ):
            body = await reply.json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    async def scalar(self, expr: str) -> float | None:
        """The single value of `expr`, or None while it has none."""
        result = await self.query(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else None


@contextlib.asynccontextmanager
async def running_prometheus(workdir: Path, targets: Sequence[str]) -> AsyncIterator[Prometheus]:
    """Prometheus scraping `targets` (host:port) as job "geo-pipeline"; ready in the block, then stopped."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = Prometheus(workdir, targets)
    try:

        async def ready() -> bool:
            server.check()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with (
                    aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session,
                    session.get(f"{server.url}/-/ready") as reply,
                ):
                    return reply.status == 200
            return False

        await wait_for(
            ready, START_TIMEOUT, interval=0.2, message=lambda: f"prometheus ready\n{server.tail()}"
        )
        yield server
    finally:
        server.stop()
