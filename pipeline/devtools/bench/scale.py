"""`geo-pipeline bench --mode scale`: millions of distinct IPs, as on a firewall facing the internet.

What it measures, in one run on one broker, beside a plain aiokafka loop over the same events:
1. the burst: every IP of a population of P arrives once, at cold workers (P distinct first sights);
2. the table holds an entry for every one of them, then the workers stop and start again (a cold restart:
   new processes, same data dirs), and the time each takes to catch up with the resolved topic is read
   from its log;
3. the second pass: N events drawn Zipf-like over the population (a few heavy hitters and a long tail,
   rank r with probability ~ 1/r), every IP already known to the table. What users get is the share of
   those events that carry the table's entry rather than a provisional one: a provisional entry is built
   `pending` when the event is routed, after the restart; the table's is older or an answer.
It prints events/s and the ratio to the baseline for both passes, that share, each worker's peak RSS, its
replica's size on disk and its catch-up time. With `quix_python`, Quix Streams runs on the burst too.
"""

from __future__ import annotations

import ipaddress
import json
import random
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiohttp

from pipeline.app import REPLICA_DIR, ensure_topics
from pipeline.config.settings import Settings
from pipeline.devtools.bench.backlog import count_records, drain, wait_assigned
from pipeline.devtools.bench.baseline import (
    PARTITIONS,
    Rate,
    baseline,
    create_topics,
    delete_topics,
    stamped_on_append,
)
from pipeline.devtools.bench.quix import QuixResult, run_quix
from pipeline.devtools.bench.readback import read_output
from pipeline.devtools.processes import WorkerProcess, wait_count, worker_processes
from pipeline.devtools.scratch import scratch
from pipeline.devtools.workloads import publish

FIRST = int(ipaddress.IPv4Address("20.0.0.0"))  # 20.0.0.0/6: public address space the offline data knows
SPAN = 1 << 26  # addresses in 20.0.0.0/6
STRIDE = 2_654_435_761  # odd, so i -> FIRST + i * STRIDE mod SPAN visits distinct addresses, well spread
CREATE_RATE = 500  # entries a second the table's owners create at least (first sights): bounds the wait


def population_ip(i: int) -> str:
    """The i-th IP of the population: distinct for i < 2**26, spread over 20.0.0.0/6."""
    return str(ipaddress.IPv4Address(FIRST + (i * STRIDE) % SPAN))


def zipf_ranks(population: int, n: int, seed: int) -> list[int]:
    """`n` ranks in [0, population) with P(r) ~ 1/(r+1): a few heavy hitters and a long tail."""
    rng = random.Random(seed)
    return [min(population - 1, int(population ** rng.random()) - 1) for _ in range(n)]


def events_for(ranks: Sequence[int], tag: str) -> list[bytes]:
    return [
        json.dumps({"ip": population_ip(r), "bench": tag, "seq": i}, separators=(",", ":")).encode()
        for i, r in enumerate(ranks)
    ]


async def run_scale_bench(
    base: Settings,
    environ: Mapping[str, str],
    *,
    population: int = 5_000_000,
    events: int | None = None,
    workers: int = 1,
    quix_python: str | None = None,
) -> int:
    """Burst of `population` distinct IPs, a cold restart, then `events` (default: `population`) Zipf
    events over them; beside the baseline (and Quix Streams on the burst with `quix_python`)."""
    with scratch("scale", base, environ, partitions=PARTITIONS, providers=("offline",)) as run:
        second = events or population
        s = run.settings
        print(
            f"bench (scale): broker {s.kafka_bootstrap}, {population:,} distinct IPs, then {second:,} Zipf "
            f"events over them after a cold restart; {workers} worker process(es), {PARTITIONS} partitions, "
            f"offline provider, topics *-{run.run}",
            flush=True,
        )
        try:
            return await _run(s, run.run, run.tmp, population, second, workers, quix_python)
        finally:
            await delete_topics(s.kafka_bootstrap, run.run)


