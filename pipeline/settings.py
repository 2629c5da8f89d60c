"""One frozen settings object, built from the environment at the edge (the CLI) and passed down.

Nothing else in the package reads `os.environ`. Every value has a default that runs the demo on one
machine; `Settings.describe()` lists them for `geo-pipeline settings` and the README, with the secrets
(the API key, the Kafka SASL password and the TLS key password) redacted. `from_env` refuses, at start,
values that cannot work (out of range, contradicting each other, a key over plain HTTP, a budget the free
tier would punish, Kafka security settings that do not fit together) with one ConfigError naming each
variable and its fix.
"""

from __future__ import annotations

import ipaddress
import math
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .errors import ConfigError
from .secret import Secret

T = TypeVar("T")

PROVIDERS = ("ipapi", "mmdb", "offline")  # the remote API, MaxMind-format files, iptocc's registry data
FREE_TIER_REQUESTS = 15  # ip-api's free tier allows 15 batch requests ...
FREE_TIER_WINDOW = 60.0  # ... per 60 s window, per source IP

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")  # GEO_KAFKA_SECURITY_PROTOCOL
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")  # GEO_KAFKA_SASL_MECHANISM

# an enriched record is the event plus about 1 KiB of geo: keep it under Kafka's default 1 MiB limit
MAX_EVENT_BYTES_CEILING = 512 * 1024
MAX_PARTITIONS = 10_000  # per topic; beyond this a value is a typo, and each partition costs a RocksDB store
MAX_NEAR_CACHE = 50_000_000  # entries: ~50 GiB at ~1 KiB each, more than any one worker should hold
MAX_HTTP_TIMEOUT = 300.0  # s: ip-api answers within a second; a call held longer stalls its whole batch
MAX_DURATION = 10 * 365 * 86400.0  # s: longest delay; due keys hold 13-digit milliseconds (policy.py)
LOG_FORMATS = ("text", "json")  # GEO_LOG_FORMAT
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # GEO_LOG_LEVEL


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
    # entries the hot path keeps to serve hits without the second hop (~1 KiB each in a worker, measured;
    # 0 turns it off): 150,000 keeps a worker that has seen a million IPs under 300 MiB
    near_cache_size: int = field(default=150_000, metadata={"env": "GEO_NEAR_CACHE_SIZE"})
    worker_name: str = field(default="", metadata={"env": "GEO_WORKER_NAME"})  # "": <hostname>:<pid>
    # providers
    providers: tuple[str, ...] = field(default=("ipapi", "offline"), metadata={"env": "GEO_PROVIDERS"})
    # MaxMind-format databases (city/country, ASN) for the "mmdb" provider, in priority order
    mmdb: tuple[Path, ...] = field(default=(), metadata={"env": "GEO_MMDB"})
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
    # IPs not seen this long are no longer refreshed (no API spend on history), then deleted
    stale_after: float = field(default=90 * 86400.0, metadata={"env": "GEO_STALE_AFTER"})
    forget_after: float = field(default=180 * 86400.0, metadata={"env": "GEO_FORGET_AFTER"})
    # web
    web_host: str = field(default="127.0.0.1", metadata={"env": "GEO_WEB_HOST"})
    web_port: int = field(default=6066, metadata={"env": "GEO_WEB_PORT"})  # taken: a free one, logged
    # how other workers and the CLI reach this one ("": http://<GEO_WEB_HOST or its address>:<port>); unique
    advertised_url: str = field(default="", metadata={"env": "GEO_ADVERTISED_URL"})
    # logging: the pipeline's level, optionally `logger=LEVEL` pairs (Faust, mode, aiokafka: WARNING)
    log_level: str = field(default="INFO", metadata={"env": "GEO_LOG_LEVEL"})
    log_format: str = field(default="text", metadata={"env": "GEO_LOG_FORMAT"})  # text | json
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
        """Refuse settings that cannot work: one ConfigError naming each bad variable and how to fix it."""
        env = {f.name: f.metadata["env"] for f in fields(self)}
        problems = [limit.problem(env[name], getattr(self, name)) for name, limit in _LIMITS.items()]
        found = [
            p
            for p in [
                *problems,
                *self._relation_problems(),
                *self._endpoint_problems(),
                *self._kafka_problems(),
                *self._operator_problems(),
            ]
            if p
        ]
        if len(found) == 1:
            raise ConfigError(found[0])
        if found:
            raise ConfigError(f"{len(found)} settings cannot work:\n  " + "\n  ".join(found))

    def _relation_problems(self) -> list[str]:
        problems = []
        if self.retry_cap < self.retry_base:
            problems.append(
                f"GEO_RETRY_CAP={self.retry_cap:g} is below GEO_RETRY_BASE={self.retry_base:g}: the back-off "
                "cap must be at least the first delay; raise GEO_RETRY_CAP or lower GEO_RETRY_BASE"
            )
        if self.pending_timeout < 2 * self.http_timeout:
            # the resolver drops a repeat asked less than half a pending timeout ago: that half must outlast
            # one whole call, or a request still in flight is asked again
            problems.append(
                f"GEO_PENDING_TIMEOUT={self.pending_timeout:g} is shorter than two GEO_HTTP_TIMEOUTs "
                f"(2 x {self.http_timeout:g} s): a request still in flight would be asked again; raise "
                f"GEO_PENDING_TIMEOUT to at least {2 * self.http_timeout:g} or lower GEO_HTTP_TIMEOUT"
            )
        if self.forget_after <= self.stale_after:
            problems.append(
                f"GEO_FORGET_AFTER={self.forget_after:g} must be longer than GEO_STALE_AFTER="
                f"{self.stale_after:g}: an IP stops being refreshed before its entry is deleted"
            )
        unknown = set(self.providers) - set(PROVIDERS)
        if unknown or not self.providers:
            problems.append(
                f"GEO_PROVIDERS: unknown provider(s) {sorted(unknown)}; use {', '.join(PROVIDERS)} (in order)"
            )
        if "mmdb" in self.providers and not self.mmdb:
            problems.append("GEO_PROVIDERS names mmdb but GEO_MMDB is empty: give the .mmdb file paths")
        if self.mmdb and "mmdb" not in self.providers:
            problems.append(
                "GEO_MMDB is set but GEO_PROVIDERS does not name mmdb: add it where its answers rank, "
                "e.g. GEO_PROVIDERS=mmdb,ipapi,offline"
            )
        return problems

    def _endpoint_problems(self) -> list[str]:
        """The URL must be usable, a key must not travel in clear, the free tier's budget must hold."""
        if self.ipapi_url:
            url = urlsplit(self.ipapi_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                return [
                    "GEO_IPAPI_URL must be an http:// or https:// URL with a host, e.g. "
                    "http://127.0.0.1:8080 for the fake API, or empty for ip-api.com"
                ]
            if self.ipapi_key is not None and url.scheme == "http" and not _loopback(url.hostname):
                return [
                    f"GEO_IPAPI_KEY is set but GEO_IPAPI_URL is plain http://{url.hostname}: the key would "
                    "travel in clear; use https:// (or leave GEO_IPAPI_URL empty for pro.ip-api.com)"
                ]
            return []
        if self.ipapi_key is not None or "ipapi" not in self.providers or not self.budget_window >= 1:
            return []  # a key means pro (no budget from us); a bad window is reported on its own
        # ip-api counts fixed 60 s windows; a sliding budget of r per w can put r * ceil(60 / w) into one
        worst = self.budget_requests * math.ceil(FREE_TIER_WINDOW / self.budget_window - 1e-9)
        if worst <= FREE_TIER_REQUESTS:
            return []
        return [
            f"GEO_BUDGET_REQUESTS={self.budget_requests} per GEO_BUDGET_WINDOW={self.budget_window:g} s "
            f"can send {worst} requests in one of ip-api's {FREE_TIER_WINDOW:g} s windows, over the free "
            f"tier's {FREE_TIER_REQUESTS} (429s, then a ban): use at most {FREE_TIER_REQUESTS} per "
            f"{FREE_TIER_WINDOW:g} s (the defaults), or set GEO_IPAPI_KEY for the pro endpoint"
        ]

    def _kafka_problems(self) -> list[str]:
        """The Kafka security settings must name a known protocol and mechanism and fit together."""
        problems: list[str] = []
        protocol, mechanism = self.kafka_security_protocol, self.kafka_sasl_mechanism
        if protocol not in SECURITY_PROTOCOLS:
            choices = ", ".join(SECURITY_PROTOCOLS)
            problems.append(f"GEO_KAFKA_SECURITY_PROTOCOL={protocol!r} is not valid: use one of {choices}")
        if mechanism not in SASL_MECHANISMS:
            choices = ", ".join(SASL_MECHANISMS)
            problems.append(f"GEO_KAFKA_SASL_MECHANISM={mechanism!r} is not valid: use one of {choices}")
        has_credentials = bool(self.kafka_sasl_username) or self.kafka_sasl_password is not None
        if protocol.startswith("SASL_"):
            if not self.kafka_sasl_username or not self.kafka_sasl_password:
                problems.append(
                    f"GEO_KAFKA_SECURITY_PROTOCOL={protocol} needs GEO_KAFKA_SASL_USERNAME and "
                    "GEO_KAFKA_SASL_PASSWORD"
                )
        elif has_credentials:
            problems.append(
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
            problems.append(
                f"{', '.join(tls_set)} set but GEO_KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS: "
                "use SSL or SASL_SSL"
            )
        problems += [
            f"{name}={str(path)!r}: no such file"
            for name, path in files.items()
            if path and not path.is_file()
        ]
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            problems.append(
                "GEO_KAFKA_SSL_CERTFILE and GEO_KAFKA_SSL_KEYFILE go together (a client certificate needs "
                "its private key; for one PEM file holding both, give its path to both)"
            )
        if self.kafka_ssl_key_password is not None and self.kafka_ssl_keyfile is None:
            problems.append("GEO_KAFKA_SSL_KEY_PASSWORD is set but GEO_KAFKA_SSL_KEYFILE is not")
        return problems

    def _operator_problems(self) -> list[str]:
        """The advertised URL must be reachable as written, the log settings must parse."""
        problems: list[str] = []
        if self.advertised_url:
            url = urlsplit(self.advertised_url)
            if url.scheme not in ("http", "https") or not url.hostname or url.path.strip("/"):
                problems.append(
                    f"GEO_ADVERTISED_URL={self.advertised_url!r} is not valid: use http://<host>:<port> as "
                    "other workers reach this one, or leave it empty"
                )
            elif url.username or url.password:  # it is shared with every group member and shown by the API
                problems.append("GEO_ADVERTISED_URL must not hold credentials: use http://<host>:<port>")
        try:
            log_levels(self.log_level)
        except ValueError as exc:
            problems.append(f"GEO_LOG_LEVEL={self.log_level!r} is not valid: {exc}")
        if self.log_format not in LOG_FORMATS:
            problems.append(f"GEO_LOG_FORMAT={self.log_format!r} is not valid: use text or json")
        return problems

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
    def worker_label(self) -> str:
        """This worker's name in the records it emits: GEO_WORKER_NAME, else `<hostname>:<pid>`."""
        return self.worker_name or f"{socket.gethostname()}:{os.getpid()}"

    def describe(self) -> list[tuple[str, str]]:
        """(variable, value) pairs with secrets redacted, for `geo-pipeline settings`."""
        return [(f.metadata["env"], _show(getattr(self, f.name))) for f in fields(self)]


def _show(value: Any) -> str:
    """A value as its environment variable would spell it (lists comma-separated; secrets redacted)."""
    return ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


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
    "mmdb": lambda raw: tuple(Path(word).expanduser() for word in _words(raw)),
    "ipapi_key": Secret,
    "kafka_security_protocol": lambda raw: raw.strip().upper(),
    "kafka_sasl_mechanism": lambda raw: raw.strip().upper(),
    "kafka_sasl_password": Secret,
    "log_format": lambda raw: raw.strip().lower(),
    "kafka_ssl_key_password": Secret,
}


@dataclass(frozen=True)
class _Limit:
    """The range a numeric setting must lie in (NaN and infinities never do) and why."""

    low: float
    high: float
    hint: str
    unit: str = ""
    above_low: bool = False  # the low end itself is refused (a duration of 0)

    def problem(self, env: str, value: float) -> str:
        inside = self.low < value <= self.high if self.above_low else self.low <= value <= self.high
        if inside:
            return ""
        lowest = f"more than {self.low:g}" if self.above_low else f"at least {self.low:g}"
        highest = f"at most {self.high:g}{self.unit}"
        shown = repr(value) if isinstance(value, int) else f"{value:g}"  # :g overflows on a huge int
        return f"{env}={shown} is out of range: use {lowest} and {highest} ({self.hint})"


_S = " s"
_LIMITS: dict[str, _Limit] = {
    "partitions": _Limit(1, MAX_PARTITIONS, "partitions of the table and its topics"),
    "resolve_partitions": _Limit(1, MAX_PARTITIONS, "one per egress IP, each with its own API budget"),
    "replication": _Limit(1, 100, "copies of each partition, at most your broker count"),
    "max_event_bytes": _Limit(64, MAX_EVENT_BYTES_CEILING, "an enriched record must fit Kafka's 1 MiB"),
    "near_cache_size": _Limit(0, MAX_NEAR_CACHE, "entries of ~1 KiB each; 0 turns the near cache off"),
    "slow_lane_after": _Limit(1, 1_000_000, "failed attempts before an address is retried daily"),
    "web_port": _Limit(0, 65535, "a TCP port; 0 picks a free one"),
    "budget_requests": _Limit(1, 1_000_000, "API requests per GEO_BUDGET_WINDOW"),
    "budget_window": _Limit(1, MAX_DURATION, "seconds the budget counts over; ip-api's is 60", _S),
    "http_timeout": _Limit(0, MAX_HTTP_TIMEOUT, "one whole ip-api call; the default is 10", _S, True),
    "resolve_batch_wait": _Limit(0, 60, "how long the resolver waits to fill a batch", _S),
    "retry_interval": _Limit(0, 86400, "how often the retry timer looks for due entries", _S, True),
    "retry_base": _Limit(0, MAX_DURATION, "the first retry delay", _S, True),
    "retry_cap": _Limit(0, MAX_DURATION, "the longest back-off delay", _S, True),
    "slow_lane_interval": _Limit(0, MAX_DURATION, "the slow lane's retry delay", _S, True),
    "pending_timeout": _Limit(0, MAX_DURATION, "how long an unanswered request is waited for", _S, True),
    "refresh_after": _Limit(0, MAX_DURATION, "age at which a resolved answer is refreshed", _S, True),
    "stale_after": _Limit(0, MAX_DURATION, "time unseen after which an IP is no longer refreshed", _S, True),
    "forget_after": _Limit(0, MAX_DURATION, "time unseen after which an IP's entry is deleted", _S, True),
}


def log_levels(spec: str) -> dict[str, str]:
    """GEO_LOG_LEVEL as {logger: level}: a bare level is the pipeline's (`pipeline`), `name=LEVEL` any
    logger's, e.g. "INFO,faust=INFO,aiokafka=DEBUG"; ValueError names what does not parse."""
    levels: dict[str, str] = {}
    for part in _words(spec):
        name, _, level = part.rpartition("=")
        level = level.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"{level!r} is not a level: use one of {', '.join(LOG_LEVELS)}")
        levels[name.strip() or "pipeline"] = level
    return levels


def _loopback(host: str) -> bool:
    """Whether `host` is this machine (a key sent there never crosses a network)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
