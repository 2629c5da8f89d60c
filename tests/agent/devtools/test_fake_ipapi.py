"""The fake ip-api server: its window arithmetic with a fake clock, then the real aiohttp app in-process."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipeline.devtools.fake_ipapi import (
    MAX_ITEMS,
    Faults,
    FixedWindow,
    IpApiServer,
    RateLimiter,
    ServerConfig,
    classify,
    expected_answer,
    parse_fields,
)
from pipeline.devtools.hostile import KINDS, Hostile
from pipeline.models import Resolved, TransientFailure
from pipeline.providers.ipapi import DEFAULT_FIELDS, parse_batch
from pipeline.providers.ipapi_answers import MAX_TEXT

pytestmark = pytest.mark.timeout(30)
REPO = Path(__file__).resolve().parents[3]


class FakeClock:
    """A clock the test moves by hand, so window logic is checked without sleeping."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(clock: FakeClock, batch: int = 3, ban_after: int = 3) -> RateLimiter:
    return RateLimiter({"batch": batch, "json": 45}, 6.0, ban_after, clock)


# --- pure window and limiter logic -------------------------------------------------------------------


def test_window_counts_down_then_refuses() -> None:
    """X-Rl counts the requests left after each one; the request past the limit is refused with X-Rl 0."""
    window = FixedWindow(3, 6.0, FakeClock())
    assert [window.hit() for _ in range(4)] == [(True, 2, 6), (True, 1, 6), (True, 0, 6), (False, 0, 6)]


def test_ttl_is_whole_seconds_rounded_up() -> None:
    """X-Ttl is the time left in the window rounded up, so a client that waits it never arrives early."""
    clock = FakeClock()
    window = FixedWindow(3, 6.0, clock)
    window.hit()
    clock.now += 0.5
    assert window.hit()[2] == 6
    clock.now += 4.6
    assert window.hit()[2] == 1


def test_window_resets_at_first_request_after_expiry() -> None:
    """A new window opens at the first request after the old one expired, not on a fixed grid."""
    clock = FakeClock()
    window = FixedWindow(2, 6.0, clock)
    window.hit(), window.hit()
    assert window.hit()[0] is False
    clock.now += 6.0
    assert window.hit() == (True, 1, 6)
    clock.now += 100.3  # idle: the next window starts at this request and lasts a full 6 s
    assert window.hit() == (True, 1, 6)
    clock.now += 5.9
    assert window.hit() == (True, 0, 1)


def test_max_seen_counts_refused_requests() -> None:
    """max_seen includes refused requests, so it exceeds the limit exactly when a client overran it."""
    window = FixedWindow(2, 6.0, FakeClock())
    for _ in range(5):
        window.hit()
    assert window.max_seen == 5


def test_limiter_bans_after_repeated_violations() -> None:
    """The ban_after-th 429 bans the client; every later request is 403, even in a fresh window."""
    clock = FakeClock()
    rl = limiter(clock, batch=1, ban_after=2)
    assert rl.check("c", "batch") == (200, 0, 6, False)
    assert rl.check("c", "batch") == (429, 0, 6, True)
    assert "c" not in rl.banned
    assert rl.check("c", "batch") == (429, 0, 6, True)
    assert rl.banned == {"c"}
    clock.now += 60
    assert rl.check("c", "batch").status == 403
    assert rl.check("c", "json").status == 403
    assert rl.violations["c"] == 2


def test_forced_429_neither_counts_nor_bans() -> None:
    """A forced 429 reports X-Rl 0 but is no violation and leaves the window's budget untouched."""
    rl = limiter(FakeClock(), batch=3, ban_after=1)
    for _ in range(10):
        assert rl.check("c", "batch", forced_429=True) == (429, 0, 6, False)
    assert rl.violations["c"] == 0 and not rl.banned
    assert rl.check("c", "batch") == (200, 2, 6, False)


def test_limits_are_per_client_and_per_endpoint() -> None:
    """One client's exhausted batch window affects neither its /json window nor another client."""
    rl = limiter(FakeClock(), batch=1)
    rl.check("a", "batch")
    assert rl.check("a", "batch").status == 429
    assert rl.check("a", "json") == (200, 44, 6, False)
    assert rl.check("b", "batch") == (200, 0, 6, False)


