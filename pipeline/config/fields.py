"""Every value a worker is configured with, and the names derived from them: the settings' shape.

Apart from settings.py (which reads these from the environment and refuses what cannot work) so that the
rules in checks.py can name this type without importing the module that calls them: config/ has no
import circle.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config.ipfields import DEFAULT_FIELDS, enriched_key_mode
from pipeline.config.limits import FREE_TIER_REQUESTS, FREE_TIER_WINDOW, IPAPI_DEFAULT_FIELDS
from pipeline.config.secret import Secret


@dataclass(frozen=True)
class Fields:
    """Everything a worker needs; `env` names the variable each field is read from."""

    kafka_bootstrap: str = field(default="127.0.0.1:9092", metadata={"env": "KAFKA_BOOTSTRAP_SERVERS"})
    app_id: str = field(default="geo-pipeline", metadata={"env": "GEO_APP_ID"})
    data_dir: Path = field(default=Path("geo-pipeline-data"), metadata={"env": "GEO_DATA_DIR"})
    # topics
    events_topic: str = field(default="ip-events", metadata={"env": "GEO_EVENTS_TOPIC"})
    dlq_topic: str = field(default="ip-events-dlq", metadata={"env": "GEO_DLQ_TOPIC"})
    enriched_topic: str = field(default="ip-events-enriched", metadata={"env": "GEO_ENRICHED_TOPIC"})
    resolved_topic: str = field(default="geo-resolved", metadata={"env": "GEO_RESOLVED_TOPIC"})
    resolve_topic: str = field(default="geo-resolve", metadata={"env": "GEO_RESOLVE_TOPIC"})
    partitions: int = field(default=8, metadata={"env": "GEO_PARTITIONS"})
    resolve_partitions: int = field(default=1, metadata={"env": "GEO_RESOLVE_PARTITIONS"})
    replication: int = field(default=1, metadata={"env": "GEO_REPLICATION"})
    max_event_bytes: int = field(default=64 * 1024, metadata={"env": "GEO_MAX_EVENT_BYTES"})
    # entries the hot path keeps in memory in front of its RocksDB replica (~760 B each, measured; 0 turns
    # it off): 50,000 holds a burst of 300,000 new IPs at 291 MiB peak (371 MiB at 150,000), same rates
    near_cache_size: int = field(default=50_000, metadata={"env": "GEO_NEAR_CACHE_SIZE"})
    worker_name: str = field(default="", metadata={"env": "GEO_WORKER_NAME"})  # "": <hostname>:<pid>
    # glibc malloc arenas a worker may use (0: glibc's default, 8 per core); fewer keep the memory RocksDB's
    # threads free for reuse instead of in arenas of their own (pipeline/storage.py)
    malloc_arenas: int = field(default=2, metadata={"env": "GEO_MALLOC_ARENAS"})
    # --- input and output shapes (docs/formats.md) ------------------------------------------------------
    # dot paths of the event's IP fields, `xff:` before a field holding an X-Forwarded-For chain
    ip_fields: tuple[str, ...] = field(default=DEFAULT_FIELDS, metadata={"env": "GEO_IP_FIELDS"})
    # proxies whose hops in a forwarded chain are skipped (CIDRs): the client is the right-most other hop
    trusted_proxies: tuple[str, ...] = field(default=(), metadata={"env": "GEO_TRUSTED_PROXIES"})
    output_format: str = field(default="envelope", metadata={"env": "GEO_OUTPUT_FORMAT"})  # envelope | ecs
    # the enriched record's key: ip (the first field's IP) | input (the input's key); "": ip for one field
    enriched_key: str = field(default="", metadata={"env": "GEO_ENRICHED_KEY"})
    # providers
    providers: tuple[str, ...] = field(default=("ipapi", "offline"), metadata={"env": "GEO_PROVIDERS"})
    # MaxMind-format databases (city/country, ASN) for the "mmdb" provider, in priority order
    mmdb: tuple[Path, ...] = field(default=(), metadata={"env": "GEO_MMDB"})
    ipapi_url: str = field(default="", metadata={"env": "GEO_IPAPI_URL"})
    ipapi_key: Secret | None = field(default=None, metadata={"env": "GEO_IPAPI_KEY"})
    ipapi_fields: str = field(default=IPAPI_DEFAULT_FIELDS, metadata={"env": "GEO_IPAPI_FIELDS"})
    ipapi_lang: str = field(default="", metadata={"env": "GEO_IPAPI_LANG"})
    http_timeout: float = field(default=10.0, metadata={"env": "GEO_HTTP_TIMEOUT"})
    budget_requests: int = field(default=FREE_TIER_REQUESTS, metadata={"env": "GEO_BUDGET_REQUESTS"})
    budget_window: float = field(default=FREE_TIER_WINDOW, metadata={"env": "GEO_BUDGET_WINDOW"})
    resolve_batch_wait: float = field(default=0.5, metadata={"env": "GEO_RESOLVE_BATCH_WAIT"})
    # retry timer
    retry_interval: float = field(default=60.0, metadata={"env": "GEO_RETRY_INTERVAL"})
    retry_base: float = field(default=60.0, metadata={"env": "GEO_RETRY_BASE"})
    retry_cap: float = field(default=4 * 3600.0, metadata={"env": "GEO_RETRY_CAP"})
    slow_lane_after: int = field(default=12, metadata={"env": "GEO_SLOW_LANE_AFTER"})
    slow_lane_interval: float = field(default=86400.0, metadata={"env": "GEO_SLOW_LANE_INTERVAL"})
    pending_timeout: float = field(default=600.0, metadata={"env": "GEO_PENDING_TIMEOUT"})
    refresh_after: float = field(default=30 * 86400.0, metadata={"env": "GEO_REFRESH_AFTER"})
    # IPs not seen this long are no longer refreshed (no API spend on history), then deleted
    stale_after: float = field(default=90 * 86400.0, metadata={"env": "GEO_STALE_AFTER"})
    forget_after: float = field(default=180 * 86400.0, metadata={"env": "GEO_FORGET_AFTER"})
    # web
    web_host: str = field(default="127.0.0.1", metadata={"env": "GEO_WEB_HOST"})
    web_port: int = field(default=6066, metadata={"env": "GEO_WEB_PORT"})  # taken: a free one, logged
    # how other workers and the CLI reach this one ("": http://<GEO_WEB_HOST or its address>:<port>); unique
    advertised_url: str = field(default="", metadata={"env": "GEO_ADVERTISED_URL"})
    # --- exposure (docs/hardening.md) ------------------------------------------------------------------
    # the public IP this worker's ip-api requests leave from, different on every worker: the declaration
    # that lets several resolve partitions share the free tier (each owner has its own 15 per 60 s)
    egress_ip: str = field(default="", metadata={"env": "GEO_EGRESS_IP"})
    # networks a forwarded /geo lookup may reach (CIDRs, comma-separated; empty: any http(s) peer URL)
    forward_networks: tuple[str, ...] = field(default=(), metadata={"env": "GEO_FORWARD_NETWORKS"})
    # logging: the pipeline's level, optionally `logger=LEVEL` pairs (Faust, mode, aiokafka: WARNING)
    log_level: str = field(default="INFO", metadata={"env": "GEO_LOG_LEVEL"})
    log_format: str = field(default="text", metadata={"env": "GEO_LOG_FORMAT"})  # text | json
    # --- Kafka security: how every client (Faust's and our own aiokafka ones) authenticates --------------
    # pipeline.kafka.config turns these into client keyword arguments and Faust's broker_credentials.
    kafka_security_protocol: str = field(default="PLAINTEXT", metadata={"env": "GEO_KAFKA_SECURITY_PROTOCOL"})
    kafka_sasl_mechanism: str = field(default="PLAIN", metadata={"env": "GEO_KAFKA_SASL_MECHANISM"})
    kafka_sasl_username: str = field(default="", metadata={"env": "GEO_KAFKA_SASL_USERNAME"})
    kafka_sasl_password: Secret | None = field(default=None, metadata={"env": "GEO_KAFKA_SASL_PASSWORD"})
    # TLS (SSL, SASL_SSL): no CA file means the system's trust store; a client cert needs its key
    kafka_ssl_cafile: Path | None = field(default=None, metadata={"env": "GEO_KAFKA_SSL_CAFILE"})
    kafka_ssl_certfile: Path | None = field(default=None, metadata={"env": "GEO_KAFKA_SSL_CERTFILE"})
    kafka_ssl_keyfile: Path | None = field(default=None, metadata={"env": "GEO_KAFKA_SSL_KEYFILE"})
    kafka_ssl_key_password: Secret | None = field(
        default=None, metadata={"env": "GEO_KAFKA_SSL_KEY_PASSWORD"}
    )
    # --- end of Kafka security ------------------------------------------------------------------------
    # --- offline data kept current (docs/data-updates.md): what to download, credentials, schedule -------
    # sources: maxmind:<edition>, dbip:<country|city|asn>, ipinfo:lite, or an https:// URL of a .mmdb,
    # .mmdb.gz or .tar.gz; empty: no downloads (GEO_MMDB files are the operator's to replace)
    data_sources: tuple[str, ...] = field(default=(), metadata={"env": "GEO_DATA_SOURCES"})
    maxmind_account_id: str = field(default="", metadata={"env": "GEO_MAXMIND_ACCOUNT_ID"})
    maxmind_license_key: Secret | None = field(default=None, metadata={"env": "GEO_MAXMIND_LICENSE_KEY"})
    ipinfo_token: Secret | None = field(default=None, metadata={"env": "GEO_IPINFO_TOKEN"})
    # the vendors' hosts (the dev tools' emulator stands in for them in tests and the demo)
    maxmind_url: str = field(default="https://download.maxmind.com", metadata={"env": "GEO_MAXMIND_URL"})
    dbip_url: str = field(default="https://download.db-ip.com", metadata={"env": "GEO_DBIP_URL"})
    ipinfo_url: str = field(default="https://ipinfo.io", metadata={"env": "GEO_IPINFO_URL"})
    data_update_interval: float = field(default=86400.0, metadata={"env": "GEO_DATA_UPDATE_INTERVAL"})
    # each check waits up to this much longer (random): a fleet restarted together does not ask at once
    data_update_jitter: float = field(default=3600.0, metadata={"env": "GEO_DATA_UPDATE_JITTER"})
    # downloads per source and UTC day, for the whole cluster; MaxMind allows GeoLite accounts 30
    data_daily_cap: int = field(default=10, metadata={"env": "GEO_DATA_DAILY_CAP"})
    # the first back-off after a failed download; it doubles per failure in a row, up to the interval
    data_retry_base: float = field(default=300.0, metadata={"env": "GEO_DATA_RETRY_BASE"})
    data_max_bytes: int = field(default=512 * 1024 * 1024, metadata={"env": "GEO_DATA_MAX_BYTES"})

    @property
    def seen_topic(self) -> str:
        """Internal topic: IPs workers saw for the first time, keyed by IP (co-partitioned with the table)."""
        return f"{self.app_id}-ips-seen"

    @property
    def results_topic(self) -> str:
        """Internal topic: lookup results and retry requests keyed by IP (co-partitioned with the table)."""
        return f"{self.app_id}-geo-results"

    @property
    def asked_topic(self) -> str:
        """Internal topic: what the resolver asked the API, keyed by IP (co-partitioned with resolve)."""
        return f"{self.app_id}-geo-asked"

    @property
    def data_topic(self) -> str:
        """Internal topic (compacted, one partition): the downloaded builds in chunks, their manifests, the
        download counts; its consumer group `<app>-geo-data-lease` elects the one worker that downloads."""
        return f"{self.app_id}-geo-data"

    @property
    def enriched_key_mode(self) -> str:
        """GEO_ENRICHED_KEY as used: `ip` or `input` (unset: `ip` for one IP field, `input` for several)."""
        return enriched_key_mode(self.enriched_key, len(self.ip_fields))

    @property
    def worker_label(self) -> str:
        """This worker's name in the records it emits: GEO_WORKER_NAME, else `<hostname>:<pid>`."""
        return self.worker_name or f"{socket.gethostname()}:{os.getpid()}"
