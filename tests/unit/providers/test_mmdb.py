"""MmdbSource against .mmdb files the tests write: layouts, merging, misses, hot reload, hostile data."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import maxminddb
import pytest
from mmdb_writer import MmdbU64

import pipeline.providers.mmdb
from pipeline.devtools.mmdb_files import GEOLITE2_CITY, asn_record, write_mmdb
from pipeline.models import GeoData, LookupResult, Resolved, TransientFailure
from pipeline.providers.base import OfflineProvider, ProviderChain
from pipeline.providers.mmdb import MISS, MmdbLoadError, MmdbSource, open_mmdb
from pipeline.providers.mmdb_layouts import MAX_TEXT_CHARS, Layout
from tests.support.mmdb import (
    BERLIN,
    EPOCH,
    KNOWN_IPS,
    MISSING_IPS,
    NETWORKS,
    SYDNEY,
    VENDORS,
    expected,
    moved,
    publish,
    write_layout,
)

ALL_IPS = [*KNOWN_IPS, *MISSING_IPS]
MOVED = tuple(moved(n, BERLIN) for n in NETWORKS)  # a later build where every network moved to Berlin


def mmdb_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "pipeline.providers.mmdb" and r.levelno >= logging.WARNING
    ]


@pytest.fixture(params=["c-extension", "pure-python"])
def reader_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with each reader: the C extension over a sealed memfd, and the pure-Python fallback."""
    if request.param == "c-extension" and not pipeline.providers.mmdb.C_READER:
        pytest.skip("no C extension reader on this platform")
    monkeypatch.setattr(pipeline.providers.mmdb, "C_READER", request.param == "c-extension")
    return str(request.param)


# --- layouts --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_each_layout_answers_known_ipv4_and_ipv6_networks(
    tmp_path: Path, vendor: str, reader_mode: str
) -> None:
    """Every supported vendor layout answers its IPv4 and IPv6 networks with the documented fields."""
    source = MmdbSource([write_layout(tmp_path, vendor)])
    assert source.files[0].layout is VENDORS[vendor].layout
    for ip in ALL_IPS:
        assert source.lookup(ip) == expected(vendor, ip), ip


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_version_names_database_type_and_build_epoch(tmp_path: Path, vendor: str) -> None:
    """The version is "mmdb:<database_type>@<build_epoch>" of the file."""
    source = MmdbSource([write_layout(tmp_path, vendor, build_epoch=EPOCH + 7)])
    assert source.version == f"mmdb:{VENDORS[vendor].database_type}@{EPOCH + 7}"


def test_layout_is_told_by_record_shape_when_the_type_says_nothing(tmp_path: Path) -> None:
    """A file whose database_type names no known layout is recognised by its records at probe addresses."""
    source = MmdbSource([write_layout(tmp_path, "geolite2-asn", database_type="Acme-Prefixes")])
    assert source.files[0].layout is Layout.ASN
    assert source.lookup("8.8.8.8") == GeoData(asn=15169, as_name="GOOGLE")
    assert source.version == f"mmdb:Acme-Prefixes@{EPOCH}"


def test_type_and_records_that_disagree_are_refused_at_start(tmp_path: Path) -> None:
    """A file calling itself a City database but holding ASN records is a configuration error."""
    path = write_layout(tmp_path, "geolite2-asn", database_type=GEOLITE2_CITY)
    with pytest.raises(MmdbLoadError, match="means maxmind but its records look asn"):
        MmdbSource([path])


def test_unrecognisable_file_is_refused_at_start(tmp_path: Path) -> None:
    """A valid database of unknown type whose records show no known layout is refused, naming the path."""
    path = write_mmdb(tmp_path / "odd.mmdb", "Acme", [("8.8.8.0/24", {"colour": "blue"})], build_epoch=EPOCH)
    with pytest.raises(MmdbLoadError, match=r"odd\.mmdb: unknown layout"):
        MmdbSource([path])


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, "cannot read"), (b"", "not a valid MaxMind DB"), (b"GIF89a" * 1000, "not a valid MaxMind DB")],
    ids=["missing", "empty", "garbage"],
)
def test_unreadable_files_are_refused_at_start(tmp_path: Path, content: bytes | None, match: str) -> None:
    """A missing, empty or garbage file fails construction with MmdbLoadError naming the file."""
    path = tmp_path / "db.mmdb"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MmdbLoadError, match=match):
        MmdbSource([path])


