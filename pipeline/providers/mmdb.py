"""Offline geography from MaxMind-format (.mmdb) databases: several files merged, each reloaded when replaced.

`MmdbSource(paths)` opens every file (city/country, ASN, anonymizer and connection-type databases of the
layouts in `mmdb_layouts`), and answers `lookup(ip)` by asking them in order: the first file that knows a
field wins. It is both an `OfflineSource` (sync, for the hot path) and a `GeoProvider` (async `resolve`,
for the provider chain).

Reading mode: every file is copied into memory when opened, and lookups read that private copy, never the
file. A map of the file itself (MODE_MMAP) survives an atomic replacement, but a file rewritten in place
(`cp`, `curl -o`, a crashed download) can raise SIGBUS in the worker or mix the old tree with new data;
a private copy cannot change under a lookup, whatever happens to the file. maxminddb offers that copy as
MODE_MEMORY, but only to its pure-Python reader, which decodes a GeoLite2-City record 10 to 30 times more
slowly than its C extension (`devtools/bench_mmdb.py` measures both), and the C extension reads only
through a map of a path. So, where Linux allows, the copy goes into a sealed memfd (an anonymous in-memory
file that no process can write, shrink or grow once sealed) and the C extension maps that (MODE_MMAP_EXT);
elsewhere the pure-Python reader reads the copy (MODE_FD, i.e. MODE_MEMORY). Either way the cost is
resident memory equal to the files' size per worker, and during a reload briefly the new file beside the
old one: two copies. The memfd is filled by the kernel (`sendfile`) straight from the file, with no Python
copy in between (a test measures it with tracemalloc).

Managed files (`managed=`, the ones the updater downloads into the data dir, providers/updates/) may not
exist yet at start: each is opened when it first appears, in its place after the GEO_MMDB files. A
managed file older than 30 days (its build epoch) is marked `!expired` in the version, so the entries it
answers carry the flag and the version sweep answers the older ones again with it.

`maybe_reload()` costs one `stat` per file when nothing changed. A file whose identity, size or mtime
changed is read again; it replaces the open one only if it is a valid database of the same layout with
another build epoch. A broken, partial or wrong-layout file keeps the old data, is named in `rejected`,
and is logged once per version of the file.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import maxminddb

from pipeline.models import GeoData, LookupResult
from pipeline.providers.base import country_name, offline_result
from pipeline.providers.mmdb_layouts import (
    LAYOUT_FIELDS,
    Layout,
    LayoutError,
    clean_text,
    detect_layout,
    extract,
)
from pipeline.providers.updates.schedule import Freshness, freshness

if TYPE_CHECKING:
    from pipeline.providers.base import GeoProvider, OfflineSource

try:
    import fcntl

    from maxminddb.extension import Reader as _CExtensionReader  # noqa: F401  (only its presence counts)
except ImportError:  # not POSIX (no memfd either), or maxminddb installed without its C extension
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

MISS = "not in offline data"
# Looked up in every file as it is opened: they exercise its search tree and data section, and their
# records show its layout. Long-allocated addresses that every global database answers.
PROBE_IPS = ("8.8.8.8", "1.1.1.1", "81.2.69.142", "185.1.1.1", "2001:4860:4860::8888", "2a00:1450::1")

Signature = tuple[int, int, int, int]  # device, inode, size, mtime (ns): a changed file changes one of them
# The fast reader needs the C extension, memfd with seals (Linux >= 3.17) and /proc to open the memfd by path
C_READER = fcntl is not None and hasattr(fcntl, "F_ADD_SEALS") and os.path.isdir("/proc/self/fd")


class MmdbLoadError(ValueError):
    """A file that cannot serve: unreadable, not a MaxMind DB, unknown or changed layout, failing lookups."""


@dataclass(frozen=True, slots=True)
class MmdbFile:
    """One open database file and what it was when read."""

    path: str
    reader: maxminddb.Reader
    layout: Layout
    database_type: str  # from the metadata, cleaned
    build_epoch: int
    signature: Signature
    ipv6: bool  # False: an IPv4-only tree, never asked about IPv6 addresses

    @property
    def label(self) -> str:
        return f"{self.database_type}@{self.build_epoch}"


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """The files and their version, swapped as one object so a lookup never sees half a reload."""

    files: tuple[MmdbFile, ...]
    version: str


def open_mmdb(path: str, layout: Layout | None = None) -> MmdbFile:
    """Read and check one database; with `layout`, it must have that layout. Raises MmdbLoadError."""
    try:
        with open(path, "rb") as handle:
            before = os.fstat(handle.fileno())
            copy = _copy(handle, before.st_size)
            after = os.fstat(handle.fileno())
    except OSError as exc:
        raise MmdbLoadError(f"cannot read: {exc.strerror or exc}") from exc
    signature = _signature(before)
    try:
        if _size(copy) != before.st_size or _signature(after) != signature:
            raise MmdbLoadError("changed while being read (still being written?)")
        try:  # anything a malformed file makes the reader raise means the same: not a database we can use
            reader = _reader(copy)
            meta = reader.metadata()
            ipv6 = meta.ip_version == 6
            records = [reader.get(ip) for ip in PROBE_IPS if ipv6 or ":" not in ip]
        except Exception as exc:
            raise MmdbLoadError(f"not a valid MaxMind DB ({type(exc).__name__}: {exc})") from exc
    finally:
        if isinstance(copy, int):
            os.close(copy)  # the reader's map keeps the sealed copy alive until the reader is dropped
        del copy  # the pure-Python reader holds its own
    epoch = meta.build_epoch
    if meta.binary_format_major_version != 2 or not isinstance(epoch, int) or isinstance(epoch, bool):
        raise MmdbLoadError("unsupported metadata (format version or build epoch)")
    try:
        found = detect_layout(meta.database_type, records)
    except LayoutError as exc:
        raise MmdbLoadError(str(exc)) from exc
    if layout is not None and found is not layout:
        raise MmdbLoadError(f"layout {found} where this path held {layout}")
    kind = (clean_text(meta.database_type, 64) or "unknown").replace("+", "_").replace("@", "_")
    return MmdbFile(path, reader, found, kind, epoch, signature, ipv6)


def _copy(handle: io.BufferedReader, size: int) -> bytes | int:
    """A private copy of the open file: a memfd holding it (the fast reader), or its bytes.

    The memfd is filled by the kernel (`sendfile`), never through a Python buffer, so opening a file
    (a reload) holds one new copy beside the old one, not two.
    """
    if not C_READER:
        return handle.read()
    fd = os.memfd_create("geo-pipeline-mmdb", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        copied = 0
        while copied < size:
            sent = os.sendfile(fd, handle.fileno(), copied, size - copied)
            if sent == 0:  # the file shrank under us: the size check reports it
                break
            copied += sent
    except BaseException:
        os.close(fd)
        raise
    return fd


def _size(copy: bytes | int) -> int:
    return os.fstat(copy).st_size if isinstance(copy, int) else len(copy)


def _reader(copy: bytes | int) -> maxminddb.Reader:
    """A reader over a private copy: see "Reading mode" above."""
    if isinstance(copy, bytes):
        return maxminddb.open_database(io.BytesIO(copy), maxminddb.MODE_FD)
    seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
    fcntl.fcntl(copy, fcntl.F_ADD_SEALS, seals)
    return maxminddb.open_database(f"/proc/self/fd/{copy}", maxminddb.MODE_MMAP_EXT)


class MmdbSource:
    """Country, place and AS of an IP from one or more .mmdb files (name "mmdb")."""

    name = "mmdb"
    max_batch = 1_000  # a batch blocks the event loop: ~30 ms for City+ASN files with the C reader

    def __init__(
        self, paths: Sequence[str | os.PathLike[str]], managed: Sequence[str | os.PathLike[str]] = ()
    ) -> None:
        if not paths and not managed:
            raise ValueError("no .mmdb file given")
        self.managed = [os.fspath(p) for p in managed]  # opened when they appear (updater's downloads)
        files = []
        for path in [os.fspath(p) for p in paths]:
            try:
                files.append(open_mmdb(path))
            except MmdbLoadError as exc:
                raise MmdbLoadError(f"{path}: {exc}") from exc
            log.info("mmdb: %s opened as %s (%s)", path, files[-1].label, files[-1].layout)
        self.rejected: dict[str, str] = {}  # path -> why the file now at that path is not used
        self._reported: set[tuple[str, object]] = set()  # (path, bad file version) already logged
        self._reload_lock = threading.Lock()
        self._snapshot = _snapshot(self._appeared(files), self.managed)  # managed files already there

    @property
    def version(self) -> str:
        """ "mmdb:<database_type>@<build_epoch>+..." for the files in order."""
        return self._snapshot.version

    @property
    def files(self) -> tuple[MmdbFile, ...]:
        return self._snapshot.files

    def lookup(self, ip: str) -> GeoData | None:
        """Merged answer of all files for a normalised IP (first file that knows a field wins), or None."""
        return self._lookup(self._snapshot.files, ip)

    def lookup_with_version(self, ip: str) -> tuple[GeoData | None, str]:
        """`lookup` and the version of the data that answered it, consistent even across a reload."""
        snapshot = self._snapshot
        return self._lookup(snapshot.files, ip), snapshot.version

    async def resolve(self, ips: Sequence[str]) -> dict[str, LookupResult]:
        results: dict[str, LookupResult] = {}
        for ip in ips:
            geo, version = self.lookup_with_version(ip)
            results[ip] = offline_result(geo, self.name, MISS, version)
        return results

    def maybe_reload(self) -> bool:
        """Reopen the files that were replaced by a valid one with another build epoch; True if any was.

        One `stat` per file when nothing changed. Safe to run in a thread beside lookups; a call made
        while another is reloading returns False at once.
        """
        if not self._reload_lock.acquire(blocking=False):
            return False
        try:
            old = self._snapshot
            files = [self._check(current) for current in old.files]
            files = self._appeared(files)
            snapshot = _snapshot(files, self.managed)
            if snapshot.version != old.version or files != list(old.files):
                self._snapshot = snapshot
            return self._snapshot.version != old.version
        finally:
            self._reload_lock.release()

    def _appeared(self, files: list[MmdbFile]) -> list[MmdbFile]:
        """`files` with every managed file that appeared since, opened, each in its place at the end."""
        known = {f.path for f in files}
        for path in self.managed:
            if path in known or not os.path.exists(path):
                continue
            try:
                files.append(open_mmdb(path))
            except MmdbLoadError as exc:
                self.rejected[path] = str(exc)
                continue
            log.info("mmdb: %s appeared, opened as %s (%s)", path, files[-1].label, files[-1].layout)
        order = {path: i for i, path in enumerate(self.managed)}
        return sorted(files, key=lambda f: order.get(f.path, -1))  # GEO_MMDB files first, as given

    def _check(self, current: MmdbFile) -> MmdbFile:
        """The file to use for `current.path` from now on: `current`, or a newer version of it."""
        path = current.path
        try:
            signature = _signature(os.stat(path))
        except OSError as exc:
            self._reject(current, "missing", f"cannot stat: {exc.strerror or exc}")
            return current
        self._reported.discard((path, "missing"))
        if signature == current.signature:
            self.rejected.pop(path, None)  # the open file is back (a bad replacement was moved away)
            return current
        if (path, signature) in self._reported:
            return current  # this bad version was read and reported already
        try:
            candidate = open_mmdb(path, current.layout)
        except MmdbLoadError as exc:
            self._reject(current, signature, str(exc))
            return current
        self.rejected.pop(path, None)
        if (candidate.database_type, candidate.build_epoch) == (current.database_type, current.build_epoch):
            return replace(current, signature=candidate.signature)  # same build rewritten: keep the reader
        log.info("mmdb: %s reloaded: %s -> %s", path, current.label, candidate.label)
        return candidate

    def _reject(self, current: MmdbFile, version: object, why: str) -> None:
        self.rejected[current.path] = why
        if (current.path, version) not in self._reported:
            self._reported.add((current.path, version))
            log.warning("mmdb: %s not reloaded, still using %s: %s", current.path, current.label, why)

    def _lookup(self, files: tuple[MmdbFile, ...], ip: str) -> GeoData | None:
        found: dict[str, Any] = {}
        for db in files:
            if found.keys() >= LAYOUT_FIELDS[db.layout] or (not db.ipv6 and ":" in ip):
                continue
            try:
                record = db.reader.get(ip)
            except ValueError:  # not an IP address: callers pass normalised ones, a miss is the safe answer
                continue
            except Exception as exc:  # a corrupt region of a file that opened fine: that file has no answer
                if (db.path, ("lookup", db.signature)) not in self._reported:
                    self._reported.add((db.path, ("lookup", db.signature)))
                    log.warning("mmdb: %s (%s): lookup of %s failed: %r", db.path, db.label, ip, exc)
                continue
            if isinstance(record, dict):
                for field, value in extract(db.layout, record).items():
                    found.setdefault(field, value)
        if not found:
            return None
        if "country_code" in found and "country_name" not in found:
            found["country_name"] = country_name(found["country_code"])
        return GeoData(**found)


def _snapshot(files: Sequence[MmdbFile], managed: Sequence[str] = (), now: float | None = None) -> _Snapshot:
    now = time.time() if now is None else now

    def label(f: MmdbFile) -> str:
        expired = f.path in managed and freshness(f.build_epoch, now) is Freshness.EXPIRED
        return f.label + ("!expired" if expired else "")

    return _Snapshot(tuple(files), "mmdb:" + "+".join(label(f) for f in files))


def _signature(stat: os.stat_result) -> Signature:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


if TYPE_CHECKING:

    def _fits(source: MmdbSource) -> tuple[OfflineSource, GeoProvider]:
        """mypy's proof that the source serves both as the hot path's offline source and in the chain."""
        return source, source
