"""A local stand-in for ip-api.com that enforces its limits strictly and can misbehave on demand.

The pipeline promises "never exceed the budget, never get banned"; only a server that counts, answers 429
and bans like ip-api can check that, so integration tests, benchmarks and the demo point here. Modelled:

- `POST /batch` (at most 100 items, else 422; unparsable body 400) and `GET /json/{ip}`, each with its own
  per-client fixed window (default 15 and 45 requests per 60 s) opened by the first request after the last
  one expired. Every limited response, 4xx/5xx included, carries `X-Rl` (requests left) and `X-Ttl` (whole
  seconds to reset, rounded up). Over the limit: 429 and a violation; after `ban_after` violations (default
  3: stricter than ip-api's unpublished threshold so misbehaviour fails loudly; 0 never bans) 403 for good.
- `?key=KEY`: when the server has an `api_key`, every request needs it (403 otherwise) and keyed requests
  are neither limited nor given `X-Rl`/`X-Ttl`, like pro.ip-api.com. Without an `api_key`, keys are ignored.
- Items fail with "private range" (RFC 1918, ULA, loopback, link-local), "reserved range" (all other
  non-global space: CGNAT, documentation, multicast, unspecified, IPv6 outside 2000::/3) or "invalid query".
  A global IP iptocc has no country for (unallocated) is a "success" with text fields "" and lat/lon 0, as
  ip-api answers it: retrying would not change it. Other fields are synthetic, see `expected_answer`;
  the `proxy`, `hosting` and `mobile` flags are drawn from a hash of the address (true for about one in
  11, 5 and 7 addresses), so a test predicts them.
- `fields` (names or numeric mask; absent means all) per item, else from the query string; `lang` is
  accepted and ignored (names stay English). `Faults` is mutable while running; `hostile_rate` spoils
  success items with the values of `pipeline.devtools.hostile` (oversized, markup, controls, bad numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import math
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple, Self

import iptocc
from aiohttp import web

from pipeline.devtools.hostile import spoil

Clock = Callable[[], float]
MAX_ITEMS = 100  # ip-api's batch limit; one more item is a 422
MAX_BODY = 1 << 20  # 100 items are ~30 KiB; a MiB is plenty and bounds a runaway client
FIELD_BITS = {  # ip-api's numeric field mask bits, in its answer order
    "status": 16384, "message": 32768, "country": 1, "countryCode": 2, "region": 4, "regionName": 8,
    "city": 16, "zip": 32, "lat": 64, "lon": 128, "timezone": 256, "isp": 512, "org": 1024, "as": 2048,
    "asname": 4194304, "mobile": 65536, "proxy": 131072, "hosting": 16777216, "query": 8192,
}  # fmt: skip
FLAG_ODDS = {"proxy": 11, "hosting": 5, "mobile": 7}  # one address in N answers True, the rest False
COUNTRIES = {  # enough names for readable demos; other codes fall back to the code itself
    "US": "United States", "CA": "Canada", "BR": "Brazil", "GB": "United Kingdom", "FR": "France",
    "DE": "Germany", "NL": "Netherlands", "ES": "Spain", "IT": "Italy", "SE": "Sweden", "PL": "Poland",
    "RU": "Russia", "UA": "Ukraine", "IN": "India", "CN": "China", "JP": "Japan", "KR": "South Korea",
    "SG": "Singapore", "HK": "Hong Kong", "AU": "Australia", "ZA": "South Africa", "NG": "Nigeria",
}  # fmt: skip
_ZONES = ("America/New_York", "Europe/Berlin", "Asia/Tokyo", "Australia/Sydney", "America/Sao_Paulo")
_PRIVATE_NETS = (
    "10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 127.0.0.0/8 169.254.0.0/16 fc00::/7 ::1/128 fe80::/10"
)
_PRIVATE = tuple(ipaddress.ip_network(n) for n in _PRIVATE_NETS.split())  # ip-api: "private range"
_GLOBAL_V6 = ipaddress.ip_network("2000::/3")


def classify(query: str) -> str | None:
    """None for a global address, else ip-api's fail message for it."""
    try:
        addr = ipaddress.ip_address(query)
    except ValueError:
        return "invalid query"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if any(addr.version == net.version and addr in net for net in _PRIVATE):
        return "private range"
    v6_outside = isinstance(addr, ipaddress.IPv6Address) and addr not in _GLOBAL_V6
    if v6_outside or not addr.is_global or addr.is_multicast or addr.is_reserved:
        return "reserved range"
    return None


def parse_fields(spec: str | None) -> frozenset[str]:
    """The answer keys for a `fields` value: names or a numeric mask; unknown names are ignored."""
    spec = (spec or "").strip()
    if spec.isdigit():
        return frozenset(name for name, bit in FIELD_BITS.items() if int(spec) & bit)
    if not spec:
        return frozenset(FIELD_BITS)
    return frozenset(n.strip() for n in spec.split(",")) & FIELD_BITS.keys()


