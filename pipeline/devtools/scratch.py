"""A throwaway run for the demo and the benchmarks: a temp dir, a broker, and settings with fresh names.

Why: each of them needs the same three things and must leave nothing behind on a shared broker or disk.
The broker is the one `KAFKA_BOOTSTRAP_SERVERS` names, or a local one started in the temp dir; topic and
app names carry a run id, so runs on a shared broker never see each other's data.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config.settings import Settings
from pipeline.devtools.broker import LocalKafka


@dataclass(frozen=True)
class Scratch:
    """One run: its settings (fresh app id and topics), its id and its temp dir."""

    settings: Settings
    run: str
    tmp: Path


@contextlib.contextmanager
def scratch(kind: str, base: Settings, environ: Mapping[str, str], **overrides: Any) -> Iterator[Scratch]:
    """Start (or reuse) a broker and build settings named `geo-<kind>-<run>`; clean up on exit."""
    tmp = Path(tempfile.mkdtemp(prefix=f"geo-{kind}-"))
    broker = None if environ.get("KAFKA_BOOTSTRAP_SERVERS") else LocalKafka(tmp / "kafka")
    try:
        bootstrap = broker.start().bootstrap if broker else base.kafka_bootstrap
        run = uuid.uuid4().hex[:8]
        names = {
            f"{topic}_topic": f"{kind}-{topic}-{run}"
            for topic in ("events", "dlq", "enriched", "resolved", "resolve")
        }
        values: dict[str, Any] = {
            "kafka_bootstrap": bootstrap,
            "app_id": f"geo-{kind}-{run}",
            "data_dir": tmp / "data",
            **names,
            **overrides,
        }
        yield Scratch(Settings.from_env(environ, **values), run, tmp)
    finally:
        if broker:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
