"""One frozen settings object, built from the environment at the edge (the CLI) and passed down.

Nothing else in the package reads `os.environ`. Every value has a default that runs the demo on one
machine; `Settings.describe()` lists them for `geo-pipeline settings` and the README, with the secrets
(the API key, the Kafka SASL password and the TLS key password) redacted.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError
from .secret import Secret

T = TypeVar("T")

FREE_TIER_REQUESTS = 15  # ip-api's free tier allows 15 batch requests ...
FREE_TIER_WINDOW = 60.0  # ... per 60 s window, per source IP

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")  # GEO_KAFKA_SECURITY_PROTOCOL
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")  # GEO_KAFKA_SASL_MECHANISM

# an enriched record is the event plus about 1 KiB of geo: keep it under Kafka's default 1 MiB limit
MAX_EVENT_BYTES_CEILING = 512 * 1024


@dataclass(frozen=True)
class Settings:
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
    # entries the hot path keeps to serve hits without the second hop (~0.5 KiB each; 0 turns it off)
    near_cache_size: int = field(default=250_000, metadata={"env": "GEO_NEAR_CACHE_SIZE"})
    worker_name: str = field(default="", metadata={"env": "GEO_WORKER_NAME"})  # "": <hostname>:<pid>
    # providers
    providers: tuple[str, ...] = field(default=("ipapi", "offline"), metadata={"env": "GEO_PROVIDERS"})
    ipapi_url: str = field(default="", metadata={"env": "GEO_IPAPI_URL"})
    ipapi_key: Secret | None = field(default=None, metadata={"env": "GEO_IPAPI_KEY"})
    ipapi_fields: str = field(
        default="status,message,query,country,countryCode,regionName,city,lat,lon,isp,org,as,asname",
        metadata={"env": "GEO_IPAPI_FIELDS"},
    )
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
    # web
    web_host: str = field(default="127.0.0.1", metadata={"env": "GEO_WEB_HOST"})
    web_port: int = field(default=6066, metadata={"env": "GEO_WEB_PORT"})
    # --- Kafka security: how every client (Faust's and our own aiokafka ones) authenticates --------------
    # pipeline.kafka_config turns these into client keyword arguments and Faust's broker_credentials.
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

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Build settings from an environment mapping; a malformed value raises ConfigError naming it."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata["env"]
            raw = environ.get(name)
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = _PARSERS[f.name](raw) if f.name in _PARSERS else _parse(f.type, raw)
            except ValueError as exc:
                raise ConfigError(f"{name}={raw!r} is not valid: {exc}") from None
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.partitions < 1 or self.resolve_partitions < 1:
            raise ConfigError("GEO_PARTITIONS and GEO_RESOLVE_PARTITIONS must be at least 1")
        if self.budget_requests < 1 or self.budget_window <= 0:
            raise ConfigError("GEO_BUDGET_REQUESTS must be >= 1 and GEO_BUDGET_WINDOW > 0")
        if not 64 <= self.max_event_bytes <= MAX_EVENT_BYTES_CEILING:
            raise ConfigError(f"GEO_MAX_EVENT_BYTES must be between 64 and {MAX_EVENT_BYTES_CEILING}")
        if self.near_cache_size < 0:
            raise ConfigError("GEO_NEAR_CACHE_SIZE must be >= 0 (0 turns the near cache off)")
        unknown = set(self.providers) - {"ipapi", "offline"}
        if unknown or not self.providers:
            raise ConfigError(
                f"GEO_PROVIDERS: unknown provider(s) {sorted(unknown)}; use ipapi and/or offline"
            )
        self._validate_kafka_security()

    def _validate_kafka_security(self) -> None:
        protocol, mechanism = self.kafka_security_protocol, self.kafka_sasl_mechanism
        if protocol not in SECURITY_PROTOCOLS:
            choices = ", ".join(SECURITY_PROTOCOLS)
            raise ConfigError(f"GEO_KAFKA_SECURITY_PROTOCOL={protocol!r} is not valid: use one of {choices}")
        if mechanism not in SASL_MECHANISMS:
            choices = ", ".join(SASL_MECHANISMS)
            raise ConfigError(f"GEO_KAFKA_SASL_MECHANISM={mechanism!r} is not valid: use one of {choices}")
        has_credentials = bool(self.kafka_sasl_username) or self.kafka_sasl_password is not None
        if protocol.startswith("SASL_"):
            if not self.kafka_sasl_username or not self.kafka_sasl_password:
                raise ConfigError(
                    f"GEO_KAFKA_SECURITY_PROTOCOL={protocol} needs GEO_KAFKA_SASL_USERNAME and "
                    "GEO_KAFKA_SASL_PASSWORD"
                )
        elif has_credentials:
            raise ConfigError(
                f"GEO_KAFKA_SASL_USERNAME/GEO_KAFKA_SASL_PASSWORD are set but GEO_KAFKA_SECURITY_PROTOCOL="
                f"{protocol} does not use SASL: use SASL_PLAINTEXT or SASL_SSL"
            )
        files = {
            "GEO_KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "GEO_KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
            "GEO_KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
        }
        tls_set = [name for name, path in files.items() if path is not None]
        if self.kafka_ssl_key_password is not None:
            tls_set.append("GEO_KAFKA_SSL_KEY_PASSWORD")
        if tls_set and protocol not in ("SSL", "SASL_SSL"):
            raise ConfigError(
                f"{', '.join(tls_set)} set but GEO_KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS: "
                "use SSL or SASL_SSL"
            )
        for name, path in files.items():
            if path is not None and not path.is_file():
                raise ConfigError(f"{name}={str(path)!r}: no such file")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ConfigError(
                "GEO_KAFKA_SSL_CERTFILE and GEO_KAFKA_SSL_KEYFILE go together (a client certificate needs "
                "its private key; for one PEM file holding both, give its path to both)"
            )
        if self.kafka_ssl_key_password is not None and self.kafka_ssl_keyfile is None:
            raise ConfigError("GEO_KAFKA_SSL_KEY_PASSWORD is set but GEO_KAFKA_SSL_KEYFILE is not")

    @property
    def by_ip_topic(self) -> str:
        """Internal topic: valid events repartitioned by normalised IP (co-partitioned with the table)."""
        return f"{self.app_id}-events-by-ip"

    @property
    def results_topic(self) -> str:
        """Internal topic: lookup results and retry requests keyed by IP (co-partitioned with the table)."""
        return f"{self.app_id}-geo-results"

    @property
    def asked_topic(self) -> str:
        """Internal topic: what the resolver asked the API, keyed by IP (co-partitioned with resolve)."""
        return f"{self.app_id}-geo-asked"

    @property
    def worker_label(self) -> str:
        """This worker's name in the records it emits: GEO_WORKER_NAME, else `<hostname>:<pid>`."""
        return self.worker_name or f"{socket.gethostname()}:{os.getpid()}"

    def describe(self) -> list[tuple[str, str]]:
        """(variable, value) pairs with secrets redacted, for `geo-pipeline settings`."""
        return [(f.metadata["env"], str(getattr(self, f.name))) for f in fields(self)]


def _parse(kind: Any, raw: str) -> Any:
    text = str(kind)
    if "int" in text and "float" not in text:
        return int(raw)
    if "float" in text:
        return float(raw)
    if "Path" in text:
        return Path(raw).expanduser()
    return raw


def _words(raw: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in raw.split(",") if w.strip())


_PARSERS: dict[str, Callable[[str], Any]] = {
    "providers": _words,
    "ipapi_key": Secret,
    "kafka_security_protocol": lambda raw: raw.strip().upper(),
    "kafka_sasl_mechanism": lambda raw: raw.strip().upper(),
    "kafka_sasl_password": Secret,
    "kafka_ssl_key_password": Secret,
}
