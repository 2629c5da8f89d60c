"""geo-pipeline: attach country, ASN and place to IP addresses flowing through Kafka.

The CLI (`geo-pipeline`, `pipeline.cli.main`) is the way in; embedding code and tests use what is exported
here.
Exports load lazily, so importing one pure module (`pipeline.addresses`, say) does not import Faust.
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
