"""The checks behind `Settings.validate`: values that cannot work, each found with its fix.

Why apart from settings.py: the field list and its parsers are what a reader looks up; these rules
(ranges, settings that contradict each other, a key over plain HTTP, a budget the free tier would punish,
Kafka security settings that do not fit together) are read when one of them refuses a start.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, fields
from urllib.parse import urlsplit

from pipeline.config.fields import Fields
from pipeline.config.ipfields import ENRICHED_KEYS, MAX_IP_FIELDS, OUTPUT_FORMATS, parse_field
from pipeline.config.limits import (
    DATA_SUFFIXES,
    DATA_VENDORS,
    DBIP_KINDS,
    FREE_TIER_REQUESTS,
    FREE_TIER_WINDOW,
    LOG_FORMATS,
    MAX_DATA_BYTES,
    MAX_DURATION,
    MAX_EVENT_BYTES_CEILING,
    MAX_HTTP_TIMEOUT,
    MAX_NEAR_CACHE,
    MAX_PARTITIONS,
    PROVIDERS,
    SASL_MECHANISMS,
    SECURITY_PROTOCOLS,
    log_levels,
)


def refusals(s: Fields) -> list[str]:
    """Every problem found, one line each naming the variable and the fix; empty when all can work."""
    env = {f.name: f.metadata["env"] for f in fields(s)}
    found = [limit.problem(env[name], getattr(s, name)) for name, limit in _LIMITS.items()]
    found += [*_relation_problems(s), *_endpoint_problems(s), *_kafka_problems(s), *_operator_problems(s)]
    found += _exposure_problems(s)
    found += _data_problems(s)
    found += _shape_problems(s)
    return [p for p in found if p]


def cautions(s: Fields) -> list[str]:
    """What works but exposes something, one line each naming the variables: logged at start, not refused."""
    found = []
    if s.kafka_security_protocol == "SASL_PLAINTEXT" and s.kafka_sasl_mechanism == "PLAIN":
        found.append(
            "GEO_KAFKA_SASL_MECHANISM=PLAIN over GEO_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT sends the "
            "password in clear to every broker: use SASL_SSL, or SCRAM-SHA-256/512 (which never sends it)"
        )
    return found


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
    "malloc_arenas": _Limit(0, 1024, "glibc malloc arenas; 0 keeps glibc's default"),
    "slow_lane_after": _Limit(1, 1_000_000, "failed asks in a row before an address is retried daily"),
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
    "data_update_interval": _Limit(1, 30 * 86400, "how often the offline data is checked", _S),
    "data_update_jitter": _Limit(0, 86400, "random extra wait before each check", _S),
    "data_daily_cap": _Limit(1, 1000, "downloads per source and day for the cluster; MaxMind's is 30"),
    "data_retry_base": _Limit(0, 86400, "the first back-off after a failed download", _S, True),
    "data_max_bytes": _Limit(1024 * 1024, MAX_DATA_BYTES, "largest download or database accepted"),
}


def _relation_problems(s: Fields) -> list[str]:
    problems = []
    if s.retry_cap < s.retry_base:
        problems.append(
            f"GEO_RETRY_CAP={s.retry_cap:g} is below GEO_RETRY_BASE={s.retry_base:g}: the back-off "
            "cap must be at least the first delay; raise GEO_RETRY_CAP or lower GEO_RETRY_BASE"
        )
    if s.pending_timeout < 2 * s.http_timeout:
        # the resolver drops a repeat asked less than half a pending timeout ago: that half must outlast
        # one whole call, or a request still in flight is asked again
        problems.append(
            f"GEO_PENDING_TIMEOUT={s.pending_timeout:g} is shorter than two GEO_HTTP_TIMEOUTs "
            f"(2 x {s.http_timeout:g} s): a request still in flight would be asked again; raise "
            f"GEO_PENDING_TIMEOUT to at least {2 * s.http_timeout:g} or lower GEO_HTTP_TIMEOUT"
        )
    if s.forget_after <= s.stale_after:
        problems.append(
            f"GEO_FORGET_AFTER={s.forget_after:g} must be longer than GEO_STALE_AFTER="
            f"{s.stale_after:g}: an IP stops being refreshed before its entry is deleted"
        )
    unknown = set(s.providers) - set(PROVIDERS)
    if unknown or not s.providers:
        problems.append(
            f"GEO_PROVIDERS: unknown provider(s) {sorted(unknown)}; use {', '.join(PROVIDERS)} (in order)"
        )
    if "mmdb" in s.providers and not s.mmdb and not s.data_sources:
        problems.append(
            "GEO_PROVIDERS names mmdb but GEO_MMDB and GEO_DATA_SOURCES are empty: give the .mmdb file "
            "paths or the sources to download"
        )
    if (s.mmdb or s.data_sources) and "mmdb" not in s.providers:
        problems.append(
            "GEO_MMDB or GEO_DATA_SOURCES is set but GEO_PROVIDERS does not name mmdb: add it where its "
            "answers rank, "
            "e.g. GEO_PROVIDERS=mmdb,ipapi,offline"
        )
    return problems


def _endpoint_problems(s: Fields) -> list[str]:
    """The URL must be usable, a key must not travel in clear, the free tier's budget must hold."""
    if s.ipapi_url:
        url = urlsplit(s.ipapi_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            return [
                "GEO_IPAPI_URL must be an http:// or https:// URL with a host, e.g. "
                "http://127.0.0.1:8080 for the fake API, or empty for ip-api.com"
            ]
        if s.ipapi_key is not None and url.scheme == "http" and not _loopback(url.hostname):
            return [
                f"GEO_IPAPI_KEY is set but GEO_IPAPI_URL is plain http://{url.hostname}: the key would "
                "travel in clear; use https:// (or leave GEO_IPAPI_URL empty for pro.ip-api.com)"
            ]
        return []
    if s.ipapi_key is not None or "ipapi" not in s.providers or not s.budget_window >= 1:
        return []  # a key means pro (no budget from us); a bad window is reported on its own
    # ip-api counts fixed 60 s windows; a sliding budget of r per w can put r * ceil(60 / w) into one
    worst = s.budget_requests * math.ceil(FREE_TIER_WINDOW / s.budget_window - 1e-9)
    if worst <= FREE_TIER_REQUESTS:
        return []
    return [
        f"GEO_BUDGET_REQUESTS={s.budget_requests} per GEO_BUDGET_WINDOW={s.budget_window:g} s "
        f"can send {worst} requests in one of ip-api's {FREE_TIER_WINDOW:g} s windows, over the free "
        f"tier's {FREE_TIER_REQUESTS} (429s, then a ban): use at most {FREE_TIER_REQUESTS} per "
        f"{FREE_TIER_WINDOW:g} s (the defaults), or set GEO_IPAPI_KEY for the pro endpoint"
    ]


def _kafka_problems(s: Fields) -> list[str]:
    """The Kafka security settings must name a known protocol and mechanism and fit together."""
    problems: list[str] = []
    protocol, mechanism = s.kafka_security_protocol, s.kafka_sasl_mechanism
    if protocol not in SECURITY_PROTOCOLS:
        choices = ", ".join(SECURITY_PROTOCOLS)
        problems.append(f"GEO_KAFKA_SECURITY_PROTOCOL={protocol!r} is not valid: use one of {choices}")
    if mechanism not in SASL_MECHANISMS:
        choices = ", ".join(SASL_MECHANISMS)
        problems.append(f"GEO_KAFKA_SASL_MECHANISM={mechanism!r} is not valid: use one of {choices}")
    has_credentials = bool(s.kafka_sasl_username) or s.kafka_sasl_password is not None
    if protocol.startswith("SASL_"):
        if not s.kafka_sasl_username or not s.kafka_sasl_password:
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
        "GEO_KAFKA_SSL_CAFILE": s.kafka_ssl_cafile,
        "GEO_KAFKA_SSL_CERTFILE": s.kafka_ssl_certfile,
        "GEO_KAFKA_SSL_KEYFILE": s.kafka_ssl_keyfile,
    }
    tls_set = [name for name, path in files.items() if path is not None]
    if s.kafka_ssl_key_password is not None:
        tls_set.append("GEO_KAFKA_SSL_KEY_PASSWORD")
    if tls_set and protocol not in ("SSL", "SASL_SSL"):
        problems.append(
            f"{', '.join(tls_set)} set but GEO_KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS: "
            "use SSL or SASL_SSL"
        )
    problems += [
        f"{name}={str(path)!r}: no such file" for name, path in files.items() if path and not path.is_file()
    ]
    if (s.kafka_ssl_certfile is None) != (s.kafka_ssl_keyfile is None):
        problems.append(
            "GEO_KAFKA_SSL_CERTFILE and GEO_KAFKA_SSL_KEYFILE go together (a client certificate needs "
            "its private key; for one PEM file holding both, give its path to both)"
        )
    if s.kafka_ssl_key_password is not None and s.kafka_ssl_keyfile is None:
        problems.append("GEO_KAFKA_SSL_KEY_PASSWORD is set but GEO_KAFKA_SSL_KEYFILE is not")
    return problems


