"""`geo-pipeline`: run a worker, the demo, the local Kafka broker, the benchmarks, or the operator commands
(lookup, produce, tail, stats, topics: pipeline/cli/ops.py).

The environment is read here and only here (Settings.from_env); everything below gets a Settings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from pipeline.cli import ops as commands
from pipeline.cli.logs import configure as configure_logging
from pipeline.config.settings import Settings
from pipeline.errors import PipelineError

DEFAULT_RUN_DIR = Path(".kafka-local")  # git-ignored; holds the dev broker's config, data and logs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="geo-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="run a pipeline worker (Faust) against KAFKA_BOOTSTRAP_SERVERS")
    demo = sub.add_parser("demo", help="local broker + fake ip-api + worker + demo traffic, then a summary")
    demo.add_argument("--events", type=int, default=500, help="demo events to publish (default 500)")
    kafka = sub.add_parser("kafka", help="start, stop or show the local Kafka broker")
    kafka.add_argument("action", choices=["start", "stop", "status"])
    kafka.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    kafka.add_argument("--port", type=int, default=9092)
    sub.add_parser("settings", help="print every setting and the variable it comes from")
    bench = sub.add_parser("bench", help="hot-path benchmark against a plain aiokafka loop, same run")
    bench.add_argument(
        "--mode",
        choices=["backlog", "hits"],
        default="backlog",
        help="backlog: cold workers drain N events over K IPs (default); hits: warm cache only",
    )
    bench.add_argument("--events", type=int, default=None, help="events (backlog 200,000; hits 50,000)")
    bench.add_argument("--ips", type=int, default=2_000, help="distinct IPs in the backlog (2,000)")
    bench.add_argument("--workers", type=int, default=1, help="worker processes in backlog mode (1)")
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
    commands.add_parsers(sub)
    args = parser.parse_args(argv)
    if args.command == "bench" and args.with_quix and args.mode != "backlog":
        parser.error("--with-quix needs --mode backlog")
    try:
        settings = Settings.from_env(os.environ)
        configure_logging(settings)  # quiet by default: GEO_LOG_LEVEL, GEO_LOG_FORMAT
        if args.command in commands.NAMES:
            return commands.run(args, settings)
        if args.command == "worker":
            return run_worker(settings)
        if args.command == "demo":
            from pipeline.devtools.demo import run_demo

            return asyncio.run(run_demo(settings, os.environ, events=args.events))
        if args.command == "kafka":
            return kafka_command(args.action, args.run_dir, args.port)
        if args.command == "bench":
            if args.mode == "hits":
                from pipeline.devtools.bench.hits import run_bench

                return asyncio.run(run_bench(settings, os.environ, events=args.events or 50_000))
            from pipeline.devtools.bench.backlog import run_backlog_bench
            from pipeline.devtools.bench.quix import check_quix_python

            if args.with_quix:
                check_quix_python(args.quix_python)  # before any topic exists
            events = args.events or 200_000
            quix_python = args.quix_python if args.with_quix else None
            return asyncio.run(
                run_backlog_bench(
                    settings,
                    os.environ,
                    events=events,
                    ips=args.ips,
                    workers=args.workers,
                    quix_python=quix_python,
                )
            )
        if args.command == "bench-timer":
            from pipeline.devtools.bench.timer import run_tick_bench

            return asyncio.run(
                run_tick_bench(
                    settings,
                    os.environ,
                    entries=args.entries,
                    unresolved=args.unresolved,
                    not_due=args.not_due,
                )
            )
        if args.command == "bench-budget":
            from pipeline.devtools.bench.budget import run_budget_bench

            return asyncio.run(run_budget_bench(settings, os.environ, ips=args.ips, window=args.window))
        if args.command == "bench-mmdb":
            from pipeline.devtools.bench.mmdb import run_mmdb_bench

            return run_mmdb_bench(networks=args.networks, ips=args.ips)
        for name, value in settings.describe():
            print(f"{name}={value}")
        return 0
    except PipelineError as exc:
        print(f"geo-pipeline: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def run_worker(settings: Settings) -> int:
    from pipeline.cli.worker import run_worker as serve

    return serve(settings)


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


if __name__ == "__main__":
    sys.exit(main())
