"""`geo-pipeline bench --profile`: where a worker's time goes while it drains the backlog, by stage.

Each worker process runs under cProfile (`python -m cProfile -o w<i>.prof -m pipeline worker`), so what is
measured is the real worker: its hot path, its Faust agents taking the first sights into the table, its web
server. After the run every function's own time (cProfile's tottime, wall clock) is put in one stage by
where the function lives; the stages are the steps of a batch (client fetch and decode, JSON parse, IP
normalisation, near-cache lookup, output building, produce, commit) plus the time the event loop sat idle
waiting for the broker (fetch, delivery and commit round trips: cProfile sees them as the loop's select)
and what else shares the worker's core. cProfile adds a cost per Python call, so stages made of many small
calls look larger than they are: read the shares, not the absolute seconds, and the rate of a profiled
run is not a benchmark figure.
"""

from __future__ import annotations

import pstats
from collections.abc import Iterable
from pathlib import Path

Key = tuple[str, int, str]  # pstats' (file, line, function)

# (stage, file part, function part): the first rule whose parts are both in the key wins; "" matches all
RULES: tuple[tuple[str, str, str], ...] = (
    ("idle: waiting for the broker (fetch, delivery, commit)", "~", "poll' of 'select.epoll"),
    ("idle: waiting for the broker (fetch, delivery, commit)", "~", "select.epoll"),
    ("IP normalisation", "hotpath/parsing.py", "_ip"),
    ("JSON parse (orjson or json, duplicate keys, surrogates)", "json/", ""),
    ("JSON parse (orjson or json, duplicate keys, surrogates)", "hotpath/parsing.py", ""),
    ("JSON parse (orjson or json, duplicate keys, surrogates)", "~", "json"),
    ("JSON parse (orjson or json, duplicate keys, surrogates)", "~", "'decode' of 'bytes'"),
    ("JSON parse (orjson or json, duplicate keys, surrogates)", "~", "'strip' of 'str'"),
    ("JSON parse (orjson or json, duplicate keys, surrogates)", "~", "'count' of 'str'"),
    ("IP normalisation", "addresses.py", ""),
    ("IP normalisation", "hotpath/extract.py", "port"),
    ("IP normalisation", "ipaddress.py", ""),
    ("IP normalisation", "hotpath/routing.py", "_normalise"),
    ("IP normalisation", "hotpath/routing.py", "_ip"),
    ("near-cache lookup", "hotpath/routing.py", "get"),
    ("near-cache lookup", "hotpath/routing.py", "put"),
    ("near-cache lookup", "~", "move_to_end"),
    ("near-cache lookup", "hotpath/replica.py", ""),
    ("routing (the rest of Router.route, the batch loop)", "hotpath/routing.py", ""),
    ("routing (the rest of Router.route, the batch loop)", "hotpath/service.py", "process"),
    ("output building (enriched record, append to a batch)", "messages.py", ""),
    ("output building (enriched record, append to a batch)", "hotpath/outputs.py", "add"),
    ("output building (enriched record, append to a batch)", "~", "DefaultRecordBatchBuilder"),
    ("output building (enriched record, append to a batch)", "~", "'join' of 'bytes'"),
    ("produce (send batches, the client's sender)", "hotpath/outputs.py", ""),
    ("produce (send batches, the client's sender)", "aiokafka/producer", ""),
    ("produce (send batches, the client's sender)", "~", "'produce' of 'cimpl"),
    ("produce (send batches, the client's sender)", "~", "'flush' of 'cimpl"),
    ("commit", "aiokafka/consumer/group_coordinator", ""),
    ("commit", "~", "'commit' of 'cimpl"),
    ("client fetch and decode (consumer, records)", "aiokafka/consumer", ""),
    ("client fetch and decode (consumer, records)", "aiokafka/record", ""),
    ("client fetch and decode (consumer, records)", "~", "DefaultRecordBatch"),
    ("client fetch and decode (consumer, records)", "~", "'consume' of 'cimpl"),
    ("Kafka clients: connections, protocol, metadata", "aiokafka/", ""),
    ("Kafka clients: connections, protocol, metadata", "confluent_kafka", ""),
    ("Faust: agents, table, changelog (first sights into the table)", "faust/", ""),
    ("Faust: agents, table, changelog (first sights into the table)", "mode/", ""),
    ("Faust: agents, table, changelog (first sights into the table)", "pipeline/cache/", ""),
    ("Faust: agents, table, changelog (first sights into the table)", "rocksdict", ""),
    ("Faust: agents, table, changelog (first sights into the table)", "~", "Rdict"),
    ("event loop (asyncio: tasks, futures, callbacks)", "asyncio/", ""),
    ("event loop (asyncio: tasks, futures, callbacks)", "~", "_asyncio"),
    ("event loop (asyncio: tasks, futures, callbacks)", "~", "'run' of '_contextvars"),
    ("event loop (asyncio: tasks, futures, callbacks)", "~", "thread"),
)
OTHER = "other (web server, resolver, logging, start-up, the rest)"
TOP = 25  # functions listed by own time under the stage table


def stage_of(key: Key) -> str:
    """The stage a profiled function's own time belongs to (OTHER when no rule matches)."""
    where, _, name = key
    for stage, file_part, name_part in RULES:
        if file_part in where and name_part in name:
            return stage
    return OTHER


def breakdown(stats: pstats.Stats) -> tuple[dict[str, float], float]:
    """Own time per stage and the total, in seconds."""
    found: dict[str, float] = {}
    total = 0.0
    for key, (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        stage = stage_of(key)
        found[stage] = found.get(stage, 0.0) + tottime
        total += tottime
    return found, total


def report(paths: Iterable[Path], events: int) -> list[str]:
    """The lines `bench --profile` prints: per worker, the stage table and the top functions by own time."""
    lines: list[str] = []
    for path in paths:
        if not path.exists():
            lines.append(f"{path.name}: no profile (the worker did not exit cleanly)")
            continue
        stats = pstats.Stats(str(path))
        stages, total = breakdown(stats)
        busy = total - sum(v for k, v in stages.items() if k.startswith("idle"))
        lines.append(
            f"{path.name}: {total:.1f}s profiled from start to stop, {busy:.1f}s busy; "
            f"per event of the backlog {busy / max(1, events) * 1e6:.1f} us busy"
        )
        lines.append(f"  {'stage':<66} {'own s':>7} {'share of busy':>14}")
        for stage, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
            share = "" if stage.startswith("idle") else f"{seconds / max(busy, 1e-9):.1%}"
            lines.append(f"  {stage:<66} {seconds:7.2f} {share:>14}")
        lines.append(f"  top {TOP} functions by own time:")
        ranked = sorted(
            stats.stats.items(),  # type: ignore[attr-defined]
            key=lambda kv: -kv[1][2],
        )
        for (where, line, name), (_, calls, tottime, cumtime, _) in ranked[:TOP]:
            short = "/".join(where.split("/")[-2:])
            lines.append(f"  {tottime:7.2f}s own {cumtime:7.2f}s cum {calls:>9} calls {short}:{line} {name}")
    return lines
