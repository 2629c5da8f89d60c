"""Every worker's HTTP API (aiohttp): an IP's entry from the table's owner, health, readiness, metrics.

Routes:
- `GET /geo/{ip}`: the IP's current entry, read from the active partition of the geo table that holds it
  (see pipeline/web/ownership.py), in this version's form: an entry an older version wrote shows the fields
  it lacks (the `proxy`, `hosting`, `mobile` flags, `data_version`) as null or their defaults. This
  worker answers when it owns that partition, else it forwards the request once to the owner (header
  `X-Geo-Forwarded`) and relays the answer; the body names the worker that answered (`worker`) and the
  one that forwarded (`forwarded_by`). 404: never seen; 400: not an IP;
  503 (with Retry-After): rebalancing or no owner yet; 502: the owner did not answer, or not acceptably.
  The owner's URL comes from its own group membership, so forwarding trusts it little: only a plain
  http(s) origin, inside GEO_FORWARD_NETWORKS when set; no redirect followed; an answer over
  FORWARD_BODY_MAX bytes or not a JSON object is not relayed (docs/hardening.md).
- `GET /health`: 200 while the process runs (liveness).
- `GET /ready`: 200 when assigned, recovered, not rebalancing, the broker answers, the hot path runs, no
  partition is stalled, the stall watch can see and no other group member advertises this worker's URL;
  else 503 with the reasons (readiness). The broker and group checks are cached and single flight
  (pipeline/web/guard.py).
- `GET /metrics`: Prometheus text format (pipeline/web/metrics.py).
- `/admin/retry`, `/admin/forget`: operator routes, loopback only
  (pipeline/web/admin.py).

Why not Faust's web server (`web_enabled`): it also serves Faust's table and router routes, which expose
raw table contents; it starts only after table recovery, so /health would not answer during a long one.
This server is started before the app (`faust.Worker(app, web)` in pipeline/cli/worker.py, `app.running` in
process) and binds a socket chosen in `build()`: the advertised URL must be known before the worker joins
the group, because Faust's assignor shares each member's URL (`canonical_url`) with the others.

Port: GEO_WEB_PORT when free; when it is taken, a free port is chosen and logged, so several workers can
run on one host with one configuration (`GEO_WEB_PORT=0` always picks a free one). Each worker's URL is in
the group metadata, which is how the CLI finds them.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from mode import Service
from yarl import URL

from pipeline.addresses import normalise_ip
from pipeline.config.settings import Settings
from pipeline.errors import InvalidAddress
from pipeline.kafka import faustx
from pipeline.kafka.group import member_urls
from pipeline.kafka.partitioner import key_hash
from pipeline.kafka.topics import changelog_topic
from pipeline.models import entry_view
from pipeline.web.admin import Admin
from pipeline.web.guard import Cached, TooLarge, connector, read_capped
from pipeline.web.metrics import CONTENT_TYPE, Metrics
from pipeline.web.ownership import (
    Checks,
    Distribution,
    forward_refusal,
    member,
    not_ready,
    owner_url,
    shared,
)

if TYPE_CHECKING:
    from pipeline.app import GeoApp

log = logging.getLogger(__name__)

FORWARDED = "X-Geo-Forwarded"  # set on a request forwarded to the owner: it is never forwarded again
FORWARD_TIMEOUT = 3.0  # seconds the owner has to answer a forwarded lookup
BROKER_TIMEOUT = 2.0  # seconds a readiness metadata request may take
BROKER_CACHE = 5.0  # seconds a broker check result is reused (probes every few seconds cost one request)
# an answer is an entry (~1.5 KiB at most, see providers/ipapi_answers.py) and two worker names: 64 KiB is
# ample, and bounds what a peer can make this worker hold per forwarded lookup
FORWARD_BODY_MAX = 64 * 1024
MEMBERS_CACHE = 15.0  # seconds the group's member URLs are reused: a shared URL is a lasting mistake
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Members = Callable[[], Awaitable[list[str]]]


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port; when the port is taken, on a free port (logged)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for attempt in (port, 0):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, attempt))
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE or attempt == 0:
                raise
            continue
        sock.listen(128)
        sock.setblocking(False)
        if attempt != port:
            log.warning("web: port %d on %s is taken; using %d instead", port, host, sock.getsockname()[1])
        return sock
    raise AssertionError("unreachable: port 0 either binds or raises")


def advertised_url(settings: Settings, port: int) -> str:
    """How others reach this worker: GEO_ADVERTISED_URL, else http://<GEO_WEB_HOST>:<port> (when bound to
    every interface: the address this host's name resolves to, see `reachable_host`)."""
    if settings.advertised_url:
        return str(URL(settings.advertised_url.rstrip("/")))
    host = settings.web_host
    if host in ("0.0.0.0", "::", ""):
        host = reachable_host()
    return str(URL.build(scheme="http", host=host, port=port))


