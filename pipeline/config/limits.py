"""The bounds and vocabularies the settings are checked against, each with the reason for its value.

Apart from settings.py and checks.py because both read them: the settings for their defaults, the checks
for their ranges; neither has to import the other for a number.
"""

from __future__ import annotations

PROVIDERS = ("ipapi", "mmdb", "offline")  # the remote API, MaxMind-format files, iptocc's registry data
FREE_TIER_REQUESTS = 15  # ip-api's free tier allows 15 batch requests ...
FREE_TIER_WINDOW = 60.0  # ... per 60 s window, per source IP
# what ip-api is asked by default: place, network, and the free tier's proxy/hosting/mobile flags
IPAPI_DEFAULT_FIELDS = (
    "status,message,query,country,countryCode,regionName,city,lat,lon,isp,org,as,asname,proxy,hosting,mobile"
)

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")  # GEO_KAFKA_SECURITY_PROTOCOL
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")  # GEO_KAFKA_SASL_MECHANISM

# an enriched record is the event plus about 1 KiB of geo: keep it under Kafka's default 1 MiB limit
MAX_EVENT_BYTES_CEILING = 512 * 1024
MAX_PARTITIONS = 10_000  # per topic; beyond this a value is a typo, and each partition costs a RocksDB store
MAX_NEAR_CACHE = 50_000_000  # entries: ~50 GiB at ~1 KiB each, more than any one worker should hold
MAX_HTTP_TIMEOUT = 300.0  # s: ip-api answers within a second; a call held longer stalls its whole batch
MAX_DURATION = 10 * 365 * 86400.0  # s: longest delay; due keys hold 13-digit milliseconds (cache/policy.py)
DATA_VENDORS = ("maxmind", "dbip", "ipinfo")  # GEO_DATA_SOURCES prefixes besides https:// URLs
DBIP_KINDS = ("country", "city", "asn")  # DB-IP's Lite editions: dbip:<kind>
DATA_SUFFIXES = (".mmdb", ".mmdb.gz", ".tar.gz")  # what a plain URL source may point at
DAY = 86400.0
DATA_WARN_AGE = 25 * DAY  # offline data this old is warned about: five days before it counts as expired
DATA_EXPIRED_AGE = 30 * DAY  # MaxMind's EULA: no use after an update has been out 30 days; flagged
MAX_DATA_BYTES = 4 * 1024**3  # bytes: a GeoIP2-City Enterprise is ~1 GiB unpacked; more is a wrong URL
LOG_FORMATS = ("text", "json")  # GEO_LOG_FORMAT
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # GEO_LOG_LEVEL


def words(raw: str) -> tuple[str, ...]:
    """A comma-separated list as its non-empty words, stripped."""
    return tuple(w.strip() for w in raw.split(",") if w.strip())


def log_levels(spec: str) -> dict[str, str]:
    """GEO_LOG_LEVEL as {logger: level}: a bare level is the pipeline's (`pipeline`), `name=LEVEL` any
    logger's, e.g. "INFO,faust=INFO,aiokafka=DEBUG"; ValueError names what does not parse."""
    levels: dict[str, str] = {}
    for part in words(spec):
        name, _, level = part.rpartition("=")
        level = level.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"{level!r} is not a level: use one of {', '.join(LOG_LEVELS)}")
        levels[name.strip() or "pipeline"] = level
    return levels