def test_no_paths_is_an_error() -> None:
    """A source needs at least one file."""
    with pytest.raises(ValueError, match=r"no \.mmdb file"):
        MmdbSource([])


def test_ipv4_only_database_answers_none_for_ipv6(tmp_path: Path) -> None:
    """An IPv4-only tree is never asked about an IPv6 address: the answer is None, not an exception."""
    networks = [("8.8.8.0/24", asn_record(15169, "GOOGLE"))]
    path = write_mmdb(tmp_path / "v4.mmdb", "GeoLite2-ASN", networks, build_epoch=EPOCH, ip_version=4)
    source = MmdbSource([path])
    assert source.lookup("8.8.8.8") == GeoData(asn=15169, as_name="GOOGLE")
    assert source.lookup("2001:4860:4860::8888") is None


def test_not_an_ip_is_a_miss_not_an_exception(tmp_path: Path) -> None:
    """Callers pass normalised IPs; anything else still gets None rather than an exception."""
    source = MmdbSource([write_layout(tmp_path, "geolite2-city")])
    assert source.lookup("not-an-ip") is None
    assert source.lookup("") is None


# --- merging --------------------------------------------------------------------------------------------


def test_city_and_asn_merge_into_one_answer(tmp_path: Path) -> None:
    """City and ASN files together give place and AS in one GeoData; the version names both files."""
    city = write_layout(tmp_path, "geolite2-city")
    asn = write_layout(tmp_path, "geolite2-asn", build_epoch=EPOCH + 1)
    source = MmdbSource([city, asn])
    assert source.lookup("8.8.8.8") == GeoData(
        "US", "United States", "California", "Mountain View", 37.4, -122.1, 15169, "GOOGLE"
    )
    assert source.lookup("2a02:2e0:3fe:1001::1") == GeoData(
        "DE", "Germany", "Land Berlin", "Berlin", 52.5196, 13.4069, 12306, "Plus.line AG"
    )
    assert source.version == f"mmdb:GeoLite2-City@{EPOCH}+GeoLite2-ASN@{EPOCH + 1}"


def test_anonymizer_and_connection_type_files_add_the_flags_to_the_place(tmp_path: Path) -> None:
    """City, ASN, Anonymous-IP and Connection-Type files together: place, AS and the three flags in one
    answer; an address the anonymizer or connection file does not list keeps those flags None, not False;
    a file of flags alone still answers (no country: a transient miss for the chain, like an ASN file)."""
    city = write_layout(tmp_path, "geolite2-city")
    asn = write_layout(tmp_path, "geolite2-asn")
    anonymous = write_layout(tmp_path, "geoip2-anonymous-ip")
    connection = write_layout(tmp_path, "geoip2-connection-type")
    source = MmdbSource([city, asn, anonymous, connection])
    layouts = [Layout.MAXMIND, Layout.ASN, Layout.ANONYMOUS, Layout.CONNECTION]
    assert [f.layout for f in source.files] == layouts
    aaisp = "Andrews & Arnold Ltd"
    place = GeoData("GB", "United Kingdom", "England", "London", 51.5142, -0.0931, 20712, aaisp)
    assert source.lookup("81.2.69.142") == GeoData(**{**place.to_dict(), "proxy": True, "mobile": True})
    google = source.lookup("8.8.8.8")
    assert google is not None and (google.proxy, google.hosting, google.mobile) == (None, True, False)
    berlin = source.lookup("2a02:2e0:3fe:1001::1")  # listed by neither flag file
    assert berlin is not None and berlin.city == "Berlin"
    assert (berlin.proxy, berlin.hosting, berlin.mobile) == (None, None, None)
    for ip in ALL_IPS:  # the merged answer is each file's own answer, field by field
        merged = source.lookup(ip)
        for vendor in ("geolite2-city", "geolite2-asn", "geoip2-anonymous-ip", "geoip2-connection-type"):
            alone = expected(vendor, ip)
            for field, value in (alone.to_dict() if alone else {}).items():
                assert value is None or (merged is not None and getattr(merged, field) == value), (ip, field)
    flags_only = MmdbSource([anonymous])
    assert asyncio.run(flags_only.resolve(["1.1.1.1"]))["1.1.1.1"] == TransientFailure(MISS, "mmdb")


