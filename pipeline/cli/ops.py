"""The CLI's commands for people operating a pipeline: lookup, produce, tail, stats, topics; and retry,
forget (pipeline/cli/repair.py).

Each command runs against KAFKA_BOOTSTRAP_SERVERS and GEO_APP_ID like the workers (same settings, same
Kafka security) and finds the workers by itself (pipeline/cli/cluster.py); `--url` names them instead.
Results go to standard output, progress and errors to standard error. Exit codes: 0 when everything asked
for was found or done, 1 when some was not (an unknown IP, a broken topic contract), 2 for a usage or
configuration error (main.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from pipeline.cli import cluster as client
from pipeline.cli import present, repair
from pipeline.config.settings import Settings
from pipeline.errors import BrokerError
from pipeline.kafka import clients, topics

NAMES = ("lookup", "produce", "tail", "stats", "topics", *repair.NAMES)
PROGRESS_EVERY = 1.0  # seconds between progress lines of `produce`
SEND_WINDOW = 10_000  # records in flight before `produce` waits for their acks


def add_parsers(sub: Any) -> None:
    """Register the commands on the CLI's subparsers."""
    lookup = sub.add_parser("lookup", help="the current entry of IPs (a worker's API, else geo-resolved)")
    lookup.add_argument("ips", nargs="+", metavar="IP")
    lookup.add_argument("--url", action="append", default=[], help="a worker's API URL (repeatable)")
    lookup.add_argument("--json", action="store_true", help="the raw answers, one JSON object per line")
    produce = sub.add_parser("produce", help="IPs or JSON lines into the input topic, with progress")
    produce.add_argument("ips", nargs="*", metavar="IP", help="IPs to send (default: lines of --file)")
    produce.add_argument("--file", "-f", default=None, help="IPs or JSON lines, one per line; - is stdin")
    tail = sub.add_parser("tail", help="follow an output topic, one readable line per record")
    tail.add_argument("which", nargs="?", choices=["enriched", "resolved", "dlq"], default="enriched")
    tail.add_argument("--json", action="store_true", help="the raw records, one per line")
    tail.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    tail.add_argument("--count", type=int, default=0, help="stop after N records (default: follow)")
    stats = sub.add_parser("stats", help="every worker's metrics, summarised in one table")
    stats.add_argument("--url", action="append", default=[], help="a worker's API URL (repeatable)")
    topics_cmd = sub.add_parser("topics", help="check existing topics against the layout, or fix them")
    topics_cmd.add_argument("action", choices=["check", "fix"])
    repair.add_parsers(sub)


def run(args: argparse.Namespace, settings: Settings) -> int:
    command = {"lookup": lookup, "produce": produce, "tail": tail, "stats": stats, "topics": topics_command}
    try:
        if args.command in repair.NAMES:
            return repair.run(args, settings)
        return asyncio.run(command[args.command](args, settings))
    except (KafkaError, OSError) as exc:  # one line naming the broker, not a traceback
        raise BrokerError(
            f"{args.command}: Kafka at KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap} failed: {exc!r}"
        ) from None


async def lookup(args: argparse.Namespace, settings: Settings) -> int:
    urls = args.url or await client.worker_urls(settings)
    answers = await client.lookup(urls, args.ips) if urls else [(0, {})] * len(args.ips)
    unanswered = [query for query, (status, _) in zip(args.ips, answers, strict=True) if status == 0]
    if unanswered:  # no worker up, or none answered (a crashed one stays in the group for a while)
        print("lookup: no worker answered; reading the resolved topic", file=sys.stderr)
        from_topic = iter(await _from_topic(settings, unanswered))
        answers = [next(from_topic) if status == 0 else (status, body) for status, body in answers]
    for query, (status, body) in zip(args.ips, answers, strict=True):
        print(json.dumps(body) if args.json else present.lookup_line(query, status, body))
    return 0 if all(status == 200 for status, _ in answers) else 1


async def _from_topic(settings: Settings, queries: list[str]) -> list[tuple[int, dict[str, Any]]]:
    from pipeline.addresses import normalise_ip
    from pipeline.errors import InvalidAddress

    source = f"topic {settings.resolved_topic} (no worker up)"
    found: dict[str, str | InvalidAddress] = {}  # query -> its normal form, or why it is not an IP
    for query in queries:
        try:
            found[query] = normalise_ip(query)
        except InvalidAddress as exc:
            found[query] = exc
    latest = await client.read_resolved(settings, [ip for ip in found.values() if isinstance(ip, str)])
    result: list[tuple[int, dict[str, Any]]] = []
    for query in queries:
        ip = found[query]
        if isinstance(ip, InvalidAddress):
            result.append((400, {"error": f"invalid ip: {ip.reason}", "source": source}))
        elif latest.get(ip) is None:
            result.append((404, {"ip": ip, "error": "never seen", "source": source}))
        else:
            result.append((200, {"ip": ip, "entry": latest[ip], "source": source}))
    return result


