"""The HTTP API's operator routes: make entries due now (`geo-pipeline retry`) and forget IPs
(`geo-pipeline forget`). They change state, so they answer only requests from loopback (403 otherwise;
docs/operator-commands.md says why, and why not a token).

- `POST /admin/retry` `{"statuses": [...], "ips": [...]}`: 202 at once, then, in the background, the
  matching entries of this worker's active partitions (an IP list: those of them it owns; else the retry
  lane, pipeline/cache/operator.py) get an operator-retry record on the results topic, keyed by the IP;
  the cache agent makes each due now (`operator.on_operator_retry`) and the retry timer asks for them
  within the API budget as usual. 409 while a selection still runs.
- `GET /admin/retry`: the last retry: `selecting` while it runs, how many matched, `interrupted` when a
  rebalance (or a failed send) stopped it (asking again is safe: the agent's decision is idempotent), and
  the current status of each matched IP (TRACK_MAX are remembered), counted.
- `POST /admin/forget` `{"ips": [...]}`: a forget record for each IP this worker owns; the agent deletes the
  entry (tombstones on the changelog and the resolved topic). Answers which IPs it took.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web

from pipeline.addresses import normalise_ip
from pipeline.cache.operator import (
    RETRYABLE,
    RETRYABLE_BY_IP,
    in_retry_lane,
    owned,
    parse_statuses,
    status_of,
)
from pipeline.errors import InvalidAddress
from pipeline.kafka import faustx
from pipeline.kafka.partitioner import key_hash
from pipeline.messages import encode_forget, encode_operator_retry
from pipeline.web.ownership import admin_allowed

if TYPE_CHECKING:
    from pipeline.app import GeoApp

log = logging.getLogger(__name__)

TRACK_MAX = 100_000  # matched IPs remembered for progress (~100 B each): past it, only the count is kept
CHUNK = 500  # entries read or records sent between yields to the event loop (the agents keep running)
BODY_MAX = 4 * 1024 * 1024  # bytes of a request body: ~100k IPs, far more than a command line holds


class Admin:
    """The operator routes of one worker's API."""

    def __init__(self, geo: GeoApp, me: Callable[[], dict[str, str]]) -> None:
        self.geo, self._me = geo, me
        self.matched = 0  # entries the last retry matched on this worker
        self.tracked: list[str] = []  # their IPs, TRACK_MAX at most
        self.at = 0.0  # when the last retry was asked
        self.interrupted = False  # a rebalance stopped the last selection
        self._selection: asyncio.Task[None] | None = None

    def register(self, app: web.Application) -> None:
        app.router.add_post("/admin/retry", self.retry)
        app.router.add_get("/admin/retry", self.progress)
        app.router.add_post("/admin/forget", self.forget)

    @property
    def selecting(self) -> bool:
        return self._selection is not None and not self._selection.done()

    def stop(self) -> None:
        """Cancel a selection still running (the worker stops)."""
        if self._selection is not None:
            self._selection.cancel()

    async def retry(self, request: web.Request) -> web.Response:
        """Start selecting in the background and answer 202 at once: a selection of a million entries takes
        longer than an HTTP client waits; `GET /admin/retry` follows it."""
        refused = await self._refused(request)
        if refused is not None:
            return refused
        body = await _body(request)
        try:
            ips = _ips(body.get("ips") or [])
            allowed = RETRYABLE_BY_IP if ips else RETRYABLE
            statuses = parse_statuses(body.get("statuses") or allowed, allowed)
        except (ValueError, TypeError) as exc:
            return self._answer({"error": str(exc)}, 400)
        if self.selecting:
            return self._answer({"error": "a retry is still selecting on this worker: wait for it"}, 409)
        dbs, n = self.geo.store.active_partitions(), self.geo.settings.partitions
        if ips:
            local = dict(dbs)
            found = ((ip, local[_partition(self.geo, ip)].get(ip.encode())) for ip in owned(ips, n, local))
            walk: Iterator[tuple[str, bool]] = ((ip, status_of(raw) in statuses) for ip, raw in found)
        else:
            walk = in_retry_lane(dbs, statuses)
        self.matched, self.tracked, self.at, self.interrupted = 0, [], time.time(), False
        self._selection = asyncio.ensure_future(self._select(walk, statuses))
        body = {"selecting": True, "statuses": list(statuses), "partitions": [p for p, _ in dbs]}
        return self._answer(body, 202)

    async def _select(self, walk: Iterator[tuple[str, bool]], statuses: tuple[str, ...]) -> None:
        value = encode_operator_retry(self.at, statuses)
        try:
            for step, (ip, matches) in enumerate(walk, 1):
                if step % CHUNK == 0:
                    await asyncio.sleep(0)  # a long walk must not hold the agents and the hot path up
                    if self.geo.app.rebalancing:  # the partitions may move: the new owner is asked again
                        self.interrupted = True
                        break
                if not matches:
                    continue
                await self._send(ip, value)
                self.matched += 1
                if len(self.tracked) < TRACK_MAX:
                    self.tracked.append(ip)
        except Exception:  # a failed send: what was sent stands (idempotent), the rest is asked again
            self.interrupted = True
            log.exception("admin: retry selection failed after %d entries", self.matched)
        log.info("admin: retry of %s asked: %d entries made due", ",".join(statuses), self.matched)

    async def progress(self, request: web.Request) -> web.Response:
        refused = await self._refused(request, settled=False)
        if refused is not None:
            return refused
        local = dict(self.geo.store.active_partitions())
        counts: Counter[str] = Counter()
        for n, ip in enumerate(list(self.tracked)):
            db = local.get(_partition(self.geo, ip))
            counts[(status_of(db.get(ip.encode())) if db is not None else "elsewhere") or "gone"] += 1
            if n % CHUNK == CHUNK - 1:
                await asyncio.sleep(0)
        body = {
            "selecting": self.selecting,
            "interrupted": self.interrupted,
            "matched": self.matched,
            "tracked": len(self.tracked),
            "statuses": dict(counts),
            "at": self.at,
        }
        return self._answer(body)

    async def forget(self, request: web.Request) -> web.Response:
        refused = await self._refused(request)
        if refused is not None:
            return refused
        try:
            ips = _ips((await _body(request)).get("ips") or [])
        except (ValueError, TypeError) as exc:
            return self._answer({"error": str(exc)}, 400)
        active = [p for p, _ in self.geo.store.active_partitions()]
        taken = owned(ips, self.geo.settings.partitions, active)
        for ip in taken:
            await self._send(ip, encode_forget())
        log.info("admin: forget asked for %d IPs", len(taken))
        return self._answer({"forgotten": taken})

    async def _send(self, ip: str, value: bytes) -> None:
        topic = self.geo.settings.results_topic
        await self.geo.app.producer.send(topic, ip.encode(), value, None, None, None)

    async def _refused(self, request: web.Request, *, settled: bool = True) -> web.Response | None:
        if not admin_allowed(request.remote):
            log.warning("admin: refused %s %s from %s", request.method, request.path, request.remote)
            why = "operator routes answer requests from loopback only"
            return self._answer({"error": why}, 403)
        app = self.geo.app
        if settled and (app.rebalancing or not faustx.recovered(app)):
            return self._answer({"error": "rebalancing or recovering: ask again"}, 503)
        return None

    def _answer(self, body: dict[str, Any], status: int = 200) -> web.Response:
        headers = {"Retry-After": "1"} if status == 503 else None
        return web.json_response({**body, "worker": self._me()}, status=status, headers=headers)


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > BODY_MAX:
        raise web.HTTPRequestEntityTooLarge(max_size=BODY_MAX, actual_size=request.content_length)
    text = await request.text() if request.can_read_body else ""
    try:
        body = json.loads(text) if text else {}
    except ValueError:
        raise web.HTTPBadRequest(text="the body is not JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body is not a JSON object")
    return body


def _ips(values: Any) -> list[str]:
    """The IPs of a request, normalised; ValueError names the first that is not one."""
    if not isinstance(values, list):
        raise TypeError("ips must be a list")
    result = []
    for value in values:
        try:
            result.append(normalise_ip(str(value)))
        except InvalidAddress as exc:
            raise ValueError(f"not an IP: {str(value)[:100]!r} ({exc.reason})") from None
    return list(dict.fromkeys(result))


def _partition(geo: GeoApp, ip: str) -> int:
    return key_hash(ip.encode()) % geo.settings.partitions
