"""Prometheus metrics of one worker, read at scrape time from what the worker already keeps.

Why at scrape time: the hot path must not get slower. Its loop already adds to plain integer fields of
`Stats` once per batch; a Prometheus counter incremented per event would cost a lock and a method call per
event. So nothing here runs per event: `GeoCollector.collect` turns `Stats`, the API budget's snapshot
(`ResolveBudget.snapshot`), the table's per-status counts (`IndexedStore.entries_by_status`), the near cache's
size, the stall watch and the consumer lag into metric families when Prometheus asks. Each worker has its
own `CollectorRegistry` (two workers in one test process must not share counters); only the HTTP API's own
request counter is instrumented directly, per request.

Names are listed in the README (Metrics). Counters restart at zero with the worker, as Prometheus expects.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from pipeline.providers.throttle import Breaker

if TYPE_CHECKING:
    from pipeline.app import GeoApp

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus text exposition format
IPAPI_STATUSES = ("2xx", "429", "5xx", "other_4xx", "transport_error")


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _by_label(name: str, doc: str, label: str, counts: Mapping[str, int]) -> CounterMetricFamily:
    """A counter with one label, a sample per value seen (label values sorted: a stable exposition)."""
    family = CounterMetricFamily(name, doc, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


class GeoCollector(Collector):
    """Builds every pipeline metric from one worker's state; `lag` and `ready` are refreshed (async) by
    `Metrics.render` just before a scrape, everything else is read synchronously."""

    def __init__(self, geo: GeoApp) -> None:
        self.geo = geo
        self.lag: dict[tuple[str, int], int] = {}
        self.ready: bool | None = None

    def collect(self) -> Iterator[Metric]:
        yield from self._events()
        yield from self._resolving()
        yield from self._budget()
        yield from self._state()
        yield from self._data()

    def _events(self) -> Iterator[Metric]:
        s = self.geo.stats
        yield _counter("geo_events_in", "Input records read by the hot path", s.consumed)
        yield _counter("geo_events_enriched", "Enriched events written", s.enriched)
        yield _by_label(
            "geo_events_dead_lettered",
            "Records sent to the dead-letter topic, by reason",
            "reason",
            s.dead_by_reason,
        )
        yield _counter(
            "geo_near_cache_hits",
            "IPs enriched with the table's entry (from the near cache, or the replica when it missed)",
            s.hits,
        )
        yield _counter(
            "geo_replica_hits",
            "Of those, IPs the near cache missed and the worker's replica of the resolved topic served",
            s.recalled,
        )
        yield _counter(
            "geo_near_cache_misses",
            "First sights: IPs enriched with a provisional entry and sent to the table's owner",
            s.new,
        )
        yield _counter("geo_ingest_replays", "Input batches replayed after a failed delivery", s.replays)
        yield _by_label(
            "geo_ip_fields_failed",
            "IP fields of enriched events that held no valid IP (the event went on with its other IPs)",
            "reason",
            s.fields_failed,
        )
        yield _counter(
            "geo_ips_skipped",
            "IPs of events past the per-event cap (32), not enriched (the event went on with the first 32)",
            s.ips_skipped,
        )
        yield _by_label(
            "geo_events_by_country",
            "Enriched IPs by the country of the entry they carried (ISO code, private, unknown)",
            "country",
            s.countries,
        )

    def _resolving(self) -> Iterator[Metric]:
        s = self.geo.stats
        yield _counter("geo_seen_applied", "Seen records the cache agent applied", s.seen_applied)
        yield _counter(
            "geo_entries_created", "Table entries created (first sights at the owner)", s.entries_created
        )
        yield _counter(
            "geo_resolved_published", "Entries published to the resolved topic", s.resolved_published
        )
        yield _counter(
            "geo_entries_echoed",
            "Entries published again for a worker that saw a known IP as new (its replica lagged)",
            s.echoed,
        )
        requests = CounterMetricFamily(
            "geo_resolve_requests",
            "Resolve requests: emitted by the cache agent, dropped by the resolver as asked already",
            labels=["outcome"],
        )
        requests.add_metric(["emitted"], s.resolve_sent)
        requests.add_metric(["deduped"], s.resolve_deduped)
        yield requests
        yield _counter("geo_resolve_lookups", "IPs sent to the provider chain", s.lookups)
        yield _counter("geo_resolve_batches", "Provider chain calls", s.batches)
        yield _counter(
            "geo_resolve_fallback",
            "IPs answered from the offline data, the remote unavailable",
            s.fallback_answers,
        )
        answers = CounterMetricFamily(
            "geo_resolve_answers",
            "Answers published, by provider and outcome",
            labels=["provider", "outcome"],
        )
        for (provider, outcome), count in sorted(s.answers.items()):
            answers.add_metric([provider, outcome], count)
        yield answers
        yield _counter("geo_malformed_records", "Internal records skipped as malformed", s.malformed)
        yield _counter("geo_errors", "Errors caught and survived (logged)", s.errors)
        ticks = SummaryMetricFamily("geo_retry_tick_seconds", "Retry timer ticks and their duration")
        ticks.add_metric([], count_value=s.ticks_run, sum_value=s.tick_seconds)
        yield ticks

    def _budget(self) -> Iterator[Metric]:
        budget = self.geo.resolver.budget
        if budget is None:  # no remote provider configured
            return
        b = budget.snapshot()
        failures = (b.rate_limited, b.server_errors, b.other_errors, b.transport_failures)
        yield _counter("geo_ipapi_requests_sent", "Requests sent to ip-api", b.sent)
        by_status = CounterMetricFamily(
            "geo_ipapi_requests", "ip-api requests by outcome (status class)", labels=["status"]
        )
        for status, count in zip(IPAPI_STATUSES, (b.succeeded, *failures), strict=True):
            by_status.add_metric([status], count)
        yield by_status
        state = GaugeMetricFamily(
            "geo_ipapi_breaker_state", "Circuit breaker state (1 for the current one)", labels=["state"]
        )
        for breaker in Breaker:
            state.add_metric([breaker.value], 1.0 if b.breaker is breaker else 0.0)
        yield state
        yield _gauge(
            "geo_ipapi_budget_limit", "Requests allowed per window now (after 429 cuts)", b.effective_limit
        )
        yield _gauge(
            "geo_ipapi_budget_left",
            "Requests left in the current sliding window",
            max(0, b.effective_limit - b.sent_in_window),
        )
        if b.server_remaining is not None:
            yield _gauge("geo_ipapi_server_remaining", "ip-api's own X-Rl: requests left", b.server_remaining)

    def _state(self) -> Iterator[Metric]:
        geo = self.geo
        entries = GaugeMetricFamily(
            "geo_table_entries",
            "Table entries on this worker's active partitions, by status",
            labels=["status"],
        )
        for status, count in sorted(geo.store.entries_by_status().items()):
            entries.add_metric([status], count)
        yield entries
        yield _gauge("geo_near_cache_entries", "Entries in the near cache", len(geo.near))
        yield _gauge(
            "geo_replica_disk_bytes",
            "Bytes on disk of this worker's replica of the resolved topic",
            geo.hotpath.replica.disk_bytes(),
        )
        lag = GaugeMetricFamily(
            "geo_consumer_lag",
            "Input records not yet consumed, per assigned partition",
            labels=["topic", "partition"],
        )
        for (topic, partition), behind in sorted(self.lag.items()):
            lag.add_metric([topic, str(partition)], behind)
        yield lag
        yield _gauge(
            "geo_stalled_partitions", "Stalled stream partitions (faustx.StallWatch)", len(geo.watch.stalled)
        )
        built = GaugeMetricFamily(
            "geo_offline_data_build_timestamp_seconds",
            "Build time (Unix seconds) of each MaxMind-format file in use (iptocc's data carries none)",
            labels=["database", "path"],
        )
        for provider in geo.resolver.offline.values():
            for file in getattr(provider, "files", ()):  # MmdbSource's open files
                built.add_metric([file.database_type, file.path], file.build_epoch)
        yield built
        if self.ready is not None:
            yield _gauge("geo_worker_ready", "1 when /ready answers 200", 1.0 if self.ready else 0.0)


    def _data(self) -> Iterator[Metric]:
        """The downloaded offline data (GEO_DATA_SOURCES): age, expiry, today's downloads, last outcome."""
        updater = getattr(self.geo, "updater", None)  # None: no GEO_DATA_SOURCES (or a test double)
        if updater is None:
            return
        age = GaugeMetricFamily(
            "geo_data_age_seconds", "Age of each source's build in use (now - build epoch)", labels=["source"]
        )
        expired = GaugeMetricFamily(
            "geo_data_expired", "1 when a source's build is 30 days old or more", labels=["source"]
        )
        today = GaugeMetricFamily(
            "geo_data_downloads_today", "Cluster downloads of each source this UTC day", labels=["source"]
        )
        outcome = GaugeMetricFamily(
            "geo_data_last_outcome", "The last update attempt's outcome (1)", labels=["source", "outcome"]
        )
        for row in updater.report():
            if row["age"] is not None:
                age.add_metric([row["source"]], row["age"])
                expired.add_metric([row["source"]], 1.0 if row["freshness"] == "expired" else 0.0)
            today.add_metric([row["source"]], row["downloads_today"])
            outcome.add_metric([row["source"], str(row["outcome"])], 1.0)
        yield from (age, expired, today, outcome)
        yield _gauge("geo_data_lease_held", "1 on the worker that downloads for the cluster", updater.leader)


class Metrics:
    """One worker's registry: the pipeline's collector, the process's own metrics, the API's requests."""

    def __init__(self, geo: GeoApp) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series (process-wide)
        self.registry = CollectorRegistry()
        self.collector = GeoCollector(geo)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)  # RSS, CPU seconds, open files of this process
        self.http_requests = Counter(
            "geo_http_requests",
            "Requests to this worker's HTTP API, by route and status",
            ["route", "status"],
            registry=self.registry,
        )

    async def render(self, ready: bool | None) -> bytes:
        """The text exposition, with the consumer lag read just now."""
        self.collector.lag = await self.collector.geo.hotpath.lag()
        self.collector.ready = ready
        return generate_latest(self.registry)