def test_ban_after_zero_never_bans() -> None:
    """ban_after=0 turns bans off: a benchmark can overrun the limit and keep measuring."""
    rl = limiter(FakeClock(), batch=1, ban_after=0)
    for _ in range(20):
        rl.check("c", "batch")
    assert rl.violations["c"] == 19 and not rl.banned


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
        ("10.1.2.3", "private range"),
        ("172.16.0.1", "private range"),
        ("192.168.1.1", "private range"),
        ("127.0.0.1", "private range"),
        ("169.254.1.1", "private range"),
        ("::1", "private range"),
        ("fd00::1", "private range"),
        ("fe80::1", "private range"),
        ("::ffff:10.0.0.1", "private range"),
        ("100.64.0.1", "reserved range"),
        ("0.0.0.0", "reserved range"),
        ("192.0.2.1", "reserved range"),
        ("224.0.0.1", "reserved range"),
        ("240.0.0.1", "reserved range"),
        ("255.255.255.255", "reserved range"),
        ("::", "reserved range"),
        ("2001:db8::1", "reserved range"),
        ("ff02::1", "reserved range"),
        ("", "invalid query"),
        ("example.com", "invalid query"),
        ("1.2.3.256", "invalid query"),
    ],
)
def test_classify_matches_ip_api_messages(query: str, message: str | None) -> None:
    """Non-global addresses fail as "private range" or "reserved range", non-addresses as "invalid query"."""
    assert classify(query) == message


def test_parse_fields_accepts_names_and_masks() -> None:
    """fields takes comma-separated names or ip-api's numeric mask; empty means every field."""
    assert parse_fields("status, countryCode,bogus") == {"status", "countryCode"}
    assert parse_fields("16384") == {"status"}
    assert parse_fields(str(16384 | 32768 | 8192 | 2)) == {"status", "message", "query", "countryCode"}
    assert "asname" in parse_fields(None) and "asname" in parse_fields("")


def test_expected_answer_uses_iptocc_and_is_deterministic() -> None:
    """A public IP gets iptocc's country and stable synthetic fields derived from the address."""
    answer = expected_answer("8.8.8.8")
    assert answer["status"] == "success" and answer["countryCode"] == "US"
    assert answer["country"] == "United States" and answer["query"] == "8.8.8.8"
    assert answer["as"].startswith("AS") and answer["as"].split()[0][2:].isdigit()
    assert answer == expected_answer("8.8.8.8") != expected_answer("1.1.1.1")
    assert expected_answer("2001:4860::1")["as"] == expected_answer("2001:4860:0::1")["as"]


def test_flags_are_booleans_drawn_from_the_address_and_selected_by_name_or_mask() -> None:
    """proxy, hosting and mobile are JSON booleans fixed per address, each true for some of 600 addresses
    and false for most; ip-api's mask bits (65536 mobile, 131072 proxy, 16777216 hosting) select them, and
    its all-fields mask 66846719 holds all three; the client's default fields ask for them."""
    ips = [f"{a}.{b}.7.9" for a in range(11, 41) for b in range(1, 21)]
    answers = [expected_answer(ip) for ip in ips]
    for flag in ("proxy", "hosting", "mobile"):
        values = [answer[flag] for answer in answers if answer["countryCode"]]
        assert all(isinstance(v, bool) for v in values) and 0 < sum(values) < len(values) / 2, flag
    assert answers == [expected_answer(ip) for ip in ips]
    assert parse_fields("65536") == {"mobile"} and parse_fields("131072") == {"proxy"}
    assert parse_fields("16777216") == {"hosting"}
    assert {"proxy", "hosting", "mobile"} <= parse_fields("66846719")
    assert {"proxy", "hosting", "mobile"} <= parse_fields(DEFAULT_FIELDS)
    assert expected_answer("2d00::1")["proxy"] is False  # unallocated: ip-api knows nothing, flags false


def test_unallocated_global_ip_is_success_without_country() -> None:
    """A global IP with no registry country still succeeds, with countryCode "" (retrying cannot help)."""
    answer = expected_answer("2d00::1")
    assert answer["status"] == "success" and answer["countryCode"] == "" and answer["city"] == ""


