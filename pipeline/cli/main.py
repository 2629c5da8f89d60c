"""`geo-pipeline`: a dispatcher over three families of commands, each registering its own subparsers.

- `worker` (pipeline/cli/worker.py) and `settings`, here;
- the operator commands: lookup, produce, tail, stats, topics (pipeline/cli/ops.py);
- the dev commands: demo, kafka, bench, bench-timer, bench-budget, bench-mmdb
  (pipeline/devtools/commands.py).

The environment is read here and only here (Settings.from_env); everything below gets a Settings.
"""

from __future__ import annotations

import argparse
import os
import sys

from pipeline.cli import ops
from pipeline.cli.logs import configure as configure_logging
from pipeline.config.settings import Settings
from pipeline.devtools import commands as dev
from pipeline.errors import PipelineError

DESCRIPTION = "Attach country, ASN and place to IP events in Kafka: run a worker, operate a pipeline, try it"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="geo-pipeline", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("worker", help="run a pipeline worker (Faust) against KAFKA_BOOTSTRAP_SERVERS")
    sub.add_parser("settings", help="print every setting and the variable it comes from")
    ops.add_parsers(sub)
    dev.add_parsers(sub)
    args = parser.parse_args(argv)
    dev.check(parser, args)
    try:
        settings = Settings.from_env(os.environ)
        configure_logging(settings)  # quiet by default: GEO_LOG_LEVEL, GEO_LOG_FORMAT
        if args.command in ops.NAMES:
            return ops.run(args, settings)
        if args.command in dev.NAMES:
            return dev.run(args, settings, os.environ)
        if args.command == "worker":
            from pipeline.cli.worker import run_worker

            return run_worker(settings)
        for name, value in settings.describe():
            print(f"{name}={value}")
        return 0
    except PipelineError as exc:
        print(f"geo-pipeline: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
