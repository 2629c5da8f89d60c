"""The Quix Streams side of `geo-pipeline bench --with-quix`: the backlog job written the Quix way.

Why a script of its own: quixstreams is not a dependency of geo-pipeline (it lives in a venv of its own), and
a job sharing the benchmark's or a worker's interpreter would be measured with their work. The benchmark
runs this file by path with `--quix-python` (isolated, `-I`), so it imports neither faust nor the pipeline:
only quixstreams, iptocc (the offline data the pipeline's offline provider answers from) and the standard
library. Importing the module needs neither; `main` imports them.

The job is what a Quix user would write for the pipeline's work: a `StreamingDataFrame` over the JSON
events, a stateful apply that answers an IP from state, else asks iptocc and stores the answer, adds the
country to the event, and JSON to the output topic. State is Quix's default, RocksDB with a changelog
topic. Quix scopes state by the message key; the events come unkeyed (as the pipeline gets them), so each
input partition keeps its IPs' answers under the null key, without a repartition (`group_by`) of every
event; an IP seen on four partitions is looked up four times.

On SIGTERM the app stops, and the job prints one summary line (`SUMMARY_PREFIX`) with the events it
enriched and the IPs it had to look up (state misses), which the benchmark reads back from its log.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

SUMMARY_PREFIX = "quix job summary:"  # the benchmark finds the job's counts by this prefix in its log
UNKNOWN = ""  # stored for an IP iptocc has no country for: state.get's None means "never looked up"


class KeyValueState(Protocol):
    """The part of Quix's `State` the job uses (a dict-backed fake in the unit tests)."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...


@dataclass
class Counts:
    """What the job did: events enriched and IPs that were not in state yet (iptocc lookups)."""

    events: int = 0
    lookups: int = 0

    def line(self) -> str:
        return f"{SUMMARY_PREFIX} events={self.events} lookups={self.lookups}"


def enrich(
    value: dict[str, Any], state: KeyValueState, lookup: Callable[[str], str | None], counts: Counts
) -> dict[str, Any]:
    """The event with `country_code` (None when the data has none): from state, else from `lookup`, which
    is then stored in state."""
    ip = str(value["ip"])
    code = state.get(ip)
    if code is None:
        code = lookup(ip) or UNKNOWN
        state.set(ip, code)
        counts.lookups += 1
    counts.events += 1
    value["country_code"] = code or None
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="the Quix Streams job of `geo-pipeline bench --with-quix`")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True, help="input topic (JSON events with an `ip`)")
    parser.add_argument("--dest", required=True, help="output topic (the events with `country_code`)")
    parser.add_argument("--group", required=True, help="the job's consumer group")
    parser.add_argument("--state-dir", required=True, help="Quix's state directory (RocksDB)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import iptocc  # the offline data the pipeline uses
    from quixstreams import Application, State

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
    )
    counts = Counts()
    lookup: Callable[[str], str | None] = iptocc.country_code

    def apply(value: dict[str, Any], state: State) -> dict[str, Any]:
        return enrich(value, state, lookup, counts)

    sdf = app.dataframe(app.topic(args.source, value_deserializer="json"))
    sdf = sdf.apply(apply, stateful=True)
    sdf.to_topic(app.topic(args.dest, value_serializer="json"))
    print(f"quix job: {args.source} -> {args.dest}, group {args.group}", flush=True)
    app.run()  # until SIGTERM (the benchmark's stop)
    print(counts.line(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
