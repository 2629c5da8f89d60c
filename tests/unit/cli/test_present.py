"""What the CLI prints for people: one line per record or answer, and the stats table."""

from __future__ import annotations

from typing import Any

from pipeline.cli.present import (
    COLUMNS,
    dead_letter_line,
    enriched_line,
    entry_line,
    lookup_line,
    place,
    stats_row,
    stats_table,
)

GEO = {"country_code": "US", "region": "Virginia", "city": "Ashburn", "asn": 15169, "as_name": "GOOGLE"}
ENTRY: dict[str, Any] = {
    "ip": "8.8.8.8",
    "status": "resolved",
    "geo": GEO,
    "provider": "ipapi",
    "attempts": 1,
}
WORKER = {"name": "w1", "url": "http://a:6066"}


def test_place_shows_what_is_known_in_a_fixed_order() -> None:
    """Country, city and region, AS number and name; a dash when nothing is known."""
    assert place(GEO) == "US Ashburn, Virginia AS15169 GOOGLE"
    assert place({"country_code": "AU"}) == "AU"
    assert place({"country_code": None, "city": None}) == "-"
    assert place(None) == "-"


def test_place_shows_the_flags_that_are_true() -> None:
    """True flags follow the place in brackets; false and unknown (null) ones are left out."""
    assert place({**GEO, "proxy": True, "hosting": True, "mobile": False}) == (
        "US Ashburn, Virginia AS15169 GOOGLE [proxy,hosting]"
    )
    assert place({**GEO, "proxy": None, "hosting": False, "mobile": None}) == place(GEO)


def test_entry_line_has_ip_status_place_provider_and_error() -> None:
    """The last error is shown only when there is one."""
    line = entry_line(ENTRY)
    assert line.split()[:3] == ["8.8.8.8", "resolved", "US"]
    assert "provider=ipapi attempts=1" in line and "error=" not in line
    assert "error=timeout" in entry_line({**ENTRY, "status": "partial", "last_error": "timeout"})


def test_entry_line_shows_the_failed_asks_in_a_row_only_when_there_are_some() -> None:
    """An entry failing its asks says how many in a row (the slow lane's count) beside its attempts."""
    assert "failures" not in entry_line({**ENTRY, "failures": 0})
    failing = {**ENTRY, "status": "unresolved", "attempts": 9, "failures": 4, "last_error": "ipapi: HTTP 503"}
    assert "attempts=9 failures=4  error=ipapi: HTTP 503" in entry_line(failing)


def test_enriched_line_shows_the_entry_and_the_start_of_the_event() -> None:
    """Long events are cut with an ellipsis so one record stays one line."""
    record = {"ip": "8.8.8.8", "geo": ENTRY, "event": {"ip": "8.8.8.8", "jail": "sshd", "pad": "x" * 500}}
    line = enriched_line(record)
    assert line.startswith("8.8.8.8") and "resolved" in line and 'event={"ip":"8.8.8.8","jail":"sshd"' in line
    assert line.endswith("…") and "\n" not in line


def test_enriched_line_reads_the_flat_envelope_and_the_ecs_shape() -> None:
    """envelope/2's flat view and ecs/1's geo_pipeline status give the same IP, status and country."""
    view = {"status": "resolved", **ENTRY["geo"], "source": "ipapi", "data_version": None, "updated_at": 1.0}
    flat = enriched_line({"ip": "8.8.8.8", "geo": view, "event": {"ip": "8.8.8.8"}})
    assert flat.split()[:3] == ["8.8.8.8", "resolved", "US"]
    status = {"source.ip": {"ip": "8.8.8.8", "status": "private"}}
    ecs = {"source": {"ip": "8.8.8.8"}, "geo_pipeline": {"format": "ecs/1", "fields": status}}
    assert enriched_line(ecs).split()[:3] == ["8.8.8.8", "private", "-"]


def test_dead_letter_line_says_where_why_and_what() -> None:
    """Topic[partition]@offset, the reason and the original's preview (null originals say so)."""
    letter = {
        "topic": "ip-events",
        "partition": 3,
        "offset": 7,
        "reason": "invalid ip: x",
        "original_preview": "x",
    }
    assert dead_letter_line(letter) == "ip-events[3]@7  invalid ip: x  'x'"
    assert dead_letter_line({**letter, "original_preview": None}).endswith("(null)")


def test_lookup_line_names_the_worker_that_answered_and_the_one_asked() -> None:
    """A forwarded answer names both workers; a miss shows the reason; a topic read shows its source."""
    body = {"entry": ENTRY, "worker": WORKER, "forwarded_by": {"name": "w2", "url": "http://b:6066"}}
    line = lookup_line("8.8.8.8", 200, body)
    assert "worker w1 at http://a:6066, asked via http://b:6066" in line
    assert "never seen" in lookup_line("9.9.9.9", 404, {"error": "never seen", "worker": WORKER})
    assert lookup_line("9.9.9.9", 404, {"error": "never seen", "source": "topic geo-resolved"}).endswith(
        "(topic geo-resolved)"
    )


def samples(**values: float) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {name: [({}, value)] for name, value in values.items()}


def test_stats_rows_sum_labelled_samples_and_show_the_breaker_state() -> None:
    """Dead letters of every reason add up; lag sums partitions; the breaker shows its current state."""
    scraped = samples(
        geo_worker_ready=1, geo_events_in_total=10, geo_events_enriched_total=8, geo_near_cache_hits_total=5,
        geo_near_cache_misses_total=3, geo_table_entries=4, geo_ipapi_budget_left=12,
    )  # fmt: skip
    scraped["geo_events_dead_lettered_total"] = [({"reason": "invalid_ip"}, 1), ({"reason": "empty"}, 1)]
    scraped["geo_consumer_lag"] = [({"partition": "0"}, 3), ({"partition": "1"}, 4)]
    scraped["geo_ipapi_breaker_state"] = [({"state": "closed"}, 0), ({"state": "open"}, 1)]
    row = stats_row("http://a:6066", scraped)
    assert dict(zip(COLUMNS, row, strict=True)) == {
        "worker": "http://a:6066", "ready": "yes", "in": "10", "enriched": "8", "dlq": "2", "hits": "5",
        "first": "3", "lag": "7", "entries": "4", "breaker": "open", "budget": "12", "data": "-",
    }  # fmt: skip


def test_the_data_column_shows_the_oldest_source_in_days_and_flags_expiry() -> None:
    """geo_data_age_seconds: the oldest source in whole days; `!` once any source is expired."""
    scraped = samples(geo_worker_ready=1)
    scraped["geo_data_age_seconds"] = [({"source": "a"}, 2 * 86400), ({"source": "b"}, 31 * 86400)]
    scraped["geo_data_expired"] = [({"source": "a"}, 0), ({"source": "b"}, 1)]
    assert stats_row("http://a:6066", scraped)[-1] == "31d!"


def test_stats_table_aligns_rows_and_totals_several_workers() -> None:
    """A worker that did not answer is `down`; the total row adds the counters of those that did."""
    up = stats_row("http://a:6066", samples(geo_worker_ready=1, geo_events_in_total=1500))
    down = stats_row("http://b:6066", None)
    lines = stats_table([up, down]).splitlines()
    assert lines[0].split() == list(COLUMNS)
    assert lines[2].split()[:2] == ["http://b:6066", "down"]
    assert lines[3].split()[:2] == ["total", "1,500"]
    assert len({len(line) for line in lines[:3]}) == 1  # aligned columns
