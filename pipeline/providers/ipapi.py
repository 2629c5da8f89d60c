"""The ip-api.com batch protocol: pure request building and response parsing, and the provider around it.

The pure half (`build_batch`, `batch_url`, `parse_rate_headers`, `parse_batch`) decides everything about
the protocol and is unit-tested with tables of cases; `parse_batch` leaves each answer item to
`pipeline.providers.ipapi_answers`, which validates what an untrusted plain-HTTP answer may put into the
cache.
`IpApiProvider` only moves bytes: it asks the `ResolveBudget` whether it may send, sends one POST with a
bounded timeout, feeds the budget the `X-Rl`/`X-Ttl` headers and turns every outcome into a
`LookupResult`; it never raises for a lookup problem.

The API key is a `pipeline.config.secret.Secret`. The URL that carries it is built at request time and never
stored, logged or put in a reason; aiohttp exception texts can contain the URL, so reasons name only the
exception type and log lines pass through `_redact`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
from collections.abc import Mapping, Sequence
from contextlib import suppress
from urllib.parse import quote

import aiohttp
from yarl import URL

from pipeline.config.limits import IPAPI_DEFAULT_FIELDS
from pipeline.config.secret import Secret
from pipeline.config.settings import Settings
from pipeline.models import LookupResult, PermanentFailure, Resolved, TransientFailure
from pipeline.providers.ipapi_answers import item_result, parse_int
from pipeline.providers.throttle import BREAKER_COOLOFF_CAP, Clock, ResolveBudget

log = logging.getLogger(__name__)

PROVIDER_NAME = "ipapi"  # the name GEO_PROVIDERS uses and results carry
MAX_BATCH = 100  # ip-api answers HTTP 422 to a batch of more than 100 items
FREE_URL = "http://ip-api.com/batch"  # the free tier is HTTP only
PRO_URL = "https://pro.ip-api.com/batch"  # the paid tier, HTTPS, key in the query string
REQUIRED_FIELDS = ("status", "message", "query")  # needed to classify an item and match it to its IP
REQUIRED_MASK = 16384 | 32768 | 8192  # the same three as ip-api's numeric field bits
DEFAULT_FIELDS = IPAPI_DEFAULT_FIELDS  # the settings' default: proxy, hosting, mobile asked too
REQUEST_TIMEOUT = 10.0  # seconds for the whole request: a stuck call must not hold the resolver's batch
MAX_BODY_BYTES = 1 << 20  # 100 items are ~30 KiB; anything near 1 MiB is not ip-api talking


def merge_fields(fields: str) -> str:
    """`fields` plus status, message and query (names or numeric mask); empty means DEFAULT_FIELDS."""
    fields = fields.strip()
    if not fields:
        return DEFAULT_FIELDS
    if fields.isdigit():
        return str(int(fields) | REQUIRED_MASK)
    names = [n.strip() for n in fields.split(",") if n.strip()]
    return ",".join(dict.fromkeys([*REQUIRED_FIELDS, *names]))


def build_batch(ips: Sequence[str], fields: str = DEFAULT_FIELDS, lang: str = "") -> list[dict[str, str]]:
    """The JSON body for one batch POST; raises ValueError over 100 IPs (ip-api would answer 422)."""
    if len(ips) > MAX_BATCH:
        raise ValueError(f"a batch holds at most {MAX_BATCH} IPs, got {len(ips)}")
    merged = merge_fields(fields)
    extra = {"lang": lang} if lang else {}
    return [{"query": ip, "fields": merged, **extra} for ip in ips]


def batch_url(base_url: str | None, api_key: Secret | None) -> str:
    """The batch endpoint: free, pro (with key), or `base_url` + /batch (the local test server).

    The result contains the key: use it for the request and nothing else.
    """
    if base_url:
        url = base_url.rstrip("/")
        url = url if url.endswith("/batch") else url + "/batch"
    else:
        url = PRO_URL if api_key else FREE_URL
    return f"{url}?key={quote(api_key.reveal(), safe='')}" if api_key else url


def parse_rate_headers(headers: Mapping[str, str]) -> tuple[int | None, float | None]:
    """(X-Rl, X-Ttl) from headers in any case; None when missing or unreadable; negatives clamp to 0."""
    lowered = {name.lower(): value for name, value in headers.items()}
    rl: int | None = None
    ttl: float | None = None
    with suppress(ValueError):
        rl = max(0, int(lowered.get("x-rl", "").strip()))
    with suppress(ValueError):
        ttl = float(lowered.get("x-ttl", "").strip())
    return rl, (max(0.0, ttl) if ttl is not None and math.isfinite(ttl) else None)


def parse_batch(ips: Sequence[str], body: bytes, provider: str = PROVIDER_NAME) -> dict[str, LookupResult]:
    """One result per IP in `ips`, matched to answer items by `query`; never raises.

    A body that is not a JSON list, or a list of more than twice as many items as IPs (ip-api answers one
    per query; a repeat is tolerated, a flood is not ip-api), fails every IP transiently ("malformed
    response"). Otherwise each item is validated on its own (`pipeline.providers.ipapi_answers`): a bad item
    fails only
    its IP ("ip-api: invalid item: ..."), and an IP no item answers is "missing from response". Items are
    matched by the normalised `query` (so case and IPv6 spelling do not matter), or by position when an
    item has no string query and the answer has exactly one item per IP. When two items answer the same IP
    the more useful wins (success, then permanent, then transient). A "success" with an empty countryCode
    (rare: unallocated space) is still Resolved with what is there, country None: retrying would not
    change it.
    """
    try:
        items = json.loads(body, parse_int=parse_int)
    except (ValueError, RecursionError):  # ValueError covers UnicodeDecodeError and JSONDecodeError
        items = None
    if not isinstance(items, list) or len(items) > 2 * len(ips):
        return {ip: TransientFailure("malformed response", provider) for ip in ips}
    wanted = {_key(ip) for ip in ips}
    found: dict[str, LookupResult] = {}
    positional = len(items) == len(ips)
    for index, item in enumerate(items):
        query = item.get("query") if isinstance(item, dict) else None
        if isinstance(query, str):
            key = _key(query)
        elif positional:
            key = _key(ips[index])
        else:
            continue
        if key not in wanted:
            continue  # an answer for an IP we did not ask about
        result = item_result(item, provider)
        if key not in found or _RANK[type(result)] < _RANK[type(found[key])]:
            found[key] = result
    missing = TransientFailure("missing from response", provider)
    return {ip: found.get(_key(ip), missing) for ip in ips}


class IpApiProvider:
    """GeoProvider for ip-api.com; one instance per worker, sharing the worker's session and budget."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        budget: ResolveBudget,
        *,
        base_url: str | None = None,
        api_key: Secret | None = None,
        fields: str = DEFAULT_FIELDS,
        lang: str = "",
        timeout: float = REQUEST_TIMEOUT,
        max_body: int = MAX_BODY_BYTES,
        name: str = PROVIDER_NAME,
    ) -> None:
        self.name: str = name
        self.max_batch: int = MAX_BATCH
        self._session, self._budget = session, budget
        self._base_url, self._key = base_url, api_key
        self._fields, self._lang = merge_fields(fields), lang
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_body = max_body

    def __repr__(self) -> str:
        return f"IpApiProvider(base_url={self._base_url!r}, api_key={self._key!r})"

    async def resolve(self, ips: Sequence[str]) -> dict[str, LookupResult]:
        """Resolve up to 100 IPs with one request, or fail them all transiently without sending."""
        unique = list(dict.fromkeys(ips))
        if not unique:
            return {}
        if len(unique) > self.max_batch:
            log.error("resolve() got %d IPs, at most %d allowed: nothing sent", len(unique), self.max_batch)
            return self._fail_all(unique, f"batch over {self.max_batch}")
        if self._budget.delay() > 0:
            # Never sleep here: the caller holds a batch (and a rebalance waits for it). The resolver waits
            # for the budget before it calls; reaching this line means someone else spent the slot.
            return self._fail_all(unique, "rate budget exhausted")
        body = build_batch(unique, self._fields, self._lang)
        self._budget.on_sent()  # before the call: a request counts against the budget the moment it leaves
        try:
            async with self._session.post(
                batch_url(self._base_url, self._key), json=body, timeout=self._timeout, allow_redirects=False
            ) as resp:
                rl, ttl = parse_rate_headers(resp.headers)
                self._budget.on_response(resp.status, rl, ttl)
                if resp.status != 200:
                    return self._fail_status(unique, resp.status, rl, ttl)
                raw = await _read_capped(resp, self._max_body)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self._budget.on_transport_failure()
            log.warning("ip-api request failed: %s", self._redact(f"{type(exc).__name__}: {exc}"))
            return self._fail_all(unique, f"transport error: {type(exc).__name__}")
        if raw is None:
            log.warning("ip-api response over %d bytes dropped", self._max_body)
            return self._fail_all(unique, "response too large")
        return parse_batch(unique, raw, self.name)

    def _fail_status(
        self, ips: list[str], status: int, rl: int | None, ttl: float | None
    ) -> dict[str, LookupResult]:
        if status == 429:
            log.warning("ip-api said 429 (X-Rl=%s X-Ttl=%s); budget now %s", rl, ttl, self._budget.snapshot())
            return self._fail_all(ips, "rate limited")
        if status == 422:  # only a batch over 100 gets this, which build_batch makes impossible: a bug
            log.error("ip-api said 422 to a batch of %d IPs: batch limit violated, fix the caller", len(ips))
        else:
            log.warning("ip-api answered HTTP %d to a batch of %d IPs", status, len(ips))
        return self._fail_all(ips, f"HTTP {status}")

    def _fail_all(self, ips: Sequence[str], reason: str) -> dict[str, LookupResult]:
        return {ip: TransientFailure(reason, self.name) for ip in ips}

    def _redact(self, text: str) -> str:
        """`text` with the key removed in every spelling a URL may give it (raw, quoted, yarl's form)."""
        if self._key:
            raw = self._key.reveal()
            yarl_form = URL(batch_url("http://h", self._key)).raw_query_string  # what aiohttp prints
            forms = {raw, quote(raw, safe=""), quote(raw), yarl_form}
            for form in sorted(forms - {""}, key=len, reverse=True):
                text = text.replace(form.removeprefix("key="), "**********")
        return text


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None once it exceeds `limit` bytes (checked as it streams, not after)."""
    if resp.content_length is not None and resp.content_length > limit:
        return None
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


_RANK: dict[type[LookupResult], int] = {Resolved: 0, PermanentFailure: 1, TransientFailure: 2}


def _key(ip: str) -> str:
    """A matching key that ignores case, surrounding space and IPv6 spelling."""
    text = ip.strip()
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return text.lower()


def remote_provider(
    settings: Settings, session: aiohttp.ClientSession, clock: Clock
) -> tuple[IpApiProvider, ResolveBudget]:
    """The ip-api provider of one worker and its budget, from settings; the session is the caller's."""
    s = settings
    budget = ResolveBudget(
        clock,
        limit=s.budget_requests,
        window=s.budget_window,
        # an open breaker keeps the API closed for a window at first, and never for longer than an entry
        # waits between retries: after an outage every entry is served within one retry cap
        breaker_cooloff=min(s.budget_window, s.retry_cap),
        breaker_cooloff_cap=min(BREAKER_COOLOFF_CAP, s.retry_cap),
    )
    provider = IpApiProvider(
        session,
        budget,
        base_url=s.ipapi_url or None,
        api_key=s.ipapi_key,
        fields=s.ipapi_fields,
        lang=s.ipapi_lang,
        timeout=s.http_timeout,
    )
    return provider, budget
