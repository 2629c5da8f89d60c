"""Per-worker counters behind the progress line and the summary (in memory, reset at start)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Stats:
    """What one worker did since it started; every part of the worker adds to its own fields."""

    consumed: int = 0  # input records read by the hot path
    enriched: int = 0  # enriched events written (hits + new)
    # hits and new count IPs (an event with several IP fields counts each distinct IP once)
    hits: int = 0  # IPs enriched with the table's entry (near cache, or replica when the near cache missed)
    recalled: int = 0  # hits the near cache missed and the replica of the resolved topic served
    new: int = 0  # IPs enriched with a provisional entry; the IP went to the table's owner
    ips_skipped: int = 0  # IPs of events past the per-event cap (extract.MAX_IPS_PER_EVENT): not enriched
    dead_lettered: int = 0
    replays: int = 0  # input batches rewound and replayed after a failed delivery or commit
    seen_applied: int = 0  # seen records the cache agent handled
    entries_created: int = 0
    resolve_sent: int = 0  # resolve requests the cache agent emitted
    results_applied: int = 0  # results that changed an entry
    resolved_published: int = 0
    echoed: int = 0  # entries published again for a worker that saw a known IP as new (its replica lagged)
    malformed: int = 0  # internal records skipped because they do not parse
    reanswered: int = 0  # entries answered again by newer offline data
    forgotten: int = 0  # entries deleted: their IP was not seen for GEO_FORGET_AFTER
    lookups: int = 0  # IPs sent to a provider by this worker's resolver
    batches: int = 0  # provider calls
    fallback_answers: int = 0  # IPs answered from the offline data because the remote could not be asked
    resolve_deduped: int = 0  # resolve requests dropped because an ask for them was in flight or answered
    errors: int = 0
    ticks: list[dict[str, float]] = field(default_factory=list)
    # for the metrics endpoint (pipeline/web/metrics.py reads them at scrape time; nothing here is per event)
    dead_by_reason: Counter[str] = field(default_factory=Counter)  # routing.reason_label -> dead letters
    answers: Counter[tuple[str, str]] = field(default_factory=Counter)  # (provider, outcome) -> IPs
    countries: Counter[str] = field(default_factory=Counter)  # routing.country_label -> enriched IPs
    # IP fields of enriched events that held no valid IP, by routing.reason_label (the event went on)
    fields_failed: Counter[str] = field(default_factory=Counter)
    ticks_run: int = 0  # retry ticks since start ...
    tick_seconds: float = 0.0  # ... and the seconds they took together

    def line(self) -> str:
        return (
            f"in={self.consumed} enriched={self.enriched} hits={self.hits} new={self.new} "
            f"dlq={self.dead_lettered} seen={self.seen_applied} "
            f"created={self.entries_created} resolve_sent={self.resolve_sent} lookups={self.lookups} "
            f"batches={self.batches} fallback={self.fallback_answers} deduped={self.resolve_deduped} "
            f"results={self.results_applied} published={self.resolved_published} "
            f"malformed={self.malformed} reanswered={self.reanswered} forgotten={self.forgotten} "
            f"replays={self.replays} errors={self.errors}"
        )
