"""Timer benchmark: one retry tick over a large cache, beside a full scan of that cache, in the same run.

A worker (offline provider) starts on a broker; its RocksDB partition stores are then filled directly
through the geo table's store (`IndexedStore.load_local`: entries and index keys, no changelog):
fine for a read benchmark, and the only way to load 200,000 entries in seconds (table writes outside an
agent raise). Keys are spread round-robin over the active partitions, not by the Kafka partitioner, so
the cache agent finds no entry for the tick's retry requests and leaves the index alone: every timed
tick sees the same due entries. The tick is `RetryTimer.run_tick` as the timer calls it (index read plus
re-emission up to capacity); the full scan is the seed system's approach, every table value parsed to find
NULL countries.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Mapping

from pipeline.app import GeoApp, build, running
from pipeline.config.settings import Settings
from pipeline.devtools.scratch import scratch
from pipeline.models import EntryStatus, GeoData, GeoEntry

TICK_RUNS = 5
SCAN_RUNS = 3
PROGRESS_EVERY = 50_000
YIELD_EVERY = 5_000  # puts between yields, so the worker's heartbeats and agents keep running


def bench_entry(i: int, now: float, kind: str) -> GeoEntry:
    """Entry number `i`: a distinct public-looking IPv4; `kind` "due" (unresolved, due now), "later"
    (unresolved, retried within hours: the retry lane's long tail) or "resolved" (refresh in ~30 days)."""
    n = 0x0B000000 + i * 7  # from 11.0.0.0 upward, distinct per i
    ip = f"{n >> 24 & 255}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
    if kind in ("due", "later"):
        return GeoEntry(
            ip,
            EntryStatus.UNRESOLVED,
            attempts=3,
            first_seen=now - 7200,
            updated_at=now - 600,
            # due now at different times, or later within 4 hours
            next_retry_at=now - 1 - (i % 600) if kind == "due" else now + 60 + (i % 14_400),
            last_error="http 429",
        )
    geo = GeoData("US", "United States", "Region 1", f"City {i % 997}", 40.0, -74.0, 15169, "GOOGLE")
    return GeoEntry(
        ip,
        EntryStatus.RESOLVED,
        geo=geo,
        provider="ipapi",
        attempts=1,
        first_seen=now - 86400,
        updated_at=now - 86400,
        next_retry_at=now + 30 * 86400 - (i % 86400),
    )


async def run_tick_bench(
    base: Settings,
    environ: Mapping[str, str],
    *,
    entries: int = 200_000,
    unresolved: int = 1_000,
    not_due: int = 100_000,
) -> int:
    """Fill the cache with `entries`: `unresolved` of them due now, `not_due` unresolved but due later (a
    long retry lane a tick must not walk), the rest resolved; time a tick and a full scan."""
    with scratch(
        "bench-timer",
        base,
        environ,
        providers=("offline",),
        retry_interval=3600.0,  # the registered timer must not run a tick of its own during the timing
    ) as run:
        settings = run.settings
        print(
            f"bench-timer: broker {settings.kafka_bootstrap}, app {settings.app_id}, "
            f"{settings.partitions} partitions, {entries:,} entries: {unresolved:,} due now, "
            f"{not_due:,} unresolved but due later, the rest resolved"
        )
        geo = build(settings)
        async with running(geo):
            now = time.time()
            await _fill(geo, entries, unresolved, not_due, now)
            ticks: list[dict[str, float]] = []
            for _ in range(TICK_RUNS):
                geo.timer.recently.clear()  # every timed tick does the same work
                ticks.append(await geo.timer.run_tick(now))
            scans: list[tuple[float, int, int]] = []
            for _ in range(SCAN_RUNS):
                scans.append(_full_scan(geo))
                await asyncio.sleep(0)
            raw = _raw_scan(geo)
        tick_s = statistics.median(t["seconds"] for t in ticks)
        scan_s = statistics.median(s[0] for s in scans)
        last = ticks[-1]
        tick_runs = " ".join(f"{t['seconds'] * 1000:.1f}" for t in ticks)
        _, scanned_full, null_full = scans[-1]
        print(
            f"  tick runs (ms): {tick_runs}; "
            f"due={last['due']:g} emitted={last['emitted']:g} skipped_budget={last['skipped_budget']:g} "
            f"unresolved={last['unresolved']:g} partitions={last['partitions']:g}"
        )
        print(
            f"  full scan runs (ms): {' '.join(f'{s[0] * 1000:.0f}' for s in scans)}; "
            f"values parsed={scanned_full:,} NULL country={null_full:,}; "
            f"raw iteration without parsing: {raw * 1000:.0f} ms"
        )
        print(
            "  note: entries were written straight into the RocksDB partition stores (no changelog), "
            "spread round-robin over the active partitions"
        )
        print(
            f"summary: tick {tick_s * 1000:.1f} ms (median of {TICK_RUNS}, scanned {last['scanned']:,.0f} "
            f"index keys of {entries:,} entries) | full scan {scan_s * 1000:.0f} ms (median of {SCAN_RUNS}) "
            f"| ratio full scan / tick = {scan_s / tick_s:,.1f}x"
        )
        return 0


def _active_partitions(geo: GeoApp) -> list[int]:
    return [partition for partition, _ in geo.store.active_partitions()]


async def _fill(geo: GeoApp, entries: int, unresolved: int, not_due: int, now: float) -> None:
    parts = _active_partitions(geo)
    if not parts:
        raise RuntimeError("the worker has no active partition of the geo table")
    started = time.perf_counter()
    step = max(1, entries // unresolved) if unresolved else 0  # due ones spread through the range
    made_due = made_not_due = 0
    chunk: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in parts}
    for i in range(entries):
        is_due = bool(step) and i % step == 0 and made_due < unresolved
        is_not_due = not is_due and made_not_due < not_due
        made_due += is_due
        made_not_due += is_not_due
        entry = bench_entry(i, now, "due" if is_due else "later" if is_not_due else "resolved")
        chunk[parts[i % len(parts)]].append((entry.ip.encode(), entry.to_json()))
        done = i + 1
        if done % YIELD_EVERY == 0 or done == entries:
            for partition, items in chunk.items():
                geo.store.load_local(partition, items)
                items.clear()
            await asyncio.sleep(0)
        if done % PROGRESS_EVERY == 0 or done == entries:
            print(
                f"  filled {done:,}/{entries:,} ({made_due:,} due, {made_not_due:,} retrying later) "
                f"in {time.perf_counter() - started:.1f}s",
                flush=True,
            )


def _full_scan(geo: GeoApp) -> tuple[float, int, int]:
    """The seed system's way to find work: parse every cached value, keep those with a NULL country."""
    started = time.perf_counter()
    scanned = null = 0
    for _key, value in geo.table.items():
        scanned += 1
        if GeoEntry.from_json(value).country_code is None:
            null += 1
    return time.perf_counter() - started, scanned, null


def _raw_scan(geo: GeoApp) -> float:
    started = time.perf_counter()
    for _ in geo.table.items():
        pass
    return time.perf_counter() - started
