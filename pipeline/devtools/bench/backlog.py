"""`geo-pipeline bench` (backlog mode): a cold worker drains a backlog, beside a plain aiokafka loop.

The case users live in after downtime or a burst: N events over K distinct IPs arriving at once at workers
whose cache is empty (a new app: nothing resolved yet), the offline provider only. The workers join the
group first, then the burst is published faster than they drain it (a backlog from their point of view),
so a rebalance in the middle is not what is measured. Measured in one run on one broker:
- the baseline, a plain consume-parse-produce-commit loop over the same events, before and after;
- the pipeline: W worker processes (separate processes, like production; the benchmark's own reading
  must not share their interpreter), timed from the first to the last enriched record by the records' own
  timestamps (set by the broker when it appends them);
- what users get: the share of enriched events carrying a country among IPs the offline data knows, the
  share served by a near-cache hit (every other event was an IP's first sight in its worker), and each
  worker's peak RSS.
The enriched topic is read after the workers are done, so the measurement does not compete with it.
With `quix_python`, Quix Streams does the same job in the same run, before the second baseline
(quix.py). With `ecs`, the pipeline drains the burst a second time in the same run, on fresh topics, as
ECS network events with two IP fields (`source.ip`, `destination.ip` over the same IPs) written in the
`ecs` shape, and the summary puts ecs/2-fields beside envelope/1-field. The enriched topics stamp records
on append (LogAppendTime): an enriched record keeps its input's timestamp, which says nothing here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.app import ensure_topics
from pipeline.config.settings import Settings
from pipeline.devtools.bench import ckloop
from pipeline.devtools.bench.baseline import (
    PARTITIONS,
    baseline,
    create_topics,
    delete_topics,
    stamped_on_append,
)
from pipeline.devtools.bench.ckloop import confluent_loop
from pipeline.devtools.bench.profile import report
from pipeline.devtools.bench.quix import QuixResult, run_quix
from pipeline.devtools.bench.readback import Readback, read_output
from pipeline.devtools.processes import WorkerProcess, wait_count, worker_processes
from pipeline.devtools.scratch import scratch
from pipeline.devtools.workloads import ecs_events, public_ips, publish, tagged_events

START_TIMEOUT = 120.0  # for the workers to start and join
ECS_FIELDS = ("source.ip", "destination.ip")  # the ecs run's IP fields: a network event's two ends
ECS_GOAL = 0.7  # ecs with two fields per event at least this share of the envelope's rate with one


async def run_backlog_bench(
    base: Settings,
    environ: Mapping[str, str],
    *,
    events: int = 200_000,
    ips: int = 2_000,
    workers: int = 1,
    quix_python: str | None = None,
    profile: bool = False,
    prepublished: bool = False,
    ecs: bool = False,
) -> int:
    """Publish the backlog, run baseline / W workers / (ecs with two fields) / (Quix Streams with
    `quix_python`) / baseline, print rates, ratios, coverage and RSS; with `profile`, the workers run under
    cProfile and their time is printed by stage (profile.py). `prepublished`: the burst is published before
    the workers (and the Quix job) start, so they drain a backlog nobody is still writing, as the plain
    loops do (one worker: more would rebalance while draining), and the hot path drains it while the
    worker's tables recover and its agents start; otherwise it is published once the workers are ready."""
    with scratch("bench", base, environ, partitions=PARTITIONS, providers=("offline",)) as run:
        return await _run(
            run.settings, run.run, run.tmp, events, ips, workers, quix_python, profile, prepublished, ecs
        )