# --- the aiohttp app, in-process ---------------------------------------------------------------------

Body = Callable[[IpApiServer, aiohttp.ClientSession], Awaitable[None]]


def serve(body: Body, config: ServerConfig | None = None, **kwargs: Any) -> IpApiServer:
    """Run `body` against a fresh server and client session; return the server for assertions."""

    async def main() -> IpApiServer:
        async with IpApiServer(config, **kwargs) as server, aiohttp.ClientSession() as session:
            await body(server, session)
        return server

    return asyncio.run(main())


async def post(session: aiohttp.ClientSession, url: str, payload: object) -> tuple[int, Any, Any]:
    async with session.post(url, data=json.dumps(payload)) as resp:
        text = await resp.text()
        return resp.status, resp.headers, json.loads(text) if resp.status == 200 else text


def test_batch_answers_public_ip() -> None:
    """A batch of public IPs, as strings or objects, is answered with one success item per IP."""

    async def body(server: IpApiServer, session: aiohttp.ClientSession) -> None:
        status, _, items = await post(session, server.url + "/batch", ["8.8.8.8", {"query": "1.1.1.1"}])
        assert status == 200
        assert items == [expected_answer("8.8.8.8"), expected_answer("1.1.1.1")]
        assert items[0]["countryCode"] == "US"

    server = serve(body)
    assert server.requests == 1 and server.ips_seen() == {"8.8.8.8": 1, "1.1.1.1": 1}
    assert server.log[0].items == 2 and server.log[0].status == 200 and server.log[0].path == "/batch"


def test_batch_fail_messages() -> None:
    """Private, reserved and non-IP items fail with ip-api's messages and echo the query."""

    async def body(server: IpApiServer, session: aiohttp.ClientSession) -> None:
        _, _, items = await post(session, server.url + "/batch", ["192.168.0.1", "100.64.1.1", "nope"])
        assert items == [
            {"status": "fail", "message": "private range", "query": "192.168.0.1"},
            {"status": "fail", "message": "reserved range", "query": "100.64.1.1"},
            {"status": "fail", "message": "invalid query", "query": "nope"},
        ]

    serve(body)


def test_fields_filter_answers() -> None:
    """fields in the query string trims every item; an item's own fields take precedence."""

    async def body(server: IpApiServer, session: aiohttp.ClientSession) -> None:
        url = server.url + "/batch?fields=status,message,query,countryCode&lang=de"
        _, _, items = await post(session, url, ["8.8.8.8", {"query": "10.0.0.1", "fields": "8192"}])
        assert items == [
            {"status": "success", "countryCode": "US", "query": "8.8.8.8"},
            {"query": "10.0.0.1"},
        ]

    serve(body)


def test_rate_headers_and_422_for_oversized_batch() -> None:
    """Every response carries X-Rl/X-Ttl; 101 items give 422, which still uses up a request."""

    async def body(server: IpApiServer, session: aiohttp.ClientSession) -> None:
        status, headers, _ = await post(session, server.url + "/batch", ["8.8.8.8"])
        assert (status, headers["X-Rl"], headers["X-Ttl"]) == (200, "14", "60")
        status, headers, _ = await post(session, server.url + "/batch", ["8.8.8.8"] * (MAX_ITEMS + 1))
        assert (status, headers["X-Rl"], headers["X-Ttl"]) == (422, "13", "60")
        async with session.post(server.url + "/batch", data=b"[not json") as resp:
            assert resp.status == 400 and resp.headers["X-Rl"] == "12"

    serve(body, clock=FakeClock())


def test_429_then_reset_with_fake_clock() -> None:
    """Past the limit the server answers 429 with X-Rl 0; after X-Ttl seconds a full window is back."""
    clock = FakeClock()

    async def body(server: IpApiServer, session: aiohttp.ClientSession) -> None:
        for left in ("1", "0"):
            assert (await post(session, server.url + "/batch", ["8.8.8.8"]))[1]["X-Rl"] == left
        clock.now += 2.5
        status, headers, _ = await post(session, server.url + "/batch", ["8.8.8.8"])
        assert (status, headers["X-Rl"], headers["X-Ttl"]) == (429, "0", "4")
        clock.now += 4
        status, headers, _ = await post(session, server.url + "/batch", ["8.8.8.8"])
        assert (status, headers["X-Rl"], headers["X-Ttl"]) == (200, "1", "6")

    server = serve(body, ServerConfig(window=6, batch_limit=2), clock=clock)
    assert (server.count_429, server.violations, server.banned) == (1, 1, False)
    assert server.max_in_window() == 3 and server.log[2].violation