def test_first_file_that_knows_a_field_wins(tmp_path: Path) -> None:
    """Where two files know a field the first listed wins; fields only a later file knows are added."""
    city = write_layout(tmp_path, "dbip-city-lite")
    ipinfo = write_layout(tmp_path, "ipinfo-lite", networks=tuple(moved(n, SYDNEY) for n in NETWORKS))
    city_first = MmdbSource([city, ipinfo]).lookup("81.2.69.142")
    ipinfo_first = MmdbSource([ipinfo, city]).lookup("81.2.69.142")
    assert city_first == GeoData(
        "GB", "United Kingdom", "England", "London", 51.5142, -0.0931, asn=64_512, as_name="MOVED"
    )
    assert ipinfo_first == GeoData(
        "AU", "Australia", "England", "London", 51.5142, -0.0931, asn=64_512, as_name="MOVED"
    )


def test_a_file_missing_the_address_leaves_the_fields_to_the_next(tmp_path: Path) -> None:
    """An address only the second file covers is answered by the second file alone."""
    city = write_layout(tmp_path, "geolite2-city", networks=NETWORKS[:1])
    asn = write_layout(tmp_path, "geolite2-asn")
    source = MmdbSource([city, asn])
    assert source.lookup("1.1.1.1") == GeoData(asn=13335, as_name="CLOUDFLARENET")


# --- provider ------------------------------------------------------------------------------------------


def test_resolve_is_resolved_with_a_country_and_a_transient_miss_otherwise(tmp_path: Path) -> None:
    """resolve answers Resolved("mmdb") with a country and the files' version; a miss or an AS-only answer
    is a geo-less miss."""
    country = write_layout(tmp_path, "geolite2-country", networks=NETWORKS[:1])
    asn = write_layout(tmp_path, "geolite2-asn")
    source = MmdbSource([country, asn])
    results = asyncio.run(source.resolve(["8.8.8.8", "1.1.1.1", "9.9.9.9"]))
    assert results == {
        "8.8.8.8": Resolved(
            GeoData("US", "United States", asn=15169, as_name="GOOGLE"), "mmdb", source.version
        ),
        "1.1.1.1": TransientFailure(MISS, "mmdb"),
        "9.9.9.9": TransientFailure(MISS, "mmdb"),
    }
    assert MISS == "not in offline data"


def test_country_name_falls_back_to_the_code_table(tmp_path: Path) -> None:
    """A database that gives a country code without an English name gets the name the iptocc path uses."""
    record = {"country": {"iso_code": "de", "names": {"fr": "Allemagne"}}}
    path = write_mmdb(tmp_path / "c.mmdb", "GeoLite2-Country", [("8.8.8.0/24", record)], build_epoch=EPOCH)
    assert MmdbSource([path]).lookup("8.8.8.8") == GeoData("DE", "Germany")