def _operator_problems(s: Fields) -> list[str]:
    """The advertised URL must be reachable as written, the log settings must parse."""
    problems: list[str] = []
    if s.advertised_url:
        url = urlsplit(s.advertised_url)
        if url.scheme not in ("http", "https") or not url.hostname or url.path.strip("/"):
            problems.append(
                f"GEO_ADVERTISED_URL={s.advertised_url!r} is not valid: use http://<host>:<port> as "
                "other workers reach this one, or leave it empty"
            )
        elif url.username or url.password:  # it is shared with every group member and shown by the API
            problems.append("GEO_ADVERTISED_URL must not hold credentials: use http://<host>:<port>")
    try:
        log_levels(s.log_level)
    except ValueError as exc:
        problems.append(f"GEO_LOG_LEVEL={s.log_level!r} is not valid: {exc}")
    if s.log_format not in LOG_FORMATS:
        problems.append(f"GEO_LOG_FORMAT={s.log_format!r} is not valid: use text or json")
    return problems


def _exposure_problems(s: Fields) -> list[str]:
    """What others could abuse: a free-tier budget several owners share, a forwarding allow-list."""
    problems: list[str] = []
    if s.egress_ip:
        try:
            public = ipaddress.ip_address(s.egress_ip).is_global
        except ValueError:
            public = False
        if not public:
            problems.append(
                f"GEO_EGRESS_IP={s.egress_ip!r} is not a public IP address: give the address ip-api sees "
                "this worker's requests come from (or leave it empty)"
            )
    free_tier = "ipapi" in s.providers and s.ipapi_key is None and not s.ipapi_url
    if free_tier and s.resolve_partitions > 1 and not s.egress_ip:
        # one budget per worker: two workers owning resolve partitions behind one egress IP spend it twice
        problems.append(
            f"GEO_RESOLVE_PARTITIONS={s.resolve_partitions} on ip-api's free tier (no GEO_IPAPI_KEY): "
            f"workers owning resolve partitions behind one egress IP would each send "
            f"{s.budget_requests} per {s.budget_window:g} s where ip-api allows {FREE_TIER_REQUESTS} per "
            "IP (429s, then a ban); use GEO_RESOLVE_PARTITIONS=1, or set GEO_IPAPI_KEY, or declare on every "
            "worker its own public egress address with GEO_EGRESS_IP (a different one each)"
        )
    for cidr in s.forward_networks:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            problems.append(
                f"GEO_FORWARD_NETWORKS: {cidr!r} is not a network: use CIDRs such as 10.0.0.0/8, "
                "comma-separated, or leave it empty"
            )
    return problems