def _lines(args: argparse.Namespace, stdin: IO[str]) -> Iterator[str]:
    if args.ips:
        yield from args.ips
        return
    if args.file in (None, "-"):
        yield from stdin
        return
    with Path(args.file).open(encoding="utf-8") as handle:
        yield from handle


def record_for(line: str) -> tuple[bytes | None, bytes] | None:
    """(key, value) for one input line: a JSON object keyed by its `ip`, a bare IP keyed by itself; None for
    a blank line. Nothing is validated here: the pipeline dead-letters what it cannot use, with a reason."""
    text = line.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            ip = json.loads(text).get("ip")
        except (ValueError, AttributeError):
            ip = None
        return (ip.encode() if isinstance(ip, str) else None), text.encode()
    return text.encode(), text.encode()


async def produce(args: argparse.Namespace, settings: Settings) -> int:
    topic = settings.events_topic
    producer = clients.producer(settings)
    await producer.start()
    # sending to a missing topic would make the broker create it with its defaults (1 partition); the
    # metadata of every topic, unlike a request naming this one, creates nothing
    if topic not in (await producer.client.fetch_all_metadata()).topics():
        await producer.stop()
        print(
            f"produce: topic {topic} does not exist: start a worker first (it creates every topic)",
            file=sys.stderr,
        )
        return 1
    sent, started, shown = 0, time.monotonic(), time.monotonic()
    pending: list[asyncio.Future[Any]] = []
    try:
        for line in _lines(args, sys.stdin):
            record = record_for(line)
            if record is None:
                continue
            pending.append(await producer.send(topic, record[1], key=record[0]))
            sent += 1
            if len(pending) >= SEND_WINDOW:
                await asyncio.gather(*pending)
                pending.clear()
            if time.monotonic() - shown >= PROGRESS_EVERY:
                shown = time.monotonic()
                print(f"produce: {sent:,} sent ({sent / (shown - started):,.0f}/s)", file=sys.stderr)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    took = time.monotonic() - started
    print(f"produce: {sent:,} records to {topic} in {took:.1f}s", file=sys.stderr)
    return 0


async def tail(args: argparse.Namespace, settings: Settings) -> int:
    topic = {
        "enriched": settings.enriched_topic,
        "resolved": settings.resolved_topic,
        "dlq": settings.dlq_topic,
    }
    name = topic[args.which]
    line = {
        "enriched": present.enriched_line,
        "resolved": present.entry_line,
        "dlq": present.dead_letter_line,
    }
    consumer = clients.follower(settings)
    shown = 0
    try:
        await consumer.start()  # inside the try: a start cut short still closes the client
        await consumer._client.force_metadata_update()
        parts = sorted(consumer.partitions_for_topic(name) or ())
        if not parts:
            print(f"tail: topic {name} does not exist (yet)", file=sys.stderr)
            return 1
        consumer.assign([TopicPartition(name, p) for p in parts])
        await (consumer.seek_to_beginning() if args.from_beginning else consumer.seek_to_end())
        print(f"tail: following {name} ({len(parts)} partitions); Ctrl-C stops", file=sys.stderr)
        while not args.count or shown < args.count:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    if args.count and shown >= args.count:
                        break
                    text = (record.value or b"").decode("utf-8", "replace")
                    try:
                        print(text if args.json else line[args.which](json.loads(text)), flush=True)
                    except (ValueError, AttributeError):
                        print(f"(not a pipeline record) {text[: present.PREVIEW]!r}", flush=True)
                    shown += 1
    finally:
        await consumer.stop()
    return 0


async def stats(args: argparse.Namespace, settings: Settings) -> int:
    urls = args.url or await client.worker_urls(settings)
    if not urls:
        print(f"stats: no worker of {settings.app_id} is up", file=sys.stderr)
        return 1
    scraped = await client.scrape(urls)
    print(present.stats_table([present.stats_row(url, samples) for url, samples in scraped.items()]))
    return 0 if all(samples is not None for samples in scraped.values()) else 1


async def topics_command(args: argparse.Namespace, settings: Settings) -> int:
    found, fixed = await topics.run(settings, fix=args.action == "fix")
    for problem in found:
        if problem in fixed:
            changes = ", ".join(f"{name}={value}" for name, value in problem.configs.items())
            print(f"fixed: topic {problem.topic}: set {changes}")
        else:
            print(f"problem: {problem.text}")
    left = [p for p in found if p not in fixed]
    if not found:
        print(f"topics of {settings.app_id}: every existing topic matches the layout")
    elif args.action == "check" and any(p.configs for p in left):
        print("run `geo-pipeline topics fix` to apply the cleanup policies", file=sys.stderr)
    return 1 if left else 0