def test_stands_in_a_provider_chain_after_a_failing_provider(tmp_path: Path) -> None:
    """As the chain's fallback it fills a transient failure's geo; iptocc after it fills what it misses."""

    class Failing:
        name = "ipapi"
        max_batch = 100

        async def resolve(self, ips: Sequence[str]) -> dict[str, LookupResult]:
            return {ip: TransientFailure("HTTP 503", "ipapi") for ip in ips}

    source = MmdbSource([write_layout(tmp_path, "geolite2-country", networks=NETWORKS[:1])])
    chain = ProviderChain([Failing(), source, OfflineProvider()])
    results = asyncio.run(chain.resolve(["8.8.8.8", "1.1.1.1"]))
    iptocc = OfflineProvider().source.version
    assert results["8.8.8.8"] == TransientFailure(
        "HTTP 503", "ipapi", GeoData("US", "United States"), True, source.version
    )
    assert results["1.1.1.1"] == TransientFailure(
        "HTTP 503", "ipapi", GeoData("AU", "Australia"), True, iptocc
    )
    assert chain.max_batch == 100


# --- hot reload -----------------------------------------------------------------------------------------


def test_replaced_file_with_a_new_build_is_reloaded(tmp_path: Path) -> None:
    """A file renamed over with another build epoch is reopened: answers and version switch once."""
    path = write_layout(tmp_path, "geolite2-city")
    source = MmdbSource([path])
    assert source.maybe_reload() is False
    publish(
        write_layout(tmp_path, "geolite2-city", build_epoch=EPOCH + 86400, networks=MOVED, name="new"), path
    )
    assert source.maybe_reload() is True
    assert source.lookup("8.8.8.8") == GeoData("DE", "Germany", "Land Berlin", "Berlin", 52.5196, 13.4069)
    assert source.version == f"mmdb:GeoLite2-City@{EPOCH + 86400}"
    assert source.maybe_reload() is False


def test_lookup_with_version_pairs_each_answer_with_the_data_that_gave_it(tmp_path: Path) -> None:
    """lookup_with_version returns the answer and the version of the files that answered, before and after
    a reload."""
    path = write_layout(tmp_path, "geolite2-asn")
    source = MmdbSource([path])
    assert source.lookup_with_version("8.8.8.8") == (
        GeoData(asn=15169, as_name="GOOGLE"),
        f"mmdb:GeoLite2-ASN@{EPOCH}",
    )
    publish(write_layout(tmp_path, "geolite2-asn", build_epoch=EPOCH + 1, networks=MOVED, name="new"), path)
    assert source.maybe_reload() is True
    assert source.lookup_with_version("8.8.8.8") == (
        GeoData(asn=64_512, as_name="MOVED"),
        f"mmdb:GeoLite2-ASN@{EPOCH + 1}",
    )


def test_a_reload_already_running_makes_another_call_return_at_once(tmp_path: Path) -> None:
    """maybe_reload never runs twice at a time: a call while one runs (another thread) returns False."""
    path = write_layout(tmp_path, "geolite2-asn")
    source = MmdbSource([path])
    publish(write_layout(tmp_path, "geolite2-asn", build_epoch=EPOCH + 1, name="new"), path)
    with source._reload_lock:
        assert source.maybe_reload() is False
    assert source.maybe_reload() is True


def test_unchanged_files_cost_only_a_stat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """maybe_reload on unchanged files never reads them."""
    source = MmdbSource([write_layout(tmp_path, "geolite2-city"), write_layout(tmp_path, "geolite2-asn")])

    def no_read(*args: object) -> None:
        raise AssertionError("read an unchanged file")

    monkeypatch.setattr("pipeline.providers.mmdb.open_mmdb", no_read)
    assert [source.maybe_reload() for _ in range(3)] == [False, False, False]


def test_same_build_rewritten_keeps_the_open_reader(tmp_path: Path) -> None:
    """A new file with the same database type and build epoch (re-download, touch) is not reopened."""
    path = write_layout(tmp_path, "geolite2-city")
    source = MmdbSource([path])
    reader = source.files[0].reader
    publish(write_layout(tmp_path, "geolite2-city", networks=MOVED, name="same-epoch"), path)
    assert source.maybe_reload() is False
    assert source.files[0].reader is reader
    assert source.lookup("8.8.8.8") == expected("geolite2-city", "8.8.8.8")
    assert source.files[0].signature[1] == os.stat(path).st_ino  # the new file is now the one compared


