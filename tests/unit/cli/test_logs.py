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


def coordinator_record(error: str = "[Error 15] CoordinatorNotAvailableError") -> logging.LogRecord:
    """aiokafka's line while a fresh broker elects the group coordinator (it retries on its own)."""
    return logging.LogRecord(
        "aiokafka.consumer.group_coordinator",
        logging.ERROR,
        "/site-packages/aiokafka/consumer/group_coordinator.py",
        566,
        "Group Coordinator Request failed: %s",
        (error,),
        None,
    )


def test_a_coordinator_still_being_elected_is_not_an_error() -> None:
    """aiokafka's 'coordinator not available' line is held at INFO (hidden at the default levels) during
    its grace period, then shows at WARNING; other errors of that logger stay ERROR."""
    from pipeline.cli.logs import COORDINATOR_GRACE, TransientLines

    now = [0.0]
    lines = TransientLines(clock=lambda: now[0])
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    first = coordinator_record()
    assert not lines.filter(first) and first.levelno == logging.INFO
    while now[0] < COORDINATOR_GRACE:  # aiokafka retries every few hundred ms: one streak
        now[0] += 1.0
        assert not lines.filter(coordinator_record())
    now[0] += 1.0
    late = coordinator_record()
    assert lines.filter(late) and late.levelname == "WARNING"
    other = coordinator_record("[Error 30] GroupAuthorizationFailedError")
    assert lines.filter(other) and other.levelno == logging.ERROR


def test_a_new_partition_without_its_leader_yet_is_not_an_error() -> None:
    """aiokafka's 'failed fetch offsets: not leader' line, while a new topic's leaders are elected, is held
    at INFO during its own grace period, whatever the coordinator's lines do; another cause stays ERROR."""
    from pipeline.cli.logs import COORDINATOR_GRACE, TransientLines

    def offsets_record(error: str) -> logging.LogRecord:
        return logging.LogRecord(
            "aiokafka.consumer.fetcher",
            logging.ERROR,
            "/site-packages/aiokafka/consumer/fetcher.py",
            987,
            "Failed fetch offsets from %s: %s",
            (1, error),
            None,
        )

    now = [0.0]
    lines = TransientLines(clock=lambda: now[0])
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    not_leader = "[Error 6] NotLeaderForPartitionError: TopicPartition(topic='geo-resolved', partition=1)"
    first = offsets_record(not_leader)
    assert not lines.filter(first) and first.levelno == logging.INFO
    now[0] = COORDINATOR_GRACE - 1.0
    assert not lines.filter(offsets_record(not_leader))  # aiokafka retries: the same streak
    assert not lines.filter(coordinator_record())  # the coordinator's line starts a streak of its own
    now[0] = COORDINATOR_GRACE + 1.0
    late = offsets_record(not_leader)
    assert lines.filter(late) and late.levelname == "WARNING"
    other = offsets_record("[Error 29] TopicAuthorizationFailedError")
    assert lines.filter(other) and other.levelno == logging.ERROR
