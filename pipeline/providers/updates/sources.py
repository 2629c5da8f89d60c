"""What each GEO_DATA_SOURCES entry asks for: URLs, credentials, checksum file, archive kind, file name.

Vendors (their URL formats and limits are cited in docs/data-updates.md):
- `maxmind:<edition>`: `<GEO_MAXMIND_URL>/geoip/databases/<edition>/download?suffix=tar.gz` with HTTP basic
  auth (account ID, licence key), its SHA-256 at `suffix=tar.gz.sha256`; the answer redirects to storage.
- `dbip:<country|city|asn>`: `<GEO_DBIP_URL>/free/dbip-<kind>-lite-<YYYY>-<MM>.mmdb.gz`, one file a
  month, no credentials; early in a month the new file may not be out yet, so last month's is asked next.
- `ipinfo:lite`: `<GEO_IPINFO_URL>/data/ipinfo_lite.mmdb?token=<token>`.
- an https:// URL of a `.mmdb`, `.mmdb.gz` or `.tar.gz`.

Secrets stay in `Request.auth` / `Request.secret_query` and are only joined in by the HTTP shell; `shown`
is the URL as logs and reports may print it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

from pipeline.config.fields import Fields


class Archive(StrEnum):
    """How a download wraps its .mmdb."""

    PLAIN = "mmdb"
    GZIP = "gz"
    TAR_GZ = "tar.gz"


@dataclass(frozen=True)
class Request:
    """One URL to fetch for a source, and how to fetch and read it."""

    url: str  # without secrets
    archive: Archive
    auth: tuple[str, str] | None = field(default=None, repr=False)  # basic auth (user, password)
    secret_query: tuple[str, str] | None = field(default=None, repr=False)  # (name, value) appended
    checksum_url: str | None = None  # a file whose first word is the download's SHA-256 (same auth)
    missing_ok: bool = False  # a 404 means "not out yet": try the next request

    @property
    def shown(self) -> str:
        """The URL for logs and reports: never a secret."""
        if self.secret_query:
            return f"{self.url}{'&' if '?' in self.url else '?'}{self.secret_query[0]}=REDACTED"
        return self.url


@dataclass(frozen=True)
class Source:
    """One GEO_DATA_SOURCES entry: its stable name (file name, topic keys) and where to get it."""

    spec: str
    name: str
    setting: str  # the variable(s) whose value a 401/403 is about

    def requests(self, s: Fields, now: float) -> list[Request]:
        """The requests to try in order (the first that answers wins) at `now` (unix time)."""
        vendor, _, what = self.spec.partition(":")
        if vendor == "maxmind":
            base = f"{s.maxmind_url.rstrip('/')}/geoip/databases/{what}/download?suffix="
            key = s.maxmind_license_key.reveal() if s.maxmind_license_key else ""
            auth = (s.maxmind_account_id.strip(), key)
            return [Request(base + "tar.gz", Archive.TAR_GZ, auth, None, base + "tar.gz.sha256")]
        if vendor == "dbip":
            base = s.dbip_url.rstrip("/")
            return [
                Request(f"{base}/free/dbip-{what}-lite-{month}.mmdb.gz", Archive.GZIP, missing_ok=True)
                for month in months(now)
            ]
        if vendor == "ipinfo":
            token = s.ipinfo_token.reveal() if s.ipinfo_token else ""
            url = f"{s.ipinfo_url.rstrip('/')}/data/ipinfo_lite.mmdb"
            return [Request(url, Archive.PLAIN, secret_query=("token", token))]
        return [Request(self.spec, archive_of(self.spec))]


def parse_sources(specs: tuple[str, ...]) -> list[Source]:
    """The sources of GEO_DATA_SOURCES (already validated by the settings' checks)."""
    return [parse_source(spec) for spec in specs]


def parse_source(spec: str) -> Source:
    vendor, _, what = spec.partition(":")
    if vendor == "maxmind":
        return Source(spec, f"maxmind-{what}", "GEO_MAXMIND_ACCOUNT_ID/GEO_MAXMIND_LICENSE_KEY")
    if vendor == "dbip":
        return Source(spec, f"dbip-{what}-lite", "GEO_DBIP_URL")
    if vendor == "ipinfo":
        return Source(spec, "ipinfo-lite", "GEO_IPINFO_TOKEN")
    path = urlsplit(spec).path.rsplit("/", 1)[-1]
    stem = re.sub(r"[^A-Za-z0-9-]+", "-", path.split(".")[0]).strip("-")[:40] or "file"
    digest = hashlib.sha256(spec.encode()).hexdigest()[:8]  # two URLs of one file name stay apart
    return Source(spec, f"url-{stem}-{digest}", "GEO_DATA_SOURCES")


def archive_of(url: str) -> Archive:
    path = urlsplit(url).path.lower()
    if path.endswith(".tar.gz"):
        return Archive.TAR_GZ
    return Archive.GZIP if path.endswith(".gz") else Archive.PLAIN


def months(now: float) -> list[str]:
    """This UTC month and the one before, as DB-IP names them (YYYY-MM)."""
    today = datetime.fromtimestamp(now, UTC)
    last = today.replace(day=1) - timedelta(days=1)
    return [today.strftime("%Y-%m"), last.strftime("%Y-%m")]


def checksum_of(text: str) -> str | None:
    """The SHA-256 a checksum file states (`<hex>  <file name>`), lower-case, or None if it states none."""
    first = text.strip().split()[:1]
    if first and re.fullmatch(r"[0-9a-fA-F]{64}", first[0]):
        return first[0].lower()
    return None
