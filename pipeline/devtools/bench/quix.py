"""`geo-pipeline bench --with-quix`: Quix Streams doing the backlog benchmark's job, same broker, same run.

Why: the ratio to a plain aiokafka loop says what the pipeline's design costs; a stream-processing library
doing the same stateful job (quix_job.py) says what another framework would cost for it. Quix Streams is
not a dependency of geo-pipeline: its job runs in the interpreter `--quix-python` names, as a process of
its own, like the workers. It is measured like the pipeline, between the two baselines:
- the job joins first (a warm-up event outside the burst comes out of it), then a copy of the burst goes
  to its own input topic, so it drains a backlog while the publisher is still at work, as the workers do;
- its output topic stamps each record with the broker's append time (LogAppendTime), because Quix gives an
  output record its input's timestamp, which would time the publisher; the rate runs from the first to
  the last output record, read back after the job is stopped;
- the share with a country among events whose IP the offline data knows, the job's state misses (iptocc
  lookups, from its summary line) and its peak RSS.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.devtools.bench.baseline import PARTITIONS, Rate, create_topics
from pipeline.devtools.bench.quix_job import SUMMARY_PREFIX
from pipeline.devtools.bench.readback import Readback, read_output
from pipeline.devtools.processes import LoggedProcess, wait_count
from pipeline.devtools.workloads import publish, tagged_events
from pipeline.errors import PipelineError

QUIX_JOB = Path(__file__).with_name("quix_job.py")  # run by path: the job's venv has no geo-pipeline
VENV_HINT = "python3.11 -m venv /tmp/qxvenv && /tmp/qxvenv/bin/pip install quixstreams iptocc"
CHECK_TIMEOUT = 60.0  # importing quixstreams (confluent-kafka, rocksdict) takes seconds on a busy machine
START_TIMEOUT = 120.0  # for the job to start, join its group and pass the warm-up event through
STOP_TIMEOUT = 30.0  # after SIGTERM, for the job to close its consumer and commit, before SIGKILL
WARM_IP = "192.0.2.1"  # TEST-NET-1: not in the burst, so the warm-up leaves no answer the burst could use
SUMMARY = re.compile(rf"^{re.escape(SUMMARY_PREFIX)} events=(\d+) lookups=(\d+)$", re.MULTILINE)


def check_quix_python(python: str) -> None:
    """PipelineError (one line, with how to make a venv) unless `python` can import quixstreams and iptocc."""
    try:
        probe = [python, "-I", "-c", "import quixstreams, iptocc"]
        ok = subprocess.run(probe, capture_output=True, timeout=CHECK_TIMEOUT).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        raise PipelineError(
            f"--with-quix: {python} cannot import quixstreams and iptocc; make a venv for them "
            f"({VENV_HINT}) and pass --quix-python /tmp/qxvenv/bin/python"
        )


def job_command(
    python: str, bootstrap: str, source: str, dest: str, group: str, state_dir: Path
) -> list[str]:
    """The job's command line: `python -I` (isolated: no PYTHONPATH, no script dir on sys.path, so the
    devtools' module names cannot shadow a library's) running quix_job.py by path."""
    return [
        python,
        "-I",
        str(QUIX_JOB),
        "--bootstrap",
        bootstrap,
        "--source",
        source,
        "--dest",
        dest,
        "--group",
        group,
        "--state-dir",
        str(state_dir),
    ]


@dataclass(frozen=True)
class JobSummary:
    """The job's own counts: events it enriched and IPs it had to look up (not yet in its state)."""

    events: int
    lookups: int


def parse_summary(log: str) -> JobSummary | None:
    """The last summary line in the job's log, or None when it has none (killed before it could print)."""
    found = SUMMARY.findall(log)
    return JobSummary(int(found[-1][0]), int(found[-1][1])) if found else None


@dataclass(frozen=True)
class QuixResult:
    """What the Quix Streams job did in one run."""

    output: Readback
    summary: JobSummary | None
    peak_rss: float

    def lines(self, baseline_mean: float, pipeline: Rate) -> list[str]:
        rate = self.output.rate.per_second
        share = self.output.with_country / max(1, self.output.known)
        misses = (
            f"{self.summary.lookups:,} of {self.summary.events:,} events (the warm-up event included)"
            if self.summary
            else "no summary line (the job did not stop cleanly)"
        )
        return [
            f"ratio quix/baseline: {rate / baseline_mean:.2f}; "
            f"ratio pipeline/quix: {pipeline.per_second / rate:.2f}",
            f"quix with a country: {self.output.with_country:,} of {self.output.known:,} events whose IP "
            f"has offline data: {share:.2%}",
            f"quix state misses (iptocc lookups): {misses}",
            f"quix peak RSS: {self.peak_rss:.0f} MiB",
        ]


class QuixJob(LoggedProcess):
    """The job's process, its output in `log`; SIGTERM stops Quix's loop and commits."""

    label = "quix job"


@contextlib.contextmanager
def quix_job(command: Sequence[str], log: Path) -> Iterator[QuixJob]:
    """The job running; stopped (SIGTERM, then SIGKILL) on exit, also when the benchmark fails."""
    job = QuixJob(command, log, cwd=log.parent)
    try:
        yield job
    finally:
        job.stop(STOP_TIMEOUT)


async def run_quix(
    bootstrap: str, run: str, tmp: Path, payloads: Sequence[bytes], python: str, prepublished: bool = False
) -> QuixResult:
    """Warm the job up, publish a copy of the burst to it, wait for all of it, stop it, read its output.
    `prepublished`: the copy is published before the job starts (it drains a backlog nobody is still
    writing), and the warm-up event after it."""
    source, dest, group = f"bench-quix-in-{run}", f"bench-quix-out-{run}", f"bench-quix-{run}"
    events = len(payloads)
    # the output timestamped by the broker (see the module docstring)
    await create_topics(bootstrap, [source])
    await create_topics(bootstrap, [dest], {"message.timestamp.type": "LogAppendTime"})
    command = job_command(python, bootstrap, source, dest, group, tmp / "quix-state")
    log = tmp / "quix.log"
    if prepublished:
        await publish(bootstrap, source, payloads, label="quix burst, before the job starts")
    with quix_job(command, log) as job:
        started = time.monotonic()
        await publish(bootstrap, source, tagged_events([WARM_IP], 1, f"qw-{run}"))
        if not prepublished:
            await _wait_output(bootstrap, dest, 1, job, "quix warm-up", START_TIMEOUT)
            print(f"  quix job joined and answered in {time.monotonic() - started:.1f}s", flush=True)
            await publish(bootstrap, source, payloads, label="quix burst")
        peak = await _wait_output(bootstrap, dest, events + 1, job, "quix", START_TIMEOUT + events / 500)
        print(f"  quix job stopped in {job.stop(STOP_TIMEOUT):.1f}s", flush=True)
    summary = parse_summary(log.read_text(errors="replace"))
    output = await read_output(
        bootstrap,
        dest,
        events,
        f'"b-{run}"'.encode(),
        "quix streams (backlog, cold start)",
        lambda doc: doc.get("country_code"),
    )
    return QuixResult(output, summary, peak)


async def _wait_output(
    bootstrap: str, topic: str, count: int, job: QuixJob, label: str, timeout: float
) -> float:
    """Until `topic` holds `count` records (cheap polling of its end offsets), showing progress; returns
    the job's peak RSS in MiB."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    async def written() -> int:
        return int(sum((await consumer.end_offsets(tps)).values()))

    try:
        peaks = await wait_count(written, count, [job], f"{label} output records", timeout)
    finally:
        await consumer.stop()
    return peaks[0]