def test_reload_under_a_loop_of_lookups_switches_answers_without_errors(
    tmp_path: Path, reader_mode: str
) -> None:
    """While another thread looks up without pause, files are replaced and reloaded several times: no
    exception, every answer is a whole answer of one version, and the last version's answers win."""
    city, asn = write_layout(tmp_path, "geolite2-city"), write_layout(tmp_path, "geolite2-asn")
    source = MmdbSource([city, asn])
    old = source.lookup("8.8.8.8")
    versions = [
        (MOVED, GeoData("DE", "Germany", "Land Berlin", "Berlin", 52.5196, 13.4069, 64_512, "MOVED")),
        (NETWORKS, old),
    ]
    allowed = {old, versions[0][1]}
    seen: set[GeoData | None] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def look() -> None:
        try:
            while not stop.is_set():
                seen.add(source.lookup("8.8.8.8"))
                assert source.lookup("9.9.9.9") is None
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=look)
    worker.start()
    try:
        for round_ in range(1, 5):
            networks, answer = versions[round_ % 2 - 1]
            epoch = EPOCH + round_
            publish(
                write_layout(tmp_path, "geolite2-city", build_epoch=epoch, networks=networks, name="c"), city
            )
            publish(
                write_layout(tmp_path, "geolite2-asn", build_epoch=epoch, networks=networks, name="a"), asn
            )
            assert source.maybe_reload() is True
            assert source.lookup("8.8.8.8") == answer
            assert source.version == f"mmdb:GeoLite2-City@{epoch}+GeoLite2-ASN@{epoch}"
    finally:
        stop.set()
        worker.join()
    assert not errors
    assert seen <= allowed and len(seen) == 2


@pytest.mark.parametrize(
    "damage",
    ["truncated", "garbage", "empty", "wrong-layout"],
)
def test_bad_replacement_keeps_the_old_data_and_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str, reader_mode: str
) -> None:
    """A truncated, garbage, empty or wrong-layout file renamed over the database keeps the old data,
    appears in `rejected` and logs one warning however often maybe_reload runs."""
    path = write_layout(tmp_path, "geolite2-city")
    source = MmdbSource([path])
    good = write_layout(tmp_path, "geolite2-city", build_epoch=EPOCH + 1, networks=MOVED, name="next")
    bad = tmp_path / "bad.mmdb"
    if damage == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif damage == "garbage":
        bad.write_bytes(os.urandom(4096))
    elif damage == "empty":
        bad.write_bytes(b"")
    else:
        write_layout(tmp_path, "geolite2-asn", build_epoch=EPOCH + 1, name="bad")
    publish(bad, path)
    caplog.set_level(logging.WARNING, "pipeline.providers.mmdb")
    assert [source.maybe_reload() for _ in range(3)] == [False, False, False]
    assert source.lookup("8.8.8.8") == expected("geolite2-city", "8.8.8.8")
    assert source.version == f"mmdb:GeoLite2-City@{EPOCH}"
    assert path.as_posix() in source.rejected
    warnings = mmdb_warnings(caplog)
    assert len(warnings) == 1 and "still using GeoLite2-City@1700000000" in warnings[0]
    if damage == "wrong-layout":
        assert "layout asn where this path held maxmind" in source.rejected[path.as_posix()]
    publish(good, path)  # the next good build recovers
    assert source.maybe_reload() is True
    assert source.lookup("8.8.8.8") == GeoData("DE", "Germany", "Land Berlin", "Berlin", 52.5196, 13.4069)
    assert source.rejected == {}