def test_repeated_violations_ban_the_client() -> None:
    """After ban_after violations every request, /json included, is 403 and the server reports banned."""

    async def body(server: IpApiServer, session: aiohttp.ClientSession) -> None:
        statuses = [(await post(session, server.url + "/batch", []))[0] for _ in range(4)]
        assert statuses == [200, 429, 429, 403]
        async with session.get(server.url + "/json/8.8.8.8") as resp:
            assert resp.status == 403

    server = serve(body, ServerConfig(batch_limit=1, ban_after=2), clock=FakeClock())
    assert server.banned and server.violations == 2


def test_json_endpoint_has_its_own_limit() -> None:
    """GET /json/{ip} answers one object and counts against the /json limit, not the batch one."""

    async def body(server: IpApiServer, session: aiohttp.ClientSession) -> None:
        async with session.get(server.url + "/json/8.8.8.8") as resp:
            assert resp.status == 200 and resp.headers["X-Rl"] == "44"
            assert await resp.json() == expected_answer("8.8.8.8")
        assert (await post(session, server.url + "/batch", ["1.1.1.1"]))[1]["X-Rl"] == "14"

    serve(body, clock=FakeClock())


def test_error_fault_at_probability_one() -> None:
    """error_rate 1.0 turns every request into a 503 that still carries the rate headers."""

    async def body(server: IpApiServer, session: aiohttp.ClientSession) -> None:
        status, headers, _ = await post(session, server.url + "/batch", ["8.8.8.8"])
        assert status == 503 and headers["X-Rl"] == "14"
        server.faults.error_rate = 0.0
        assert (await post(session, server.url + "/batch", ["8.8.8.8"]))[0] == 200

    serve(body, faults=Faults(error_rate=1.0))


def test_partial_and_malformed_faults() -> None:
    """partial_rate drops items from the answer; malformed_rate sends a body that is not valid JSON."""

    async def body(server: IpApiServer, session: aiohttp.ClientSession) -> None:
        _, _, items = await post(session, server.url + "/batch", ["8.8.8.8", "1.1.1.1", "9.9.9.9", "1.0.0.1"])
        assert len(items) == 2
        server.faults.partial_rate, server.faults.malformed_rate = 0.0, 1.0
        async with session.post(server.url + "/batch", json=["8.8.8.8"]) as resp:
            assert resp.status == 200
            with pytest.raises(ValueError):
                json.loads(await resp.text())

    serve(body, faults=Faults(partial_rate=1.0))


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
def test_each_hostile_kind_gets_the_outcome_it_promises(kind: Hostile) -> None:
    """A spoiled answer fails its IP transiently exactly for `rejected` kinds, and else resolves cleaned."""
    item = kind.spoil(expected_answer("8.8.8.8"))
    result = parse_batch(["8.8.8.8"], json.dumps([item]).encode())["8.8.8.8"]
    if kind.rejected:
        assert isinstance(result, TransientFailure) and result.reason.startswith("ip-api: ")
    else:
        assert isinstance(result, Resolved) and result.geo.country_code == "US"
        assert all(len(v) <= MAX_TEXT for v in result.geo.to_dict().values() if isinstance(v, str))


