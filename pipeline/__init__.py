"""geo-pipeline: attach country, ASN and place to IP addresses flowing through Kafka.

The CLI (`geo-pipeline`, `pipeline.cli.main`) is the way in; embedding code and tests use what is exported
here. Exports load lazily, so importing one pure module (`pipeline.addresses`, say) does not import Faust.

A map of the package, floor by floor from the top (a module imports its own floor or below; a test reads
the imports and keeps this map true):

    cli/        the `geo-pipeline` command: dispatcher, worker command, operator commands
    devtools/   local broker, fake ip-api, demo, workloads; bench/ the benchmarks and their baseline
    web/        each worker's HTTP API: lookups, health, readiness, Prometheus metrics
    app.py      the composition root: builds one worker from its settings
    hotpath/    enriches every event at once (near cache, offline data); sends first sights on
    cache/      the geo table in RocksDB, its only writer (the cache agent), the retry policy and timers
    resolver/   throttled, deduplicated batches to the geo API
                (hotpath/, cache/ and resolver/ never import each other: they talk through topics)
    providers/  where answers come from: ip-api (client, answer checks, throttle), MaxMind-format files
    kafka/      client config, small clients and the partitioner, preflight, topic contract, Faust internals
    storage.py  RocksDB's memory: one budget for every database a worker opens
    config/     the settings: fields, how they are read, what is refused, bounds and vocabularies
    models.py addresses.py messages.py stats.py errors.py: the vocabulary every floor shares
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("geo-pipeline")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS = {
    "GeoApp": "app",
    "build": "app",
    "ensure_topics": "app",
    "running": "app",
    "ConfigError": "errors",
    "PipelineError": "errors",
    "Settings": "config.settings",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