def expected_answer(query: str, fields: str | None = None) -> dict[str, Any]:
    """The item the server answers for `query`: tests predict results with this instead of hard-coding."""
    message = classify(query)
    if message is not None:
        full: dict[str, Any] = {"status": "fail", "message": message, "query": query}
    else:
        canonical = str(ipaddress.ip_address(query))
        cc = iptocc.country_code(canonical) or ""
        h = int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:8], "big")
        asn = 1000 + h % 60000
        full = {"status": "success", "country": COUNTRIES.get(cc, cc), "countryCode": cc,
                "region": f"R{h % 97}", "regionName": f"Region {h % 97}", "city": f"City {h % 9973}",
                "zip": f"{h % 100000:05d}", "lat": round((h % 180000) / 1000 - 90, 4),
                "lon": round((h // 180000 % 360000) / 1000 - 180, 4), "timezone": _ZONES[h % len(_ZONES)],
                "isp": f"Synthetic ISP {asn}", "org": f"Synthetic Org {asn}",
                "as": f"AS{asn} Synthetic Net {asn}", "asname": f"SYNTH-{asn}"}  # fmt: skip
        # the flags from other bits of the same hash than the fields above: deterministic, independent
        flags = {name: (h >> (20 + 8 * i)) % odds == 0 for i, (name, odds) in enumerate(FLAG_ODDS.items())}
        full |= {**flags, "query": query}
        if not cc:  # unallocated: ip-api says success but knows nothing
            blank = {k: 0 if k in ("lat", "lon") else "" for k in full if k not in ("status", "query")}
            full |= blank | dict.fromkeys(FLAG_ODDS, False)
    wanted = parse_fields(fields)
    return {k: v for k, v in full.items() if k in wanted}


class FixedWindow:
    """One client's budget on one endpoint: a fixed window (not a sliding one) opened by the first request
    after the last window expired, which is what ip-api does: waiting `X-Ttl` always buys a full budget."""

    def __init__(self, limit: int, seconds: float, clock: Clock = time.monotonic) -> None:
        self.limit, self.seconds, self._clock = limit, seconds, clock
        self._reset_at = -math.inf
        self._count = 0  # requests seen in this window, refused ones included
        self.max_seen = 0  # most requests seen in any one window: a well-behaved client keeps it <= limit

    def hit(self) -> tuple[bool, int, int]:
        """Count one request: (allowed, X-Rl, X-Ttl)."""
        now = self._clock()
        if now >= self._reset_at:
            self._reset_at, self._count = now + self.seconds, 0
        self._count += 1
        self.max_seen = max(self.max_seen, self._count)
        return self._count <= self.limit, max(0, self.limit - self._count), self.ttl()

    def ttl(self) -> int:
        """Whole seconds until the current window resets (a full window when none is open)."""
        left = self._reset_at - self._clock()
        return math.ceil(left) if left > 0 else math.ceil(self.seconds)


class Verdict(NamedTuple):
    """What the limiter decided for one request: the status to answer (200: serve it) and the headers."""

    status: int
    remaining: int  # X-Rl
    ttl: int  # X-Ttl
    violation: bool


class RateLimiter:
    """Windows per (client, endpoint); violations and permanent bans per client, across endpoints."""

    def __init__(self, limits: dict[str, int], seconds: float, ban_after: int, clock: Clock) -> None:
        self.limits, self.seconds, self.ban_after, self._clock = limits, seconds, ban_after, clock
        self.windows: dict[tuple[str, str], FixedWindow] = {}
        self.violations: Counter[str] = Counter()
        self.banned: set[str] = set()

    def check(self, client: str, endpoint: str, *, forced_429: bool = False) -> Verdict:
        """Count the request unless the client is banned or the 429 is forced (forced ones never ban)."""
        if (client, endpoint) not in self.windows:
            self.windows[client, endpoint] = FixedWindow(self.limits[endpoint], self.seconds, self._clock)
        window = self.windows[client, endpoint]
        if client in self.banned:
            return Verdict(403, 0, window.ttl(), False)
        if forced_429:
            return Verdict(429, 0, window.ttl(), False)
        allowed, remaining, ttl = window.hit()
        if allowed:
            return Verdict(200, remaining, ttl, False)
        self.violations[client] += 1
        if self.ban_after and self.violations[client] >= self.ban_after:
            self.banned.add(client)
        return Verdict(429, 0, ttl, True)


@dataclass
class Faults:
    """Misbehaviour drawn per request from the server's seeded Random; mutate freely while it runs."""

    error_rate: float = 0.0  # answer 503
    slow_rate: float = 0.0  # answer after slow_seconds
    slow_seconds: float = 2.0
    timeout_rate: float = 0.0  # hang timeout_seconds (past any client timeout; cut short on shutdown), 504
    timeout_seconds: float = 30.0
    malformed_rate: float = 0.0  # truncated JSON body with status 200
    partial_rate: float = 0.0  # drop about half of the batch items (at least one)
    hostile_rate: float = 0.0  # spoil this share of success items (hostile.KINDS; its own seeded Random)
    force_429: bool = False  # every request 429 with X-Rl 0, no violation: a rate-limited period


@dataclass(frozen=True)
class ServerConfig:
    """Limits and identity of one server; `window` in seconds."""

    port: int = 0
    window: float = 60.0
    batch_limit: int = 15
    json_limit: int = 45
    ban_after: int = 3
    api_key: str | None = None
    seed: int = 0


@dataclass
class LoggedRequest:
    """One request as the server saw it (the query string, which may hold a key, is not kept)."""

    time: float
    path: str
    client: str
    items: int = 0
    ips: list[str] = field(default_factory=list)  # as read (429 bodies too); 403 bodies are not; bad items ""
    status: int = 0  # 0 while in flight, or when aiohttp itself answered (413 for a body over MAX_BODY)
    violation: bool = False


class IpApiServer:
    """`async with IpApiServer(config) as server:` serves on 127.0.0.1 at `server.url` until exit.

    A client is a peer address, so local workers share one budget, like workers behind one NAT do.
    """

    def __init__(self, config: ServerConfig | None = None, *, faults: Faults | None = None,
                 clock: Clock = time.monotonic) -> None:  # fmt: skip
        self.config = config or ServerConfig()
        self.faults = faults or Faults()
        self.clock = clock
        self.rng = random.Random(self.config.seed)
        # hostile items draw from their own Random, so every other fault replays as it did before
        self.hostile_rng = random.Random(f"hostile:{self.config.seed}")
        self.hostile: list[tuple[str, str]] = []  # (query, kind) of every spoiled item served, in order
        limits = {"batch": self.config.batch_limit, "json": self.config.json_limit}
        self.limiter = RateLimiter(limits, self.config.window, self.config.ban_after, clock)
        self.log: list[LoggedRequest] = []
        self.requests = 0  # received so far, refused ones included
        self.count_429 = 0  # forced ones included
        self.url = ""
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def violations(self) -> int:
        """Requests sent over the limit: forced 429s are not the client's fault and do not count."""
        return sum(self.limiter.violations.values())

    @property
    def banned(self) -> bool:
        """Whether any client got itself banned: a correct pipeline never does."""
        return bool(self.limiter.banned)

    def ips_seen(self, *, rejected: bool = False) -> Counter[str]:
        """How often each IP was queried in requests the server answered (with `rejected`, in 429'd ones
        too): duplicates show a client re-sending what was pending."""
        return Counter(ip for r in self.log for ip in r.ips if rejected or r.status != 429)

    def max_in_window(self, endpoint: str = "batch") -> int:
        """Most requests one client sent to `endpoint` in one window; over the limit means a violation."""
        return max((w.max_seen for (_, e), w in self.limiter.windows.items() if e == endpoint), default=0)

    def summary(self) -> str:
        """One line for the CLI's exit and benchmark logs."""
        return (f"requests={self.requests} 429s={self.count_429} violations={self.violations} "
                f"banned={self.banned} max_batch_in_window={self.max_in_window()} "
                f"unique_ips={len(self.ips_seen())}")  # fmt: skip

    async def __aenter__(self) -> Self:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/batch", partial(self._serve, endpoint="batch"))
        app.router.add_get("/json", partial(self._serve, endpoint="json"))
        app.router.add_get("/json/{ip}", partial(self._serve, endpoint="json"))
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.config.port).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()  # wakes hanging "timeout" handlers so shutdown does not wait for them
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve(self, request: web.Request, endpoint: str) -> web.Response:
        entry = LoggedRequest(self.clock(), request.path, request.remote or "?")
        self.log.append(entry)
        self.requests += 1
        response = await self._respond(request, endpoint, entry)
        entry.status = response.status
        self.count_429 += response.status == 429
        return response

    async def _respond(self, request: web.Request, endpoint: str, entry: LoggedRequest) -> web.Response:
        headers: dict[str, str] = {}
        if self.config.api_key is not None:
            key = request.query.get("key", "")
            if not hmac.compare_digest(key.encode(), self.config.api_key.encode()):
                return web.Response(status=403, text="invalid or missing key")
            if self.faults.force_429:  # an outage hits pro customers too; they have no window to report
                ttl = str(math.ceil(self.config.window))
                return web.Response(status=429, headers={"X-Rl": "0", "X-Ttl": ttl}, text="too many requests")
        else:
            verdict = self.limiter.check(entry.client, endpoint, forced_429=self.faults.force_429)
            headers = {"X-Rl": str(verdict.remaining), "X-Ttl": str(verdict.ttl)}
            entry.violation = verdict.violation
            if verdict.status == 429 and endpoint == "batch":
                entry.ips = await _batch_ips(request)  # rejected asks count too when checking duplicates
            if verdict.status != 200:
                return web.Response(status=verdict.status, headers=headers, text="too many requests"
                                    if verdict.status == 429 else "banned")  # fmt: skip
        fields = request.query.get("fields")  # `lang` is accepted and ignored: names stay English
        if endpoint == "json":
            items: list[tuple[str, str | None]] = [(request.match_info.get("ip") or entry.client, fields)]
        else:
            try:
                body = json.loads(await request.read())
            except ValueError:
                return web.Response(status=400, headers=headers, text="invalid JSON")
            if not isinstance(body, list):
                return web.Response(status=400, headers=headers, text="expected a JSON array")
            items = list(_items(body, fields))
        entry.items, entry.ips = len(items), [q for q, _ in items]
        if len(items) > MAX_ITEMS:
            return web.Response(status=422, headers=headers, text="too many items")
        return await self._answer(items, endpoint, headers)

    async def _answer(self, items: list[tuple[str, str | None]], endpoint: str,
                      headers: dict[str, str]) -> web.Response:  # fmt: skip
        f = self.faults
        # One draw per fault kind per request, always in this order, so a seed replays the same run.
        timeout, error, slow, cut, malformed = (self.rng.random() for _ in range(5))
        if timeout < f.timeout_rate:
            try:
                await asyncio.wait_for(self._closing.wait(), f.timeout_seconds)
                return web.Response(status=503, headers=headers, text="shutting down")
            except TimeoutError:
                return web.Response(status=504, headers=headers, text="timed out")
        if error < f.error_rate:
            return web.Response(status=503, headers=headers, text="service unavailable")
        if slow < f.slow_rate:
            await asyncio.sleep(f.slow_seconds)
        answers = [expected_answer(q, flds) for q, flds in items]
        if endpoint == "batch" and answers and cut < f.partial_rate:
            dropped = set(self.rng.sample(range(len(answers)), max(1, len(answers) // 2)))
            answers = [a for i, a in enumerate(answers) if i not in dropped]
        answers, spoiled = spoil(answers, f.hostile_rate, self.hostile_rng)
        self.hostile.extend(spoiled)
        text = json.dumps(answers if endpoint == "batch" else answers[0])
        if malformed < f.malformed_rate:
            text = text[: max(1, len(text) // 2)]
        return web.Response(status=200, headers=headers, text=text, content_type="application/json")


async def _batch_ips(request: web.Request) -> list[str]:
    """The queries of a batch body, or none when it does not parse (only for the log)."""
    try:
        body = json.loads(await request.read())
    except ValueError:
        return []
    return [q for q, _ in _items(body, None)] if isinstance(body, list) else []


def _items(body: list[Any], fields: str | None) -> Iterable[tuple[str, str | None]]:
    """(query, fields) per batch item; an item's own fields win; a malformed item queries ""."""
    for item in body:
        item = item if isinstance(item, dict) else {"query": item}
        query, own = item.get("query"), item.get("fields", fields)
        yield (query if isinstance(query, str) else ""), (None if own is None else str(own))


async def _main(config: ServerConfig, faults: Faults) -> None:
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with IpApiServer(config, faults=faults) as server:
        print(f"listening on {server.url}", flush=True)
        await stop.wait()
    print(server.summary(), flush=True)


def main(argv: list[str] | None = None) -> None:
    """CLI: one flag per ServerConfig and Faults field (`--limit` is `--batch-limit`); runs until a signal."""
    p = argparse.ArgumentParser(
        prog="python -m pipeline.devtools.fake_ipapi", description=__doc__.splitlines()[0]
    )
    for cls in (ServerConfig, Faults):
        for f in dataclasses.fields(cls):
            flags = ["--" + f.name.replace("_", "-")] + (["--limit"] if f.name == "batch_limit" else [])
            if isinstance(f.default, bool):
                p.add_argument(*flags, dest=f.name, action="store_true")
            else:
                kind = str if f.default is None else type(f.default)
                p.add_argument(*flags, dest=f.name, default=f.default, type=kind, help=f"default {f.default}")
    args = vars(p.parse_args(argv))
    config = ServerConfig(**{f.name: args[f.name] for f in dataclasses.fields(ServerConfig)})
    asyncio.run(_main(config, Faults(**{f.name: args[f.name] for f in dataclasses.fields(Faults)})))


if __name__ == "__main__":
    main()
