"""What the CLI prints for people: one readable line per record or answer, and the workers' stats table.

Pure: records and metric samples in, text out, so every format is unit-tested. `--json` output bypasses
this module (the raw record or answer, one per line).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.models import FLAG_FIELDS

Samples = Mapping[str, Sequence[tuple[Mapping[str, str], float]]]  # sample name -> [(labels, value)]
PREVIEW = 120  # characters of an event or an original shown on one line


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def place(geo: Mapping[str, Any] | None) -> str:
    """`US Ashburn, Virginia AS15169 GOOGLE [hosting]`: what is known, in that order, nothing for unknown
    parts; the flags that are true in brackets (false and unknown ones are not shown)."""
    if not geo or not any(v is not None for v in geo.values()):
        return "-"
    parts = [_text(geo.get("country_code")) or "??"]
    where = ", ".join(_text(geo.get(k)) for k in ("city", "region") if geo.get(k))
    if where:
        parts.append(where)
    if geo.get("asn") is not None:
        parts.append(f"AS{geo['asn']}" + (f" {geo['as_name']}" if geo.get("as_name") else ""))
    flags = [flag for flag in FLAG_FIELDS if geo.get(flag) is True]
    if flags:
        parts.append(f"[{','.join(flags)}]")
    return " ".join(parts)


def entry_line(entry: Mapping[str, Any]) -> str:
    """One entry: ip, status, place, provider, attempts, the failed asks in a row when there are any (what
    the back-off and the slow lane count), and the last error when there is one."""
    line = (
        f"{_text(entry.get('ip')):<39} {_text(entry.get('status')):<10} {place(entry.get('geo'))}"
        f"  provider={entry.get('provider') or '-'} attempts={entry.get('attempts', 0)}"
    )
    if entry.get("failures"):
        line += f" failures={entry['failures']}"
    if entry.get("last_error"):
        line += f"  error={entry['last_error']}"
    return line


_NOT_PLACE = ("status", "source", "data_version", "updated_at")  # the public view's keys beside the place


def enriched_line(record: Mapping[str, Any]) -> str:
    """One enriched event: its (first) IP, status and place, and the start of the event itself. Reads
    envelope/2 (`geo` flat), envelope/1 (`geo` the whole entry) and ecs/1 (status in `geo_pipeline`)."""
    geo: Mapping[str, Any] | None = None
    body: Any
    if "event" not in record and isinstance(record.get("geo_pipeline"), dict):
        fields = record["geo_pipeline"].get("fields") or {}
        first: Any = next(iter(fields.values()), {}) if isinstance(fields, dict) else {}
        first = (first[0] if first else {}) if isinstance(first, list) else first
        first = first if isinstance(first, dict) else {}
        ip, status, body = first.get("ip"), first.get("status"), dict(record)
    else:
        view = record.get("geo") or {}
        nested = view.get("geo")
        ip, status, body = record.get("ip"), view.get("status"), record.get("event")
        geo = nested if isinstance(nested, dict) else {k: v for k, v in view.items() if k not in _NOT_PLACE}
    event = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return f"{_text(ip):<39} {_text(status):<10} {place(geo)}  event={_cut(event)}"


def dead_letter_line(letter: Mapping[str, Any]) -> str:
    """One dead letter: where it came from, why, and the start of the original."""
    where = f"{letter.get('topic')}[{letter.get('partition')}]@{letter.get('offset')}"
    preview = letter.get("original_preview")
    return f"{where}  {letter.get('reason')}  {_cut(repr(preview)) if preview is not None else '(null)'}"


def lookup_line(query: str, status: int, body: Mapping[str, Any]) -> str:
    """One `geo-pipeline lookup` answer: the entry and who answered, or why there is none."""
    if status == 200 and isinstance(body.get("entry"), Mapping):
        return f"{entry_line(body['entry'])}  ({answered_by(body)})"
    reason = body.get("error") or f"HTTP {status}"
    return f"{query:<39} {reason}  ({answered_by(body)})"


def answered_by(body: Mapping[str, Any]) -> str:
    """`worker w1 at http://...`, `via http://...` when forwarded, or what else answered."""
    worker = body.get("worker")
    if not isinstance(worker, Mapping):
        return str(body.get("source") or "unknown source")
    text = f"worker {worker.get('name')} at {worker.get('url')}"
    forwarded = body.get("forwarded_by")
    if isinstance(forwarded, Mapping):
        text += f", asked via {forwarded.get('url')}"
    return text


def _cut(text: str) -> str:
    return text if len(text) <= PREVIEW else text[: PREVIEW - 1] + "…"


# -- geo-pipeline stats --------------------------------------------------------------------------------------

COLUMNS = (
    "worker", "ready", "in", "enriched", "dlq", "hits", "first", "lag", "entries", "breaker", "budget",
    "data",
)  # fmt: skip


def total(samples: Samples, name: str) -> float:
    """The sum of every sample called `name` (all label values)."""
    return sum(value for _, value in samples.get(name, ()))


def current_state(samples: Samples, name: str) -> str:
    """The label `state` of the sample set to 1 (the breaker's), or "-"."""
    return next((labels.get("state", "-") for labels, value in samples.get(name, ()) if value == 1), "-")


def stats_row(url: str, samples: Samples | None) -> list[str]:
    """One worker's row of the stats table; a worker whose metrics could not be read shows why."""
    if samples is None:
        return [url, "down", *["-"] * (len(COLUMNS) - 2)]
    ready = {1.0: "yes", 0.0: "no"}.get(total(samples, "geo_worker_ready"), "?")
    budget = samples.get("geo_ipapi_budget_left")
    return [
        url,
        ready,
        *(
            f"{total(samples, name):,.0f}"
            for name in (
                "geo_events_in_total",
                "geo_events_enriched_total",
                "geo_events_dead_lettered_total",
                "geo_near_cache_hits_total",
                "geo_near_cache_misses_total",
                "geo_consumer_lag",
                "geo_table_entries",
            )
        ),
        current_state(samples, "geo_ipapi_breaker_state"),
        f"{total(samples, 'geo_ipapi_budget_left'):,.0f}" if budget else "-",
        data_age(samples),
    ]


def data_age(samples: Samples) -> str:
    """The oldest downloaded source's age in days (`31d!` once expired), or "-" without GEO_DATA_SOURCES."""
    ages = [value for _, value in samples.get("geo_data_age_seconds", ())]
    if not ages:
        return "-"
    expired = any(value == 1 for _, value in samples.get("geo_data_expired", ()))
    return f"{max(ages) / 86400:.0f}d" + ("!" if expired else "")


def stats_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows under COLUMNS, aligned, with a total row for the counters when there are several workers."""
    table = [list(COLUMNS), *[list(r) for r in rows]]
    if len(rows) > 1:
        sums = ["total", ""]
        for i in range(2, 9):
            numbers = [r[i].replace(",", "") for r in rows if r[i] not in ("-", "")]
            sums.append(f"{sum(float(n) for n in numbers):,.0f}" if numbers else "-")
        table.append([*sums, "", "", ""])
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in table
    )
