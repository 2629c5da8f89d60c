"""`geo-pipeline worker`: one worker process, with its HTTP API, under Faust's process supervisor.

Order: the Faust/aiokafka internals our fixes hook checked (pipeline/kafka/hooks.py), Kafka credentials
checked (one clear error), topics created and checked against the contract, the app built with the API's
socket bound (its URL is in the group metadata), then `faust.Worker` starts the API first and the app
after it, handles SIGTERM/SIGINT and stops both. Faust keeps our logging
(`override_logging=False`, see pipeline/cli/logs.py); its terminal spinner is off. Two lines go to standard
output whatever the log level: the API's URL at start, and READY_LINE once the app has started and its
tables recovered (supervisors and tests wait for it; Faust's own "Ready" is an INFO log line of a logger
held at WARNING).
"""

from __future__ import annotations

import asyncio

import faust

from pipeline.app import build, ensure_topics
from pipeline.config.settings import Settings
from pipeline.kafka.hooks import faust_hooks, require
from pipeline.kafka.preflight import check_kafka
from pipeline.storage import tune_malloc
from pipeline.web.server import WebServer, listen

READY_LINE = "geo-pipeline worker ready"


class Worker(faust.Worker):
    """faust.Worker that prints READY_LINE when the app has started (after table recovery)."""

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        print(f"{READY_LINE}: {self.app.conf.canonical_url}", flush=True)


def run_worker(settings: Settings) -> int:
    tune_malloc(settings.malloc_arenas)  # before RocksDB's and aiokafka's threads exist
    require(faust_hooks())  # a Faust/aiokafka that no longer calls a hooked name: one error, before Kafka
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(check_kafka(settings))  # a wrong password, protocol or TLS file: one error
        loop.run_until_complete(ensure_topics(settings))  # and a topic breaking the contract: another
    except BaseException:
        asyncio.set_event_loop(None)
        loop.close()  # refused at start: nothing runs on it
        raise
    sock, url = listen(settings)  # bound before the app is built: its URL goes into the group metadata
    geo = build(settings, url=url)
    api = WebServer(geo, sock, url)
    print(f"geo-pipeline worker {settings.worker_label}: API at {url}", flush=True)
    worker = Worker(geo.app, api, loop=loop, override_logging=False, redirect_stdouts=False)
    worker.spinner = None
    worker.execute_from_commandline()
    return 0
