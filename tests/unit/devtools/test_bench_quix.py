"""The Quix Streams comparison's pure parts: the job's command line, its summary line and its enrichment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.devtools.bench.quix import QUIX_JOB, JobSummary, job_command, parse_summary
from pipeline.devtools.bench.quix_job import Counts, enrich, parse_args


class DictState:
    """Quix's State as far as the job uses it."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value


def test_job_command_runs_the_job_file_isolated_with_what_the_job_parses() -> None:
    """The command runs quix_job.py by path with `-I`, and the job reads back every value it was given."""
    command = job_command("/venv/bin/python", "127.0.0.1:9092", "in-1", "out-1", "g-1", Path("/tmp/s"))
    assert command[:3] == ["/venv/bin/python", "-I", str(QUIX_JOB)]
    assert QUIX_JOB.is_file()
    args = parse_args(command[3:])
    assert (args.bootstrap, args.source, args.dest, args.group, args.state_dir) == (
        "127.0.0.1:9092",
        "in-1",
        "out-1",
        "g-1",
        "/tmp/s",
    )


def test_parse_summary_reads_the_jobs_last_counts_line() -> None:
    """The last summary line in a log among Quix's own lines is read; a log without one gives None."""
    log = (
        "quix job: in -> out, group g\n"
        "[2025-01-01 00:00:00] [INFO] [quixstreams] : Stop processing\n"
        "quix job summary: events=10 lookups=3\n"
        "quix job summary: events=200001 lookups=7001\n"
    )
    assert parse_summary(log) == JobSummary(events=200_001, lookups=7_001)
    assert parse_summary("quix job: in -> out\nKilled\n") is None
    assert Counts(events=5, lookups=2).line() == "quix job summary: events=5 lookups=2"
    assert parse_summary(Counts(events=5, lookups=2).line()) == JobSummary(5, 2)


def test_enrich_looks_each_ip_up_once_and_answers_repeats_from_state() -> None:
    """An IP's first event asks the lookup and stores the answer (also "no country"); repeats come from
    state; every event gets `country_code`, None when the data has no country."""
    asked: list[str] = []

    def lookup(ip: str) -> str | None:
        asked.append(ip)
        return {"8.8.8.8": "US"}.get(ip)

    state, counts = DictState(), Counts()
    out = [
        enrich({"ip": ip, "seq": i}, state, lookup, counts)
        for i, ip in enumerate(["8.8.8.8", "192.0.2.1", "8.8.8.8", "192.0.2.1"])
    ]
    assert [o["country_code"] for o in out] == ["US", None, "US", None]
    assert [o["seq"] for o in out] == [0, 1, 2, 3]
    assert asked == ["8.8.8.8", "192.0.2.1"]
    assert (counts.events, counts.lookups) == (4, 2)