async def _run(
    settings: Settings, run: str, tmp: Path, population: int, second: int, n: int, quix_python: str | None
) -> int:
    bootstrap = settings.kafka_bootstrap
    burst = events_for(range(population), f"s1-{run}")
    zipf = events_for(zipf_ranks(population, second, seed=5), f"s2-{run}")
    base_in, base_out = f"scale-base-in-{run}", f"scale-base-out-{run}"
    zipf_in, zipf_out = f"scale-zipf-in-{run}", f"scale-zipf-out-{run}"
    await create_topics(bootstrap, [base_in, base_out, zipf_in, zipf_out])
    await publish(bootstrap, base_in, burst, label="baseline burst input")
    base_burst = await baseline(bootstrap, base_in, base_out, population, "baseline (burst)")
    await stamped_on_append(bootstrap, settings.enriched_topic)  # enriched records keep the input's time
    await ensure_topics(settings)
    workdir = tmp / "workers"
    with worker_processes(settings, workdir, n) as procs:
        await wait_assigned(procs, ready=True)  # the table's owners run before the first sights arrive
        burst_at = time.monotonic()
        await publish(bootstrap, settings.events_topic, burst, label="burst")
        peaks = await drain(settings, procs, population)
        print("  waiting until the table has an entry for every IP of the population ...", flush=True)
        peaks = _max(peaks, await _until_known(procs, population))
        known_after = time.monotonic() - burst_at  # from the burst's first record to the last entry
    restart_at = time.time()
    burst_out = await read_output(
        bootstrap, settings.enriched_topic, population, f'"s1-{run}"'.encode(), "pipeline (burst)", _country
    )
    for log in workdir.glob("w*.log"):  # the restarted workers log afresh: their lines are read below
        log.rename(log.with_suffix(".first-pass.log"))
    with worker_processes(settings, workdir, n) as procs:  # the same data dirs: a cold restart
        await wait_assigned(procs)  # the hot paths only: they serve while the tables recover
        catch_up = [_catch_up(proc) for proc in procs]
        await publish(bootstrap, settings.events_topic, zipf, label="zipf pass")
        peaks = _max(peaks, await drain(settings, procs, population + second))
        replica = [_disk_mib(proc.data_dir / REPLICA_DIR) for proc in procs]
    zipf_run = await read_output(
        bootstrap,
        settings.enriched_topic,
        second,
        f'"s2-{run}"'.encode(),
        "pipeline (Zipf)",
        lambda doc: _tables(doc, restart_at),
    )
    await publish(bootstrap, zipf_in, zipf, label="baseline Zipf input")
    base_zipf = await baseline(bootstrap, zipf_in, zipf_out, second, "baseline (Zipf)")
    quix: QuixResult | None = None
    if quix_python:
        quix = await run_quix(bootstrap, run, tmp, burst, quix_python)
    new = await count_records(bootstrap, settings.seen_topic)
    print("\nsummary:")
    _ratio("burst of distinct IPs", burst_out.rate, base_burst)
    _ratio("Zipf pass after a cold restart", zipf_run.rate, base_zipf)
    print(
        f"  first sights: the table had an entry for all {population:,} IPs {known_after:.1f} s after the "
        f"burst began = {population / known_after:,.0f} entries/s"
    )
    if quix is not None:
        q = quix.output.rate
        print(
            f"  Quix Streams on the burst: {q.per_second:,.0f} events/s = "
            f"{q.per_second / base_burst.per_second:.2f} of the baseline; "
            f"pipeline/Quix {burst_out.rate.per_second / q.per_second:.2f}"
        )
    table, known = zipf_run.with_country, zipf_run.known
    print(
        f"  Zipf events carrying the table's entry: {table:,} of {known:,} = "
        f"{table / max(1, known):.3%} (target >= 99.9%)"
    )
    print(f"  seen records (first sights and touches) over both passes: {new:,} for {population:,} IPs")
    print(f"  peak RSS per worker: {', '.join(f'{p:.0f} MiB' for p in peaks)} (target <= 300)")
    print(f"  replica on disk per worker: {', '.join(f'{m:.1f} MiB' for m in replica)}")
    print(f"  catch-up after the restart: {', '.join(catch_up)}")
    return 0 if burst_out.seen == population and zipf_run.seen == second else 1


def _country(doc: dict[str, object]) -> object:
    geo = doc["geo"]  # the envelope's public view of the entry (flat)
    return geo.get("country_code") if isinstance(geo, dict) else None


def _tables(doc: dict[str, object], restart_at: float) -> object:
    """Counted as 'with a country' by the readback: here, whether the event carries the table's entry rather
    than a provisional one. A provisional entry is `pending` and made when the event was routed, after the
    restart; the table's entry is either older than the restart or an answer (any other status: an entry
    still resolving at the restart is answered after it, and is the table's all the same)."""
    geo = doc["geo"]  # the public view has no first_seen
    if not isinstance(geo, dict):
        return False
    updated_at = geo.get("updated_at")
    fresh = isinstance(updated_at, int | float) and updated_at >= restart_at
    return not (fresh and geo.get("status") == "pending")


def _ratio(what: str, rate: Rate, base: Rate) -> None:
    print(
        f"  {what}: {rate.per_second:,.0f} events/s = {rate.per_second / base.per_second:.2f} of the "
        f"baseline ({base.per_second:,.0f}/s)"
    )


def _max(a: list[float], b: list[float]) -> list[float]:
    return [max(x, y) for x, y in zip(a, b, strict=True)]


async def _until_known(procs: list[WorkerProcess], population: int) -> list[float]:
    """Until the workers' tables hold `population` entries, of any status (their /metrics)."""
    urls = [_api_url(proc) for proc in procs]

    async def entries() -> int:
        total = 0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            for url in urls:
                async with session.get(f"{url}/metrics") as reply:
                    for line in (await reply.text()).splitlines():
                        found = re.match(r'geo_table_entries\{status="(\w+)"\} ([\d.e+]+)', line)
                        if found:
                            total += int(float(found[2]))
        return total

    return await wait_count(entries, population, procs, "table entries", 120 + population / CREATE_RATE)


def _api_url(proc: WorkerProcess) -> str:
    found = re.search(r"API at (http://\S+)", proc.log_path.read_text(errors="replace"))
    if found is None:
        raise RuntimeError(f"no API URL in the worker's log:\n{proc.tail()}")
    return found[1]


def _catch_up(proc: WorkerProcess) -> str:
    log = proc.log_path.read_text(errors="replace")
    lines = re.findall(r"replica: caught up with \S+ in ([\d.]+)s \((\d+) records read", log)
    return f"{lines[-1][0]} s ({int(lines[-1][1]):,} records)" if lines else "not logged"


def _disk_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20 if path.exists() else 0.0
