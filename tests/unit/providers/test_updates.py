"""The pure parts of the offline-data updater: vendor URLs and secrets, the schedule, the daily cap and
back-off, staleness, unpacking, manifests, chunking and assembly with SHA-256 checks, and the settings."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from pipeline.config.checks import source_problem
from pipeline.config.secret import Secret
from pipeline.config.settings import Settings
from pipeline.errors import ConfigError
from pipeline.providers.updates import builds, schedule
from pipeline.providers.updates.builds import BuildError, Manifest, TopicState
from pipeline.providers.updates.sources import Archive, checksum_of, months, parse_source

NOW = 1_767_225_600.0 + 5 * 86400  # 2026-01-06 00:00 UTC


def _settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "providers": ("mmdb", "offline"),
        "data_sources": ("maxmind:GeoLite2-City",),
        "maxmind_account_id": "42",
        "maxmind_license_key": Secret("sekret-key"),
        "ipinfo_token": Secret("tok-en"),
    }
    values.update(overrides)
    return Settings.from_env({}, **values)


def test_maxmind_uses_the_permalink_with_basic_auth_and_its_sha256_file() -> None:
    """maxmind:<edition> asks the download API's tar.gz with (account, key) and names the .sha256 file."""
    [request] = parse_source("maxmind:GeoLite2-ASN").requests(_settings(), NOW)
    assert request.url == "https://download.maxmind.com/geoip/databases/GeoLite2-ASN/download?suffix=tar.gz"
    assert request.checksum_url == request.url + ".sha256"
    assert request.auth == ("42", "sekret-key") and request.archive is Archive.TAR_GZ
    assert "sekret-key" not in repr(request)


def test_dbip_asks_this_month_then_last_month() -> None:
    """dbip:<kind> tries this UTC month's .mmdb.gz, then the previous one (a 404 early in a month)."""
    requests = parse_source("dbip:asn").requests(_settings(), NOW)
    assert [r.url for r in requests] == [
        "https://download.db-ip.com/free/dbip-asn-lite-2026-01.mmdb.gz",
        "https://download.db-ip.com/free/dbip-asn-lite-2025-12.mmdb.gz",
    ]
    assert all(r.missing_ok and r.archive is Archive.GZIP for r in requests)
    assert months(NOW) == ["2026-01", "2025-12"]


def test_the_ipinfo_token_never_shows() -> None:
    """ipinfo:lite puts the token in the query only at request time; `shown` redacts it."""
    [request] = parse_source("ipinfo:lite").requests(_settings(), NOW)
    assert request.secret_query == ("token", "tok-en")
    assert request.shown == "https://ipinfo.io/data/ipinfo_lite.mmdb?token=REDACTED"
    assert "tok-en" not in repr(request)


def test_a_url_source_gets_a_stable_distinct_name_and_its_archive_kind() -> None:
    """Plain URLs: the archive from the suffix, a file name from the URL plus a hash of it."""
    a = parse_source("https://example.com/x/GeoLite2-City.tar.gz")
    b = parse_source("https://mirror.example/GeoLite2-City.tar.gz")
    assert a.name.startswith("url-GeoLite2-City-") and a.name != b.name
    assert a.requests(_settings(), NOW)[0].archive is Archive.TAR_GZ
    assert parse_source("https://e.com/a.mmdb.gz").requests(_settings(), NOW)[0].archive is Archive.GZIP


@pytest.mark.parametrize(
    ("spec", "ok"),
    [
        ("maxmind:GeoLite2-City", True),
        ("dbip:city", True),
        ("ipinfo:lite", True),
        ("https://e.com/a.mmdb", True),
        ("http://127.0.0.1:9/a.tar.gz", True),
        ("http://e.com/a.mmdb", False),
        ("https://e.com/a.zip", False),
        ("dbip:town", False),
        ("maxmind:Geo Lite", False),
        ("geolite", False),
    ],
)
def test_source_grammar(spec: str, ok: bool) -> None:
    """Each GEO_DATA_SOURCES entry is accepted or refused with a fix."""
    assert (source_problem(spec) == "") is ok


def test_settings_refuse_missing_credentials_and_clear_text_hosts_without_printing_secrets() -> None:
    """maxmind needs the account and key, ipinfo its token; a non-loopback http vendor host is refused."""
    with pytest.raises(ConfigError) as caught:
        _settings(
            data_sources=("maxmind:GeoLite2-City", "ipinfo:lite"),
            maxmind_license_key=None,
            ipinfo_token=None,
            maxmind_url="http://maxmind.example",
        )
    text = str(caught.value)
    assert "GEO_MAXMIND_LICENSE_KEY" in text and "GEO_IPINFO_TOKEN" in text and "GEO_MAXMIND_URL" in text
    assert "sekret" not in repr(_settings().describe())


def test_checksum_file_first_word() -> None:
    """The SHA-256 file's first word is the digest; anything else states none."""
    digest = "A" * 64
    assert checksum_of(f"{digest}  GeoLite2-City_20260101.tar.gz\n") == "a" * 64
    assert checksum_of("<html>") is None and checksum_of("") is None