def _data_problems(s: Fields) -> list[str]:
    """Each GEO_DATA_SOURCES entry must be one the updater knows, with its credentials, over HTTPS."""
    problems = [p for spec in s.data_sources if (p := source_problem(spec))]
    vendors = {spec.partition(":")[0] for spec in s.data_sources}
    if "maxmind" in vendors and (not s.maxmind_account_id.strip().isdigit() or not s.maxmind_license_key):
        problems.append(
            "GEO_DATA_SOURCES names maxmind: set GEO_MAXMIND_ACCOUNT_ID (the number) and "
            "GEO_MAXMIND_LICENSE_KEY from your MaxMind account page"
        )
    if "ipinfo" in vendors and not s.ipinfo_token:
        problems.append("GEO_DATA_SOURCES names ipinfo: set GEO_IPINFO_TOKEN (your IPinfo access token)")
    if len(set(s.data_sources)) != len(s.data_sources):
        problems.append("GEO_DATA_SOURCES names a source twice: list each once")
    hosts = {"GEO_MAXMIND_URL": s.maxmind_url, "GEO_DBIP_URL": s.dbip_url, "GEO_IPINFO_URL": s.ipinfo_url}
    for name, value in hosts.items():
        url = urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname:
            problems.append(
                f"{name}={value!r} is not valid: use https://<host> (the default is the vendor's)"
            )
        elif url.scheme == "http" and not _loopback(url.hostname):
            problems.append(f"{name}={value!r}: credentials would travel in clear; use https://")
    if s.data_sources and s.data_update_jitter > s.data_update_interval:
        problems.append("GEO_DATA_UPDATE_JITTER must not exceed GEO_DATA_UPDATE_INTERVAL")
    return problems