async def _run(
    settings: Settings,
    run: str,
    tmp: Path,
    events: int,
    n_ips: int,
    n_workers: int,
    quix_python: str | None,
    profile: bool,
    prepublished: bool,
    ecs: bool = False,
) -> int:
    bootstrap = settings.kafka_bootstrap
    base_in, base_out = f"bench-base-in-{run}", f"bench-base-out-{run}"
    ck_out = f"bench-ck-out-{run}"
    ck = ckloop.available()
    ips = public_ips(n_ips, seed=13, offline_known=False)
    payloads = tagged_events(ips, events, f"b-{run}")
    print(
        f"bench (backlog): broker {bootstrap}, {events:,} events over {len(ips):,} IPs, cold start, "
        f"{n_workers} worker process(es), {PARTITIONS} "
        f"partitions, offline provider, topics *-{run}",
        flush=True,
    )
    if not ck:
        print("  no confluent-kafka here (the `bench` extra): its plain loop is skipped", flush=True)
    if quix_python:
        print(f"  with Quix Streams (its job in {quix_python}), on a copy of the burst", flush=True)
    quix: QuixResult | None = None
    try:
        await create_topics(bootstrap, [base_in, base_out, ck_out])
        await publish(bootstrap, base_in, payloads, label="baseline input")
        before = await baseline(bootstrap, base_in, base_out, events, "baseline (before)")
        loops = []
        if ck:
            loops.append(await confluent_loop(bootstrap, base_in, ck_out, events, "confluent loop (before)"))
        pipeline, peaks = await _pipeline(
            settings,
            tmp / "workers",
            n_workers,
            payloads,
            run,
            "pipeline (backlog, cold start)",
            profile=profile,
            prepublished=prepublished,
        )
        with_country, known, served = pipeline.with_country, pipeline.known, pipeline.seen
        new = await count_records(bootstrap, settings.seen_topic)
        ecs_run: tuple[Readback, list[float]] | None = None
        if ecs:
            ecs_settings = _ecs_settings(settings)
            ecs_payloads = ecs_events(ips, events, f"b-{run}")
            ecs_run = await _pipeline(
                ecs_settings, tmp / "ecs-workers", n_workers, ecs_payloads, run, "pipeline (ecs, 2 fields)"
            )
        if quix_python:
            quix = await run_quix(bootstrap, run, tmp, payloads, quix_python, prepublished)
        after = await baseline(bootstrap, base_in, base_out, events, "baseline (after)")
        if ck:
            loops.append(await confluent_loop(bootstrap, base_in, ck_out, events, "confluent loop (after)"))
    finally:
        await delete_topics(bootstrap, run)
    mean = (before.per_second + after.per_second) / 2
    print("\nsummary:")
    extra = [*([ecs_run[0].rate] if ecs_run else []), *([quix.output.rate] if quix else [])]
    for rate in (before, after, *loops, pipeline.rate, *extra):
        print(f"  {rate.line()}")
    print(f"  baseline (plain aiokafka loop) mean: {mean:,.0f} events/s")
    print(f"  ratio pipeline/baseline: {pipeline.rate.per_second / mean:.2f}  (goal >= 0.5 with one worker)")
    if loops:
        ck_mean = sum(rate.per_second for rate in loops) / len(loops)
        print(f"  plain confluent-kafka loop mean: {ck_mean:,.0f} events/s, {ck_mean / mean:.2f}x aiokafka's")
        print(f"  ratio pipeline/confluent loop: {pipeline.rate.per_second / ck_mean:.2f}  (goal >= 0.5)")
    share = with_country / max(1, known)
    print(f"  with a country: {with_country:,} of {known:,} events whose IP has offline data: {share:.2%}")
    hits = served - new
    print(f"  near-cache hits: {hits:,} of {served:,}, {hits / max(1, served):.1%}; first sights {new:,}")
    print(f"  peak RSS per worker: {', '.join(f'{p:.0f} MiB' for p in peaks)}")
    for i, line in enumerate(stage_lines(tmp / "workers")):
        print(f"  worker {i} {line}")
    if ecs_run:
        ecs_out, ecs_peaks = ecs_run
        ratio = ecs_out.rate.per_second / max(1e-9, pipeline.rate.per_second)
        print(
            f"  ecs/2 fields vs envelope/1 field: {ecs_out.rate.per_second:,.0f} vs "
            f"{pipeline.rate.per_second:,.0f} events/s = {ratio:.2f}  (goal >= {ECS_GOAL})"
        )
        print(f"  ecs: with a country (source.geo): {ecs_out.with_country:,} of {ecs_out.known:,} events")
        print(f"  ecs: peak RSS per worker: {', '.join(f'{p:.0f} MiB' for p in ecs_peaks)}")
    for line in quix.lines(mean, pipeline.rate) if quix else []:
        print(f"  {line}")
    if profile:
        print("\nprofile (cProfile: a profiled worker is slower; the rates above are not benchmark figures):")
        for line in report(sorted((tmp / "workers").glob("w*.prof")), events):
            print(f"  {line}")
    ok = served == events and (quix is None or quix.output.seen == events)
    return 0 if ok and (ecs_run is None or ecs_run[0].seen == events) else 1


def _ecs_settings(settings: Settings) -> Settings:
    """The same run's settings for the ecs pass: its own app id and topics, two IP fields, the ecs shape."""
    ecs = dataclasses.replace(
        settings,
        app_id=f"{settings.app_id}-ecs",
        events_topic=f"{settings.events_topic}-ecs",
        dlq_topic=f"{settings.dlq_topic}-ecs",
        enriched_topic=f"{settings.enriched_topic}-ecs",
        resolved_topic=f"{settings.resolved_topic}-ecs",
        resolve_topic=f"{settings.resolve_topic}-ecs",
        ip_fields=ECS_FIELDS,
        output_format="ecs",
    )
    ecs.validate()
    return ecs


