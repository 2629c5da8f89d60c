"""Logging: a library's flood of identical lines is cut to one line per interval, with a count."""

from __future__ import annotations

import logging

from pipeline.cli.logs import Repeats


def test_repeated_library_lines_are_let_through_once_per_interval_with_a_count() -> None:
    """A library's identical line (same logger and template) repeated in a flood passes once per interval,
    and the next one says how many were held back; the pipeline's own lines always pass."""
    now = [0.0]
    repeats = Repeats(every=10.0, clock=lambda: now[0])

    def record(name: str, msg: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, None, None)

    passed = [repeats.filter(record("aiokafka.conn", "Unable connect to %s")) for _ in range(1000)]
    assert sum(passed) == 1
    now[0] = 10.0
    again = record("aiokafka.conn", "Unable connect to %s")
    assert repeats.filter(again) and "[999 more like this" in str(again.msg)
    assert all(repeats.filter(record("pipeline.hotpath.service", "ingest: x")) for _ in range(5))