def test_schedule_jitter_and_backoff() -> None:
    """Next check: interval plus a drawn share of jitter; back-off doubles up to its cap."""
    assert schedule.next_check(1000.0, 1000.0, 86400, 3600, 0.5) == 1000 + 86400 + 1800
    assert schedule.next_check(None, 50.0, 86400, 3600, 1.0) == 50 + 3600  # first check: a little spread
    assert [schedule.backoff(n, 300, 3600) for n in range(6)] == [0, 300, 600, 1200, 2400, 3600]


def test_the_cap_holds_until_the_next_utc_day() -> None:
    """At the cap no download starts, until midnight UTC; under it one may."""
    refused = schedule.may_download(10, 10, 0.0, NOW + 3600)
    assert not refused.allowed and "10/10" in refused.reason and refused.retry_at == NOW + 86400
    assert schedule.may_download(9, 10, 0.0, NOW).allowed
    assert schedule.day_of(NOW) == "2026-01-06"


def test_freshness_warns_at_25_days_and_expires_at_30() -> None:
    """Age from the build epoch: fresh, old from 25 days, expired from 30."""
    day = 86400
    assert schedule.freshness(int(NOW - 24 * day), NOW) is schedule.Freshness.FRESH
    assert schedule.freshness(int(NOW - 25 * day), NOW) is schedule.Freshness.OLD
    assert schedule.freshness(int(NOW - 30 * day), NOW) is schedule.Freshness.EXPIRED


def _tar(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_unpack_finds_the_one_mmdb_and_refuses_broken_archives() -> None:
    """tar.gz: exactly one .mmdb; gz: the whole stream, its CRC checked; truncation and bombs refused."""
    assert builds.unpack(_tar({"x/COPYRIGHT.txt": b"c", "x/a.mmdb": b"db"}), Archive.TAR_GZ, 100) == b"db"
    with pytest.raises(BuildError, match=r"2 \.mmdb"):
        builds.unpack(_tar({"a.mmdb": b"1", "b.mmdb": b"2"}), Archive.TAR_GZ, 100)
    packed = gzip.compress(b"x" * 1000)
    assert builds.unpack(packed, Archive.GZIP, 1000) == b"x" * 1000
    with pytest.raises(BuildError):
        builds.unpack(packed[: len(packed) // 2], Archive.GZIP, 1000)
    with pytest.raises(BuildError, match="GEO_DATA_MAX_BYTES"):
        builds.unpack(packed, Archive.GZIP, 999)
    with pytest.raises(BuildError):
        builds.unpack(_tar({"a.mmdb": b"x" * 100})[:-40], Archive.TAR_GZ, 1000)


def _publish(state: TopicState, source: str, data: bytes, chunk: int = 4) -> Manifest:
    digest = builds.sha256(data)
    manifest = Manifest(source, 1, "T", "maxmind", len(data), digest, builds.chunk_count(len(data), chunk),
                        0.0, "w1")
    for i, piece in enumerate(builds.chunks(data, chunk)):
        state.apply(manifest.chunk_key(i), piece)
    state.apply(builds.manifest_key(source), manifest.to_json())
    return manifest


def test_chunks_assemble_to_the_build_and_a_bad_chunk_is_refused() -> None:
    """A build cut into chunks comes back whole; a missing or altered chunk fails the SHA-256 check."""
    state = TopicState()
    manifest = _publish(state, "s", b"0123456789")
    assert manifest.chunks == 3 and state.manifest("s") == manifest
    assert state.assemble(manifest) == b"0123456789"
    state.apply(manifest.chunk_key(1), b"XXXX")
    with pytest.raises(BuildError, match="SHA-256"):
        state.assemble(manifest)
    state.apply(manifest.chunk_key(2), None)
    with pytest.raises(BuildError, match="missing"):
        state.assemble(manifest)
    assert max(len(c) for c in builds.chunks(b"x" * (3 * builds.CHUNK_BYTES))) < 1024 * 1024


def test_old_builds_and_old_days_are_obsolete_the_current_build_is_kept() -> None:
    """After a new manifest, the older build's chunks and earlier days' counts are to be deleted."""
    state = TopicState()
    old = _publish(state, "s", b"old build")
    new = _publish(state, "s", b"the new build")
    state.apply(builds.count_key("s", "2026-01-05"), b'{"count": 3}')
    state.apply(builds.count_key("s", "2026-01-06"), b'{"count": 1}')
    obsolete = set(state.obsolete("s", new, "2026-01-06"))
    assert obsolete == {old.chunk_key(i) for i in range(old.chunks)} | {builds.count_key("s", "2026-01-05")}
    assert state.count("s", "2026-01-06") == 1 and state.count("other", "2026-01-06") == 0


def test_a_manifest_of_another_format_or_malformed_is_ignored() -> None:
    """Readers skip manifests they cannot read rather than assembling garbage."""
    assert Manifest.from_json(b"{") is None
    assert Manifest.from_json(b'{"source": "s"}') is None
    good = Manifest("s", 1, "T", "asn", 3, "a" * 64, 1, 0.0, "w")
    assert Manifest.from_json(good.to_json()) == good
    assert Manifest.from_json(good.to_json().replace(b'"format": 1', b'"format": 2')) is None