def _ecs_country(doc: dict[str, Any]) -> object:
    geo = doc["source"].get("geo")
    return geo.get("country_iso_code") if isinstance(geo, dict) else None


async def _pipeline(
    settings: Settings,
    workdir: Path,
    n_workers: int,
    payloads: list[bytes],
    run: str,
    label: str,
    *,
    profile: bool = False,
    prepublished: bool = False,
) -> tuple[Readback, list[float]]:
    """W cold workers drain `payloads` published as a burst (before they start, with `prepublished`);
    the enriched topic read back afterwards."""
    bootstrap = settings.kafka_bootstrap
    ecs = settings.output_format == "ecs"
    await stamped_on_append(bootstrap, settings.enriched_topic)
    await ensure_topics(settings)
    if prepublished:
        await publish(bootstrap, settings.events_topic, payloads, label=f"burst ({label}), before the start")
    with worker_processes(settings, workdir, n_workers, profile=profile) as procs:
        # the workers join first (a rebalance in the middle of a 6 s drain would measure the join, not
        # the pipeline) and, unless the burst is there before them, have started whole; their cache is
        # still empty: every IP of the burst is new to them
        await wait_assigned(procs, ready=not prepublished)
        if not prepublished:
            await publish(bootstrap, settings.events_topic, payloads, label=f"burst ({label})")
        peaks = await drain(settings, procs, len(payloads))
    output = await read_output(
        bootstrap,
        settings.enriched_topic,
        len(payloads),
        f'"b-{run}"'.encode(),
        label,
        _ecs_country if ecs else lambda doc: doc["geo"]["country_code"],
        (lambda doc: str(doc["source"]["ip"])) if ecs else (lambda doc: str(doc["ip"])),
    )
    return output, peaks


def stage_lines(workdir: Path) -> list[str]:
    """Each worker's last "time by stage" line (the hot path logs it at stop), from its log."""
    found = []
    for log in sorted(workdir.glob("w*.log")):
        lines = [line for line in log.read_text(errors="replace").splitlines() if "time by stage" in line]
        if lines:
            found.append(lines[-1][lines[-1].index("ingest: ") :])
    return found


async def wait_assigned(procs: list[WorkerProcess], *, ready: bool = False) -> None:
    """Until the input partitions are spread over every worker's hot path (their last assignment lines);
    with `ready`, also until every worker printed its ready line. The hot path starts before Faust's
    tables have recovered and its agents run, so a drain measured from the assignment alone overlaps the
    worker's own start (what a worker restarted onto a backlog does; not the steady state)."""
    started = time.monotonic()
    while True:
        latest = [_last_assignment(proc) for proc in procs]
        spread = all(latest) and sum(len(parts) for parts in latest) == PARTITIONS
        if spread and (not ready or all(proc.ready() for proc in procs)):
            print(f"  {len(procs)} worker(s) assigned in {time.monotonic() - started:.1f}s", flush=True)
            return
        if time.monotonic() - started > START_TIMEOUT:
            raise TimeoutError(f"workers not assigned: {latest}\n" + "\n".join(p.tail() for p in procs))
        for proc in procs:
            proc.check()  # raises with the log's tail if the worker died
        await asyncio.sleep(0.5)  # polling the workers' logs: there is no event to wait on


def _last_assignment(proc: WorkerProcess) -> list[str]:
    lines = [
        line
        for line in proc.log_path.read_text(errors="replace").splitlines()
        if "ingest: assigned [" in line
    ]
    return re.findall(r"\[(\d+)\]", lines[-1].partition("assigned")[2]) if lines else []


async def drain(settings: Settings, procs: list[WorkerProcess], events: int) -> list[float]:
    """Wait until the workers committed the whole input (cheap polling of the group's offsets), showing
    progress; returns each worker's peak RSS in MiB."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()

    async def committed() -> int:
        offsets = await admin.list_consumer_group_offsets(f"{settings.app_id}-ingest")
        return int(sum(meta.offset for tp, meta in offsets.items() if tp.topic == settings.events_topic))

    try:
        timeout = START_TIMEOUT + events / 500
        return await wait_count(committed, events, procs, "committed input events", timeout)
    finally:
        await admin.close()


async def count_records(bootstrap: str, topic: str) -> int:
    """Records on `topic` (every partition's end offset: nothing is ever deleted from it during a run)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # a topic the workers created needs fresh metadata
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return int(sum((await consumer.end_offsets(tps)).values()))
    finally:
        await consumer.stop()