def _shape_problems(s: Fields) -> list[str]:
    """GEO_IP_FIELDS must parse, name each field once and, in ecs, give each field its own target."""
    problems: list[str] = []
    if not s.ip_fields or len(s.ip_fields) > MAX_IP_FIELDS:
        problems.append(f"GEO_IP_FIELDS must name 1 to {MAX_IP_FIELDS} fields, e.g. source.ip,destination.ip")
    specs = []
    for spec in s.ip_fields:
        try:
            specs.append(parse_field(spec))
        except ValueError as exc:
            problems.append(f"GEO_IP_FIELDS: {exc}")
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        problems.append("GEO_IP_FIELDS names a field twice: list each once")
    parents = [spec.path[:-1] for spec in specs if not spec.top_level]
    if s.output_format == "ecs" and len(set(parents)) != len(parents):
        problems.append(
            "GEO_IP_FIELDS has two nested fields under one parent (e.g. client.ip and client.address): "
            "GEO_OUTPUT_FORMAT=ecs writes <parent>.geo for each, so one would overwrite the other"
        )
    if s.output_format not in OUTPUT_FORMATS:
        choices = " or ".join(OUTPUT_FORMATS)
        problems.append(f"GEO_OUTPUT_FORMAT={s.output_format!r} is not valid: use {choices}")
    if s.enriched_key and s.enriched_key not in ENRICHED_KEYS:
        problems.append(
            f"GEO_ENRICHED_KEY={s.enriched_key!r} is not valid: use ip (the first field's IP) or input "
            "(the input record's key), or leave it empty"
        )
    for cidr in s.trusted_proxies:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            problems.append(f"GEO_TRUSTED_PROXIES: {cidr!r} is not a network: use CIDRs such as 10.0.0.0/8")
    if s.trusted_proxies and not any(spec.forwarded for spec in specs):
        problems.append(
            "GEO_TRUSTED_PROXIES is set but no GEO_IP_FIELDS field is an xff: chain: it would change "
            "nothing; add xff:<path> or clear it"
        )
    return problems


def source_problem(spec: str) -> str:
    """Why one GEO_DATA_SOURCES entry cannot work, or "" (the grammar: docs/data-updates.md)."""
    vendor, colon, name = spec.partition(":")
    if vendor in ("http", "https") and colon:
        url = urlsplit(spec)
        if not url.hostname or not url.path.lower().endswith(DATA_SUFFIXES):
            return f"GEO_DATA_SOURCES: {spec!r} must name a file ending in {', '.join(DATA_SUFFIXES)}"
        if url.scheme == "http" and not _loopback(url.hostname):
            return f"GEO_DATA_SOURCES: {spec!r} is plain http: use https:// (a file from anywhere is trusted)"
        return ""
    if vendor == "maxmind" and name and all(c.isalnum() or c == "-" for c in name):
        return ""
    if vendor == "dbip" and name in DBIP_KINDS:
        return ""
    if vendor == "ipinfo" and name == "lite":
        return ""
    kinds = "|".join(DBIP_KINDS)
    return (
        f"GEO_DATA_SOURCES: {spec!r} is not a source: use maxmind:<edition> (e.g. maxmind:GeoLite2-City), "
        f"dbip:<{kinds}>, ipinfo:lite or an https:// URL ({', '.join(DATA_VENDORS)})"
    )


def _loopback(host: str) -> bool:
    """Whether `host` is this machine (a key sent there never crosses a network)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
