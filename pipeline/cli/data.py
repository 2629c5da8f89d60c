"""`geo-pipeline data update`: one update of every GEO_DATA_SOURCES source, cron-friendly.

It joins the cluster like a worker's updater (same topic, same lease group, same daily cap), asks for a
check of every source now and waits for the outcome: the leaseholder (a running worker, or this command
when none runs) downloads, checks and publishes; every worker then installs the build. Progress goes to
standard error, one summary line per source to standard output. Exit codes: 0 when every source was
published or found unchanged, 1 when one failed, was refused or is capped, 2 for a configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from typing import Any

from pipeline.app import ensure_topics
from pipeline.config.settings import Settings
from pipeline.errors import ConfigError
from pipeline.providers.updates.service import DataUpdater

NAMES = ("data",)
GOOD = ("published", "unchanged")


def add_parsers(sub: Any) -> None:
    data = sub.add_parser("data", help="offline data: download, check and publish every source now")
    data.add_argument("action", choices=["update"])
    data.add_argument("--wait", type=float, default=600.0, help="seconds to wait for the outcome")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.data_sources:
        raise ConfigError("data update: GEO_DATA_SOURCES is empty: name the sources (docs/data-updates.md)")
    return asyncio.run(update(settings, args.wait))


async def update(settings: Settings, wait: float) -> int:
    await ensure_topics(settings)
    updater = DataUpdater(settings, label="geo-pipeline data update")
    await updater.start()
    try:
        await asyncio.wait_for(updater.caught_up.wait(), wait)
        asked = await updater.request()
        print(f"data update: asked for {len(updater.sources)} source(s)", file=sys.stderr)
        deadline, shown = time.monotonic() + wait, set[str]()
        while time.monotonic() < deadline:
            rows = {r["source"]: r for r in updater.report()}
            done = {n for n in rows if _at(updater, n) > asked}
            for name in sorted(done - shown):
                print(f"data update: {name}: {rows[name]['outcome']}", file=sys.stderr)
            shown |= done
            if len(done) == len(rows):
                break
            updater.changed.clear()
            with contextlib.suppress(TimeoutError):  # look again: progress comes from the topic
                await asyncio.wait_for(updater.changed.wait(), 1.0)
    finally:
        await updater.stop()
    cap = settings.data_daily_cap
    ok = True
    for row in updater.report():
        answered = _at(updater, row["source"]) > asked
        outcome = row["outcome"] if answered else "no answer (is the leaseholder stuck?)"
        ok &= answered and outcome in GOOD
        print(f"{row['source']}: {outcome} {row['detail'] if answered else ''}".rstrip()
              + f"  downloads today {row['downloads_today']}/{cap}")
    return 0 if ok else 1


def _at(updater: DataUpdater, name: str) -> float:
    at = updater.topic.status(name).get("at", 0)
    return float(at) if isinstance(at, int | float) else 0.0