def test_hostile_rate_spoils_success_items_and_replays_by_seed() -> None:
    """hostile_rate spoils success items only, records (query, kind) for each, and a seed replays the same."""
    public = [f"8.8.{i}.8" for i in range(1, 31)]
    outcomes: list[dict[str, object]] = []

    async def body(server: IpApiServer, session: aiohttp.ClientSession) -> None:
        _, _, items = await post(session, server.url + "/batch", [*public, "10.0.0.1"])
        assert items[-1] == expected_answer("10.0.0.1")  # a fail item is never spoiled
        outcomes.append(parse_batch([*public, "10.0.0.1"], json.dumps(items).encode()))

    runs = [serve(body, ServerConfig(seed=seed), faults=Faults(hostile_rate=1.0)) for seed in (7, 7, 8)]
    assert [query for query, _ in runs[0].hostile] == public
    assert runs[0].hostile == runs[1].hostile != runs[2].hostile
    rejected = {kind.name for kind in KINDS if kind.rejected}
    for query, kind in runs[0].hostile:
        assert isinstance(outcomes[0][query], TransientFailure) == (kind in rejected), (query, kind)
    some = serve(body, ServerConfig(seed=7), faults=Faults(hostile_rate=0.3))
    assert 0 < len(some.hostile) < len(public)


def test_forced_429_is_an_outage_not_a_violation() -> None:
    """force_429 answers 429 to everything without violations or a ban, and recovery is immediate."""

    async def body(server: IpApiServer, session: aiohttp.ClientSession) -> None:
        server.faults.force_429 = True
        for _ in range(10):
            status, headers, _ = await post(session, server.url + "/batch", ["8.8.8.8"])
            assert (status, headers["X-Rl"]) == (429, "0")
        server.faults.force_429 = False
        assert (await post(session, server.url + "/batch", ["8.8.8.8"]))[0] == 200

    server = serve(body, ServerConfig(ban_after=1))
    assert (server.count_429, server.violations, server.banned) == (10, 0, False)


def test_rejected_asks_are_logged_apart() -> None:
    """IPs in 429'd batches are counted only when asked for, so duplicate checks can span an outage."""

    async def body(server: IpApiServer, session: aiohttp.ClientSession) -> None:
        server.faults.force_429 = True
        assert (await post(session, server.url + "/batch", ["8.8.8.8", "1.1.1.1"]))[0] == 429
        server.faults.force_429 = False
        assert (await post(session, server.url + "/batch", ["8.8.8.8"]))[0] == 200

    server = serve(body)
    assert server.ips_seen() == {"8.8.8.8": 1}
    assert server.ips_seen(rejected=True) == {"8.8.8.8": 2, "1.1.1.1": 1}


def test_timeout_fault_hangs_past_client_timeout_and_shutdown_is_prompt() -> None:
    """timeout_rate 1.0 makes the client time out; leaving the server wakes the hung handler."""

    async def body(server: IpApiServer, session: aiohttp.ClientSession) -> None:
        with pytest.raises(TimeoutError):
            await session.post(
                server.url + "/batch", json=["8.8.8.8"], timeout=aiohttp.ClientTimeout(total=0.2)
            )

    serve(body, faults=Faults(timeout_rate=1.0, timeout_seconds=600))


def test_api_key_required_and_unlimited() -> None:
    """With an api_key, unkeyed requests get 403 and keyed ones are never rate limited."""

    async def body(server: IpApiServer, session: aiohttp.ClientSession) -> None:
        assert (await post(session, server.url + "/batch", ["8.8.8.8"]))[0] == 403
        assert (await post(session, server.url + "/batch?key=wrong", ["8.8.8.8"]))[0] == 403
        for _ in range(5):
            status, headers, _ = await post(session, server.url + "/batch?key=s3cret", ["8.8.8.8"])
            assert status == 200 and "X-Rl" not in headers

    server = serve(body, ServerConfig(batch_limit=1, ban_after=1, api_key="s3cret"))
    assert server.violations == 0 and not server.banned
    assert all("s3cret" not in entry.path for entry in server.log)


def test_cli_prints_url_and_summary() -> None:
    """The CLI prints its URL once ready and a one-line summary after SIGINT."""
    cmd = [
        sys.executable,
        "-m",
        "pipeline.devtools.fake_ipapi",
        "--port",
        "0",
        "--window",
        "6",
        "--limit",
        "15",
    ]
    with subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("listening on http://127.0.0.1:")
        request = urllib.request.Request(first.split()[-1] + "/batch", data=b'["8.8.8.8"]', method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200 and resp.headers["X-Rl"] == "14"
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "requests=1 429s=0 violations=0 banned=False" in rest