def test_open_data_is_a_private_copy_that_in_place_writes_cannot_reach(
    tmp_path: Path, reader_mode: str
) -> None:
    """Overwriting or truncating the file in place (no rename) changes nothing for the open reader: it
    answers from its own copy, so it can neither crash nor mix versions."""
    path = write_layout(tmp_path, "geolite2-city")
    source = MmdbSource([path])
    with open(path, "r+b") as handle:
        handle.write(os.urandom(path.stat().st_size))
    assert [source.lookup(ip) for ip in ALL_IPS] == [expected("geolite2-city", ip) for ip in ALL_IPS]
    path.write_bytes(b"")
    assert [source.lookup(ip) for ip in ALL_IPS] == [expected("geolite2-city", ip) for ip in ALL_IPS]
    assert source.maybe_reload() is False and "not a valid MaxMind DB" in source.rejected[path.as_posix()]


def test_c_extension_reads_a_sealed_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where available, the reader is maxminddb's C extension over a memfd that nobody can write any more."""
    if not pipeline.providers.mmdb.C_READER:
        pytest.skip("no C extension reader on this platform")
    from maxminddb.extension import Reader

    real_open = maxminddb.open_database
    opened: list[str] = []

    def checking_open(database: str, mode: int) -> maxminddb.Reader:
        opened.append(database)
        fd = os.open(database, os.O_WRONLY)
        try:
            with pytest.raises(PermissionError):
                os.write(fd, b"x")
        finally:
            os.close(fd)
        return real_open(database, mode)

    monkeypatch.setattr(maxminddb, "open_database", checking_open)
    source = MmdbSource([write_layout(tmp_path, "geolite2-asn")])
    assert opened and opened[0].startswith("/proc/self/fd/")
    assert isinstance(source.files[0].reader, Reader)
    assert source.lookup("8.8.8.8") == GeoData(asn=15169, as_name="GOOGLE")


