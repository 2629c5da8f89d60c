"""The CLI's commands for developing and trying the pipeline: demo, kafka, bench, bench-timer, bench-budget,
bench-mmdb.

They register on the CLI's subparsers like the operator commands (pipeline/cli/ops.py) do, so the CLI's
main stays a dispatcher. Each command imports its tool only when it runs: `geo-pipeline worker` never loads
a benchmark, and `bench-mmdb` needs the test extra only when asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.config.settings import Settings

NAMES = ("demo", "kafka", "bench", "bench-timer", "bench-budget", "bench-mmdb")
DEFAULT_RUN_DIR = Path(".kafka-local")  # git-ignored; holds the dev broker's config, data and logs


def add_parsers(sub: Any) -> None:
    """Register the commands on the CLI's subparsers."""
    demo = sub.add_parser("demo", help="local broker + fake ip-api + worker + demo traffic, then a summary")
    demo.add_argument("--events", type=int, default=500, help="demo events to publish (default 500)")
    kafka = sub.add_parser("kafka", help="start, stop or show the local Kafka broker")
    kafka.add_argument("action", choices=["start", "stop", "status"])
    kafka.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    kafka.add_argument("--port", type=int, default=9092)
    bench = sub.add_parser("bench", help="hot-path benchmark against a plain aiokafka loop, same run")
    bench.add_argument(
        "--mode",
        choices=["backlog", "hits", "scale"],
        default="backlog",
        help="backlog: cold workers drain N events over K IPs (default); hits: warm cache only; "
        "scale: a burst of --population distinct IPs, a cold restart, then N Zipf events over them",
    )
    bench.add_argument("--events", type=int, default=None, help="events (backlog 200,000; hits 50,000)")
    bench.add_argument("--ips", type=int, default=2_000, help="distinct IPs in the backlog (2,000)")
    bench.add_argument("--workers", type=int, default=1, help="worker processes (backlog, scale; 1)")
    bench.add_argument(
        "--population", type=int, default=5_000_000, help="distinct IPs in scale mode (5,000,000)"
    )
    bench.add_argument(
        "--ecs",
        action="store_true",
        help="backlog mode: also drain the burst as ECS events with two IP fields in the ecs shape, same run",
    )
    bench.add_argument(
        "--with-quix",
        action="store_true",
        help="backlog mode: also run Quix Streams on the same job, same broker, same run",
    )
    bench.add_argument(
        "--quix-python",
        default=sys.executable,
        help="interpreter that has quixstreams and iptocc, for --with-quix (default: this one)",
    )
    bench.add_argument(
        "--profile",
        action="store_true",
        help="backlog mode: run the workers under cProfile and print where their time goes, by stage",
    )
    bench.add_argument(
        "--prepublished",
        action="store_true",
        help="backlog mode, one worker: publish the burst before the workers (and Quix) start, so they "
        "drain a backlog nobody is still writing, as the plain loops do (a cold start: the hot path drains "
        "while the worker's tables recover; without it, the burst waits until the worker is ready)",
    )
    tick = sub.add_parser("bench-timer", help="retry tick vs a full cache scan (200k entries, 1k unresolved)")
    tick.add_argument("--entries", type=int, default=200_000)
    tick.add_argument("--unresolved", type=int, default=1_000, help="entries due now (default 1,000)")
    tick.add_argument("--not-due", type=int, default=100_000, help="unresolved entries due later (100,000)")
    budget = sub.add_parser("bench-budget", help="resolution rate as a share of the API budget (fake ip-api)")
    budget.add_argument("--ips", type=int, default=3_000)
    budget.add_argument("--window", type=float, default=6.0)
    mmdb = sub.add_parser(
        "bench-mmdb", help="MMDB (City+ASN) lookups/s beside iptocc's (needs the test extra)"
    )
    mmdb.add_argument("--networks", type=int, default=100_000)
    mmdb.add_argument("--ips", type=int, default=100_000)


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse option combinations that cannot work, before anything starts (argparse's usage error)."""
    if args.command == "bench" and args.with_quix and args.mode == "hits":
        parser.error("--with-quix needs --mode backlog or scale")
    if args.command == "bench" and args.profile and args.mode != "backlog":
        parser.error("--profile needs --mode backlog")
    if args.command == "bench" and args.prepublished and (args.mode != "backlog" or args.workers != 1):
        parser.error("--prepublished needs --mode backlog and one worker")
    if args.command == "bench" and args.ecs and args.mode != "backlog":
        parser.error("--ecs needs --mode backlog")


def run(args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]) -> int:
    """Run one of NAMES; the exit code is the command's."""
    if args.command == "demo":
        from pipeline.devtools.demo import run_demo

        return asyncio.run(run_demo(settings, environ, events=args.events))
    if args.command == "kafka":
        return kafka_command(args.action, args.run_dir, args.port)
    if args.command == "bench":
        return bench(args, settings, environ)
    if args.command == "bench-timer":
        from pipeline.devtools.bench.timer import run_tick_bench

        return asyncio.run(
            run_tick_bench(
                settings, environ, entries=args.entries, unresolved=args.unresolved, not_due=args.not_due
            )
        )
    if args.command == "bench-budget":
        from pipeline.devtools.bench.budget import run_budget_bench

        return asyncio.run(run_budget_bench(settings, environ, ips=args.ips, window=args.window))
    if args.command == "bench-mmdb":
        from pipeline.devtools.bench.mmdb import run_mmdb_bench

        return run_mmdb_bench(networks=args.networks, ips=args.ips)
    raise ValueError(f"not a dev command: {args.command}")


def bench(args: argparse.Namespace, settings: Settings, environ: Mapping[str, str]) -> int:
    if args.mode == "hits":
        from pipeline.devtools.bench.hits import run_bench

        return asyncio.run(run_bench(settings, environ, events=args.events or 50_000))
    from pipeline.devtools.bench.backlog import run_backlog_bench
    from pipeline.devtools.bench.quix import check_quix_python

    if args.with_quix:
        check_quix_python(args.quix_python)  # before any topic exists
    if args.mode == "scale":
        from pipeline.devtools.bench.scale import run_scale_bench

        return asyncio.run(
            run_scale_bench(
                settings,
                environ,
                population=args.population,
                events=args.events,
                workers=args.workers,
                quix_python=args.quix_python if args.with_quix else None,
            )
        )
    return asyncio.run(
        run_backlog_bench(
            settings,
            environ,
            events=args.events or 200_000,
            ips=args.ips,
            workers=args.workers,
            quix_python=args.quix_python if args.with_quix else None,
            profile=args.profile,
            prepublished=args.prepublished,
            ecs=args.ecs,
        )
    )


def kafka_command(action: str, run_dir: Path, port: int) -> int:
    from pipeline.devtools.broker import LocalKafka

    broker = LocalKafka(run_dir.resolve(), port=port)
    if action == "start":
        info = broker.start()
        print(f"export KAFKA_BOOTSTRAP_SERVERS={info.bootstrap}")
        return 0
    if action == "stop":
        print("stopped" if broker.stop() else "no broker running")
        return 0
    running = broker.running()
    print(f"running at {running.bootstrap} (pid {running.pid})" if running else "not running")
    return 0 if running else 1