def listen(settings: Settings) -> tuple[socket.socket, str]:
    """The API's socket, bound now (GEO_WEB_HOST, GEO_WEB_PORT), and the URL others reach it at: the worker
    is built with that URL (it goes into the group metadata) before the server that answers on the socket
    can be created around it."""
    sock = bind_listener(settings.web_host, settings.web_port)
    return sock, advertised_url(settings, sock.getsockname()[1])


def reachable_host() -> str:
    """The address the host name resolves to (in a container or a pod: its own address on the network,
    reachable by its peers without DNS for the name); the name itself when it resolves to loopback or not
    at all."""
    name = socket.gethostname()
    try:
        address = socket.gethostbyname(name)
    except OSError:
        return name
    return name if address.startswith("127.") else address


class WebServer(Service):
    """The HTTP API of one worker, on a socket bound in advance."""

    def __init__(
        self, geo: GeoApp, sock: socket.socket, url: str, members: Members | None = None, **kwargs: Any
    ) -> None:
        """`members`: the URL of each member of the group (default: asked of the group coordinator)."""
        super().__init__(**kwargs)
        self.geo, self.sock, self.url = geo, sock, url
        self.metrics = Metrics(geo)
        self.changelog = changelog_topic(geo.settings)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._broker = Cached(lambda: geo.hotpath.broker_reachable(BROKER_TIMEOUT), BROKER_CACHE, False)
        self._members = Cached(members or self._group_members, MEMBERS_CACHE, list[str]())
        app = web.Application(middlewares=[self._count])
        app.router.add_get("/geo/{ip}", self.lookup)
        app.router.add_get("/health", self.health)
        app.router.add_get("/ready", self.ready)
        app.router.add_get("/metrics", self.scrape)
        self.admin = Admin(geo, self._me)
        self.admin.register(app)  # operator routes: loopback only
        self.app = app

    async def on_start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT),
            connector=connector(self.geo.settings.forward_networks),
        )
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, self.sock).start()
        log.info("web: API at %s (bound to %s:%d)", self.url, *self.sock.getsockname()[:2])

    async def on_stop(self) -> None:
        self.admin.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self.metrics.http_requests.labels(name, str(exc.status)).inc()
            raise
        self.metrics.http_requests.labels(name, str(response.status)).inc()
        return response

    # -- routes ----------------------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "up", "worker": self._me()})

    async def ready(self, request: web.Request) -> web.Response:
        reasons = await self._not_ready()
        body = {"ready": not reasons, "reasons": reasons, "worker": self._me()}
        return web.json_response(body, status=503 if reasons else 200)

    async def scrape(self, request: web.Request) -> web.Response:
        text = await self.metrics.render(ready=not await self._not_ready())
        return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE})

    async def lookup(self, request: web.Request) -> web.Response:
        text = request.match_info["ip"]
        try:
            ip = normalise_ip(text)
        except InvalidAddress as exc:
            body = {"error": f"invalid ip: {exc.reason}", "input": text[:100], "worker": self._me()}
            return web.json_response(body, status=400)
        partition = key_hash(ip.encode()) % self.geo.settings.partitions
        about = {"ip": ip, "partition": partition}
        geo = self.geo
        if geo.app.rebalancing or not faustx.recovered(geo.app):
            return _unavailable({**about, "error": "rebalancing or recovering", "worker": self._me()})
        local = dict(geo.store.active_partitions()).get(partition)
        if local is not None:
            raw = local.get(ip.encode())
            if raw is None:
                return web.json_response({**about, "error": "never seen", "worker": self._me()}, status=404)
            return web.json_response({**about, "entry": entry_view(raw), "worker": self._me()})
        owner = owner_url(_distribution(geo), self.changelog, partition)
        if owner is None or owner == self.url or request.headers.get(FORWARDED):
            why = "no owner known for the partition" if owner is None else "the owner's view is changing"
            return _unavailable({**about, "error": why, "worker": self._me()})
        return await self._forward(owner, ip, about)

    async def _forward(self, owner: str, ip: str, about: dict[str, Any]) -> web.Response:
        assert self._session is not None
        refused = forward_refusal(owner, self.geo.settings.forward_networks)
        if refused:
            log.warning("web: not forwarding to the owner %s: %s", owner, refused)
            return _bad_owner(about, owner, f"refused to forward to the owner {owner}: {refused}")
        try:
            async with self._session.get(
                URL(owner) / "geo" / ip, headers={FORWARDED: self.url}, allow_redirects=False
            ) as reply:
                status = reply.status
                if 300 <= status < 400:
                    return _bad_owner(about, owner, f"the owner {owner} answered a redirect ({status})")
                body = json.loads(await read_capped(reply, FORWARD_BODY_MAX))
        except TooLarge as exc:
            return _bad_owner(about, owner, f"the owner {owner} answered too large a body ({exc})")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return _bad_owner(about, owner, f"the owner {owner} did not answer: {type(exc).__name__}: {exc}")
        if not isinstance(body, dict):
            kind = type(body).__name__
            return _bad_owner(about, owner, f"the owner {owner} answered a {kind}, not an object")
        body["forwarded_by"] = self._me()
        headers = {"Retry-After": "1"} if status == 503 else None
        return web.json_response(body, status=status, headers=headers)

    # -- readiness -------------------------------------------------------------------------------------

    async def _not_ready(self) -> list[str]:
        geo = self.geo
        checks = Checks(
            recovered=faustx.recovered(geo.app),
            rebalancing=bool(geo.app.rebalancing),
            assigned=member(_distribution(geo), self.url),
            broker=await self._broker.get(),
            hot_path=geo.hotpath.caught_up.is_set(),  # set once started and the near cache caught up
            stalled=tuple(f"{t}[{p}]" for t, p in sorted(geo.watch.stalled)),
            blind=geo.watch.blind,
            shared=tuple(url for url in shared(await self._members.get()) if url == self.url),
        )
        return not_ready(checks)

    async def _group_members(self) -> list[str]:
        """The group's member URLs as the coordinator describes them; [] when it cannot be asked (the
        broker check reports an unreachable broker on its own)."""
        try:
            return await asyncio.wait_for(member_urls(self.geo.settings), BROKER_TIMEOUT)
        except Exception as exc:  # any failure to ask: no evidence of a shared URL
            log.debug("web: the group's members could not be read: %r", exc)
            return []

    def _me(self) -> dict[str, str]:
        return {"name": self.geo.settings.worker_label, "url": self.url}


def _distribution(geo: GeoApp) -> Distribution:
    """{worker URL: {changelog topic: [active partitions]}} of the group's last assignment."""
    assignor: Any = geo.app.assignor  # the concrete PartitionAssignor; its interface type lacks this
    distribution: Distribution = assignor.changelog_distribution
    return distribution


def _bad_owner(about: dict[str, Any], owner: str, error: str) -> web.Response:
    return web.json_response({**about, "error": error, "owner": owner}, status=502)


def _unavailable(body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=503, headers={"Retry-After": "1"})