def test_file_written_in_place_is_taken_only_once_complete(tmp_path: Path) -> None:
    """A file rewritten in place is refused while half written and reloaded once the writer is done."""
    path = write_layout(tmp_path, "geolite2-city")
    source = MmdbSource([path])
    new = write_layout(
        tmp_path, "geolite2-city", build_epoch=EPOCH + 1, networks=MOVED, name="new"
    ).read_bytes()
    with open(path, "r+b") as handle:  # same inode, as `cp new path` or `curl -o path` would do
        handle.truncate(0)
        handle.write(new[: len(new) // 3])
        handle.flush()
        assert source.maybe_reload() is False
        assert source.lookup("8.8.8.8") == expected("geolite2-city", "8.8.8.8")
        handle.write(new[len(new) // 3 :])
    os.utime(path, ns=(1, 1))  # a new mtime even on file systems with coarse timestamps
    assert source.maybe_reload() is True
    assert source.lookup("8.8.8.8") == GeoData("DE", "Germany", "Land Berlin", "Berlin", 52.5196, 13.4069)


def test_missing_file_keeps_the_old_data_until_it_returns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A deleted file keeps the loaded data (one warning), and a new build at the path is picked up."""
    path = write_layout(tmp_path, "geolite2-asn")
    source = MmdbSource([path])
    path.unlink()
    caplog.set_level(logging.WARNING, "pipeline.providers.mmdb")
    assert [source.maybe_reload() for _ in range(3)] == [False, False, False]
    assert source.lookup("8.8.8.8") == GeoData(asn=15169, as_name="GOOGLE")
    assert len(mmdb_warnings(caplog)) == 1 and "cannot stat" in source.rejected[path.as_posix()]
    write_layout(tmp_path, "geolite2-asn", build_epoch=EPOCH + 1, networks=MOVED)
    assert source.maybe_reload() is True
    assert source.lookup("8.8.8.8") == GeoData(asn=64_512, as_name="MOVED")


def test_a_failing_lookup_is_a_miss_for_that_file_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """If a file that opened fine raises on a lookup (a corrupt region), that file has no answer, the other
    files still answer, and the failure is logged once for that file version."""
    from maxminddb import InvalidDatabaseError

    source = MmdbSource([write_layout(tmp_path, "geolite2-city"), write_layout(tmp_path, "geolite2-asn")])

    def corrupt(ip: str) -> None:
        raise InvalidDatabaseError("The MaxMind DB file's search tree is corrupt")

    class Corrupt:
        get = staticmethod(corrupt)

    object.__setattr__(source.files[0], "reader", Corrupt())  # the C reader's methods cannot be patched
    caplog.set_level(logging.WARNING, "pipeline.providers.mmdb")
    assert [source.lookup("8.8.8.8") for _ in range(3)] == [GeoData(asn=15169, as_name="GOOGLE")] * 3
    assert len(mmdb_warnings(caplog)) == 1


# --- hostile data ---------------------------------------------------------------------------------------


def test_hostile_values_in_the_database_are_sanitised(tmp_path: Path, reader_mode: str) -> None:
    """Control characters, bidi overrides and huge strings are cleaned and capped; a bad country code,
    out-of-range coordinates and an AS number over 32 bits are dropped; the rest of the record is kept."""
    city_record = {
        "country": {"iso_code": "U\x00", "names": {"en": "United\x1b[2J States\u202e"}},
        "subdivisions": [{"names": {"en": "A" * 100_000}}],
        "city": {"names": {"en": "Mountain\r\nView\t"}},
        "location": {"latitude": 91.0, "longitude": -122.1},
    }
    asn = {"autonomous_system_number": MmdbU64(2**40), "autonomous_system_organization": "\u200bEVIL\x07"}
    city = write_mmdb(tmp_path / "c.mmdb", GEOLITE2_CITY, [("8.8.8.0/24", city_record)], build_epoch=EPOCH)
    asn_path = write_mmdb(tmp_path / "a.mmdb", "GeoLite2-ASN", [("8.8.8.0/24", asn)], build_epoch=EPOCH)
    answer = MmdbSource([city, asn_path]).lookup("8.8.8.8")
    assert answer == GeoData(
        country_name="United[2J States", region="A" * MAX_TEXT_CHARS, city="Mountain View", as_name="EVIL"
    )


def test_hostile_database_type_cannot_forge_the_version(tmp_path: Path) -> None:
    """The metadata's database_type enters the version cleaned, capped and without "+" or "@"."""
    networks = [("8.8.8.0/24", asn_record(1, "x"))]
    path = write_mmdb(tmp_path / "a.mmdb", "ASN\n+GeoLite2-City@9" + "x" * 200, networks, build_epoch=EPOCH)
    version = MmdbSource([path]).version
    assert version.startswith("mmdb:ASN _GeoLite2-City_9xxx") and version.endswith(f"@{EPOCH}")
    assert version.count("@") == 1 and "+" not in version and len(version) < 100


# -- a reload holds at most two copies of a file (issue 19, item 13b) ---------------------------------------

PAD = 16 * 1024 * 1024  # bytes added to a small database: large enough that a copy of it stands out
MARKER = b"\xab\xcd\xefMaxMind.com"  # starts the metadata section at the end of every file


def padded(tmp_path: Path, pad: int = PAD) -> Path:
    """A valid database `pad` bytes larger: unused bytes at the end of its data section."""
    small = write_layout(tmp_path, "geolite2-country", name="small")
    raw = small.read_bytes()
    cut = raw.rindex(MARKER)
    big = tmp_path / "big.mmdb"
    big.write_bytes(raw[:cut] + b"\0" * pad + raw[cut:])
    return big


def test_opening_a_file_copies_it_once_into_the_sealed_copy(tmp_path: Path) -> None:
    """With the fast reader, opening (as a reload does) allocates no Python copy of the file beside the
    sealed in-memory copy, so a reload holds the old copy and the new one: two, not three."""
    import tracemalloc

    if not pipeline.providers.mmdb.C_READER:
        pytest.fail("the C reader with memfd is expected on Linux CI")
    path = padded(tmp_path)
    tracemalloc.start()
    try:
        opened = open_mmdb(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert opened.reader.get("81.2.69.142") is not None  # the padded file still answers
    assert peak < PAD // 8, f"a Python copy of the file was made: peak {peak} bytes"
