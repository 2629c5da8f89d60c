"""The CLI commands that change a running pipeline's table: `retry`, `forget` (docs/operator-commands.md).

Both ask every worker's API (found through the group like the other operator commands, or `--url`): a
worker acts only on the entries of its own active partitions, so each IP reaches its owner and the sums
across workers count each entry once. Workers answer these from loopback only: run them on the worker's
host, or through a tunnel (`kubectl port-forward`, SSH).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import aiohttp
from yarl import URL

from pipeline.cache.operator import RETRYABLE, RETRYABLE_BY_IP, parse_statuses
from pipeline.cli import cluster as client
from pipeline.config.settings import Settings

NAMES = ("retry", "forget")
POLL_EVERY = 1.0  # seconds between progress polls of `retry --wait`
DEFAULT_WAIT = 60.0  # seconds `retry` follows progress by default; 0: print the count and return


def add_parsers(sub: Any) -> None:
    """Register the commands on the CLI's subparsers."""
    retry = sub.add_parser("retry", help="make matching entries due now: re-asked within the API budget")
    retry.add_argument("ips", nargs="*", metavar="IP", help="only these IPs (default: every matching entry)")
    retry.add_argument(
        "--status",
        default=None,
        help=f"comma-separated statuses (default {','.join(RETRYABLE)}; with IPs also resolved)",
    )
    retry.add_argument("--wait", type=float, default=DEFAULT_WAIT, help="seconds to follow progress")
    retry.add_argument("--url", action="append", default=[], help="a worker's API URL (repeatable)")
    forget = sub.add_parser("forget", help="remove IPs' entries everywhere (tombstones, as the lifecycle)")
    forget.add_argument("ips", nargs="+", metavar="IP")
    forget.add_argument("--url", action="append", default=[], help="a worker's API URL (repeatable)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(retry(args, settings) if args.command == "retry" else forget(args, settings))


def progress_line(matched: int, statuses: Counter[str], elapsed: float) -> str:
    """`retry: 1,000 matched, 640 resolved, 360 waiting (partial 360) after 4.0s`."""
    resolved = statuses.get("resolved", 0)
    rest = ", ".join(f"{s} {n:,}" for s, n in sorted(statuses.items()) if s != "resolved" and n)
    waiting = sum(statuses.values()) - resolved
    tail = f" ({rest})" if rest else ""
    return (
        f"retry: {matched:,} matched, {resolved:,} resolved, {waiting:,} waiting{tail} after {elapsed:.1f}s"
    )


async def post_all(urls: Sequence[str], path: str, body: dict[str, Any]) -> dict[str, tuple[int, Any]]:
    """POST body to every worker: {url: (status, answer)}; status 0 for a worker that did not answer."""
    found: dict[str, tuple[int, Any]] = {}
    timeout = aiohttp.ClientTimeout(total=client.HTTP_TIMEOUT * 6)  # a long IP list takes a while to send
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for base in urls:
            try:
                async with session.post(URL(base.rstrip("/") + path), json=body) as reply:
                    found[base] = (reply.status, json.loads(await reply.text()))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                found[base] = (0, {"error": f"{type(exc).__name__}: {exc}"})
    return found


async def _get_all(urls: Sequence[str], path: str) -> dict[str, tuple[int, Any]]:
    found: dict[str, tuple[int, Any]] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=client.HTTP_TIMEOUT)) as session:
        for base in urls:
            try:
                status, text = await client.ask(session, base, path)
                found[base] = (status, json.loads(text))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                found[base] = (0, {"error": f"{type(exc).__name__}: {exc}"})
    return found


def _failures(answers: dict[str, tuple[int, Any]], command: str, ok: int = 200) -> int:
    failed = 0
    for url, (status, body) in answers.items():
        if status != ok:
            failed += 1
            print(f"{command}: {url}: {status or 'no answer'} {body.get('error', '')}", file=sys.stderr)
    return failed


async def retry(args: argparse.Namespace, settings: Settings) -> int:
    try:
        allowed = RETRYABLE_BY_IP if args.ips else RETRYABLE
        statuses = parse_statuses(args.status, allowed) if args.status else allowed
    except ValueError as exc:
        print(f"retry: {exc}", file=sys.stderr)
        return 2
    urls = args.url or await client.worker_urls(settings)
    if not urls:
        print(f"retry: no worker of {settings.app_id} is up", file=sys.stderr)
        return 1
    started = time.monotonic()
    answers = await post_all(urls, "/admin/retry", {"statuses": list(statuses), "ips": args.ips})
    failed = _failures(answers, "retry", ok=202)
    asked = [url for url, (status, _) in answers.items() if status == 202]
    matched, counts, announced = 0, Counter[str](), False
    while True:
        polled = await _get_all(asked, "/admin/retry")
        bodies = [body for status, body in polled.values() if status == 200]
        selecting = len(bodies) < len(asked) or any(body.get("selecting") for body in bodies)
        matched = sum(body.get("matched", 0) for body in bodies)
        counts = Counter()
        for body in bodies:
            counts.update(body.get("statuses", {}))
        elapsed = time.monotonic() - started
        if not selecting and not announced:
            announced = True
            if any(body.get("interrupted") for body in bodies):
                failed += 1
                print("retry: a rebalance interrupted the selection: run the command again", file=sys.stderr)
            print(f"retry: {matched:,} entries ({','.join(statuses)}) made due now on {len(asked)} workers")
        done = not selecting and counts.get("resolved", 0) >= matched
        if done or elapsed >= args.wait:
            break
        what = "selecting, " if selecting else ""
        print(progress_line(matched, counts, elapsed).replace("retry: ", "retry: " + what), file=sys.stderr)
        await asyncio.sleep(POLL_EVERY)  # pacing the polls of a person's command, not synchronisation
    print(progress_line(matched, counts, time.monotonic() - started).replace("retry:", "retry: summary:"))
    return 1 if failed or (args.wait and not done) else 0


async def forget(args: argparse.Namespace, settings: Settings) -> int:
    urls = args.url or await client.worker_urls(settings)
    if not urls:
        print(f"forget: no worker of {settings.app_id} is up", file=sys.stderr)
        return 1
    answers = await post_all(urls, "/admin/forget", {"ips": args.ips})
    failed = _failures(answers, "forget")
    taken = {ip for status, body in answers.values() if status == 200 for ip in body.get("forgotten", [])}
    print(f"forget: {len(taken):,} of {len(args.ips):,} IPs sent to be forgotten by their owners")
    return 1 if failed or len(taken) < len(set(args.ips)) else 0
