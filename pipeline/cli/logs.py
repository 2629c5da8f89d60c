"""Logging for every command: the pipeline's own lines at INFO, the libraries' at WARNING, text or JSON.

Why quiet by default: Faust, mode and aiokafka log every rebalance step, group join and fetch session at
INFO, which buries the progress line and the one error an operator needs. `GEO_LOG_LEVEL` sets the
pipeline's level and, as `logger=LEVEL` pairs, any other logger's (`INFO,faust=INFO,aiokafka=DEBUG`);
`GEO_LOG_FORMAT=json` writes one JSON object per line for log shippers. Faust's worker is started with
`override_logging=False` so it keeps this configuration instead of installing its own.

Faust and mode also log through OUR loggers: a mode Service logs "[^Name]: Starting..." with its subclass's
module logger (pipeline.hotpath.service, pipeline.web.server), Faust's store "opening partition ..." with
pipeline.cache.table.
`LibraryLines` holds those at the libraries' level too, by the file the call comes from.

`TransientLines` lowers library lines that are not errors: aiokafka logs "Group Coordinator Request
failed: [Error 15] CoordinatorNotAvailableError" at ERROR while a fresh broker elects the group coordinator,
and "Failed fetch offsets from 1: [Error 6] NotLeaderForPartitionError" while a topic just created (or a
partition whose leader moves) has no leader ready yet; it retries both on its own. Each is held at INFO
for COORDINATOR_GRACE seconds of a streak, then shown at WARNING.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import IO, Any

from pipeline.config.limits import log_levels
from pipeline.config.settings import Settings

QUIET = ("faust", "mode", "aiokafka", "aiohttp", "kafka")  # library loggers held at WARNING by default
TEXT_FORMAT = "[%(asctime)s] [%(process)d] %(levelname)s %(name)s: %(message)s"  # pid: workers share hosts
LIBRARY_DIRS = tuple(f"{os.sep}{name}{os.sep}" for name in ("faust", "mode"))  # calls from these are theirs
# (logger, the start of aiokafka's template, its transient cause): lines aiokafka retries after by itself
TRANSIENT = (
    (
        "aiokafka.consumer.group_coordinator",
        "Group Coordinator Request failed",
        "CoordinatorNotAvailableError",
    ),
    ("aiokafka.consumer.fetcher", "Failed fetch offsets from", "NotLeaderForPartitionError"),
)
# seconds a coordinator or a new partition's leader may take to be elected before it is worth a warning:
# a fresh broker takes a few
COORDINATOR_GRACE = 60.0


class LibraryLines(logging.Filter):
    """Drops records below `level` whose logging call is in Faust's or mode's code, whatever the logger."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level or not any(d in record.pathname for d in LIBRARY_DIRS)


class TransientLines(logging.Filter):
    """Lowers aiokafka's TRANSIENT lines from ERROR: to INFO during COORDINATOR_GRACE seconds after the
    first one of a streak (dropped unless that logger shows INFO), then to WARNING; a streak per line."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.clock = clock
        # the first and the latest line of each line's current streak
        self._streaks = [(-float("inf"), -float("inf")) for _ in TRANSIENT]

    def filter(self, record: logging.LogRecord) -> bool:
        for i, (logger, start, cause) in enumerate(TRANSIENT):
            if record.name == logger and str(record.msg).startswith(start) and cause in record.getMessage():
                return self._lower(record, i)
        return True

    def _lower(self, record: logging.LogRecord, i: int) -> bool:
        now = self.clock()
        since, last = self._streaks[i]
        if now - last > COORDINATOR_GRACE:
            since = now  # a new streak: none of these lines for a grace period
        self._streaks[i] = (since, now)
        level = logging.INFO if now - since <= COORDINATOR_GRACE else logging.WARNING
        record.levelno, record.levelname = level, logging.getLevelName(level)
        return logging.getLogger(record.name).isEnabledFor(level)


class Repeats(logging.Filter):
    """Lets a library's line through once per `every` seconds per (logger, message template); the next one
    after that says how many were held back. Why: with the broker down, aiokafka logged 77,000 error lines
    in 25 s for two workers, burying everything else (and filling disks)."""

    def __init__(self, every: float = 10.0, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.every, self.clock = every, clock
        self._last: dict[tuple[str, str], tuple[float, int]] = {}  # key -> (last let through, held since)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("pipeline"):
            return True  # our own lines are few and each one matters
        key = (record.name, str(record.msg))
        now = self.clock()
        last, held = self._last.get(key, (float("-inf"), 0))
        if now - last < self.every:
            self._last[key] = (last, held + 1)
            return False
        if held:
            record.msg = f"{record.msg} [{held} more like this in the last {now - last:.0f}s]"
        if len(self._last) > 10_000:  # bounded: templates, not messages, are the keys
            self._last.clear()
        self._last[key] = (now, 0)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def levels(settings: Settings) -> dict[str, int]:
    """{logger: level} to apply: the libraries at WARNING, the pipeline at INFO, then GEO_LOG_LEVEL."""
    wanted = {name: "WARNING" for name in QUIET} | {"pipeline": "INFO"} | log_levels(settings.log_level)
    return {name: logging.getLevelName(level) for name, level in wanted.items()}


def configure(settings: Settings, stream: IO[str] | None = None) -> None:
    """Replace the root logger's handlers with one stream handler in the configured format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT))
    wanted = levels(settings)
    handler.addFilter(LibraryLines(min(wanted["faust"], wanted["mode"])))
    handler.addFilter(TransientLines())
    handler.addFilter(Repeats())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(
        logging.WARNING
    )  # anything not named (asyncio, urllib3, ...) speaks up only when it matters
    for name, level in wanted.items():
        logging.getLogger(name).setLevel(level)
