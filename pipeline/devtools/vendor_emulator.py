"""A local stand-in for the offline-data vendors, so tests and the demo run the real download code.

It answers MaxMind's download API (`/geoip/databases/<edition>/download?suffix=tar.gz` and
`tar.gz.sha256`, HTTP basic auth, a redirect to a storage URL as MaxMind's R2 links do), DB-IP's monthly
Lite files (`/free/dbip-<kind>-lite-<YYYY-MM>.mmdb.gz`) and IPinfo Lite (`/data/ipinfo_lite.mmdb?token=`),
with .mmdb files written by mmdb-writer (`mmdb_files`). Faults on demand: wrong credentials give 401,
downloads past `daily_cap` give 429, `truncate` cuts the next bodies short (the checksum still whole),
`corrupt` serves a well-packed file that is no database, and a new build appears every `rebuild_every`
seconds (or on `new_build()`): its 8.8.8.0/24 moves between the United States and Germany, so a test
sees which build answered.

Counts: `downloads[edition]` (bodies served), `refused` (401s), `limited` (429s).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web

from pipeline.devtools.mmdb_files import (
    GEOLITE2_ASN,
    GEOLITE2_CITY,
    IPINFO_LITE,
    Place,
    asn_record,
    geolite2_city_record,
    ipinfo_lite_record,
    write_mmdb,
)

# build epoch of build 0: five days ago (fresh data); each later build one day later, never in the future
FIRST_EPOCH = (int(time.time()) // 86400 - 5) * 86400
US = Place("US", "United States", "NA", "North America", "California", "Mountain View", 37.4, -122.1)
DE = Place("DE", "Germany", "EU", "Europe", "Land Berlin", "Berlin", 52.5196, 13.4069)
AU = Place("AU", "Australia", "OC", "Oceania", "New South Wales", "Sydney", -33.8688, 151.209)


def build_bytes(edition: str, build: int, epoch: int) -> bytes:
    """The .mmdb of `edition` (a GeoLite2 edition, "dbip-*" or "ipinfo-lite") for build number `build`."""
    google = US if build % 2 == 0 else DE  # the answer that tells builds apart
    asn = 15169 if build % 2 == 0 else 64512
    nets = [("8.8.8.0/24", google, asn, "GOOGLE"), ("1.1.1.0/24", AU, 13335, "CLOUDFLARENET")]
    if "ASN" in edition or edition.startswith("dbip-asn"):
        kind, records = GEOLITE2_ASN, [(n, asn_record(a, name)) for n, _, a, name in nets]
    elif edition.startswith("ipinfo"):
        kind = IPINFO_LITE
        records = [(n, ipinfo_lite_record(p, a, name, "example.com")) for n, p, a, name in nets]
    else:
        kind, records = GEOLITE2_CITY, [(n, geolite2_city_record(p)) for n, p, _, _ in nets]
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "build.mmdb"
        write_mmdb(path, kind, records, build_epoch=epoch)
        return path.read_bytes()


def tar_gz(name: str, data: bytes) -> bytes:
    """`data` as `<name>_<date>/<name>.mmdb` in a tar.gz, as MaxMind packs its databases."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"{name}_20260101/{name}.mmdb")
        info.size, info.mtime = len(data), int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class VendorEmulator:
    """The emulated vendors on 127.0.0.1; `url` is their base (give it to GEO_MAXMIND_URL etc.)."""

    def __init__(
        self, *, account: str = "42", key: str = "test-key", token: str = "test-token",
        daily_cap: int = 30, rebuild_every: float = 0.0,
    ) -> None:
        self.account, self.key, self.token = account, key, token
        self.daily_cap, self.rebuild_every = daily_cap, rebuild_every
        self.build, self.born = 0, time.monotonic()
        self.truncate = self.corrupt = False
        self.downloads: Counter[str] = Counter()
        self.refused = self.limited = 0
        self._cache: dict[tuple[str, int, bool], bytes] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""

    def new_build(self) -> int:
        self.build += 1
        self.born = time.monotonic()
        return self.build

    @property
    def epoch(self) -> int:
        return FIRST_EPOCH + 86400 * self.current()

    def current(self) -> int:
        if self.rebuild_every and time.monotonic() - self.born >= self.rebuild_every:
            self.new_build()
        return self.build

    def body(self, edition: str, archive: str) -> bytes:
        """What a download of `edition` serves now (cached per build)."""
        key = (edition, self.current(), self.corrupt)
        if key not in self._cache:
            data = b"\x00not a maxmind database\x00" * 64 if self.corrupt else build_bytes(
                edition, self.build, self.epoch
            )
            packed = {"tar.gz": lambda: tar_gz(edition, data), "gz": lambda: gzip.compress(data)}
            self._cache[key] = packed.get(archive, lambda: data)()
        return self._cache[key]

    async def start(self, port: int = 0) -> str:
        app = web.Application()
        app.router.add_get("/geoip/databases/{edition}/download", self._maxmind)
        app.router.add_get("/storage/{edition}/{build}", self._storage)
        app.router.add_get("/free/{file}", self._dbip)
        app.router.add_get("/data/ipinfo_lite.mmdb", self._ipinfo)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]  # the port the OS picked
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> VendorEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- routes ----------------------------------------------------------------------------------------

    async def _maxmind(self, request: web.Request) -> web.StreamResponse:
        edition, suffix = request.match_info["edition"], request.query.get("suffix", "")
        expected = "Basic " + base64.b64encode(f"{self.account}:{self.key}".encode()).decode("ascii")
        if request.headers.get("Authorization") != expected:
            self.refused += 1
            return web.Response(status=401, text="Invalid license key\n")
        if suffix == "tar.gz.sha256":
            digest = hashlib.sha256(self.body(edition, "tar.gz")).hexdigest()
            return web.Response(text=f"{digest}  {edition}_20260101.tar.gz\n")
        if suffix != "tar.gz":
            return web.Response(status=400, text="bad suffix\n")
        raise web.HTTPFound(f"/storage/{edition}/{self.current()}")  # as MaxMind's presigned R2 links

    async def _storage(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, request.match_info["edition"], "tar.gz")

    async def _dbip(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["file"]
        this_month = time.strftime("%Y-%m", time.gmtime())
        if not name.endswith(f"-{this_month}.mmdb.gz") or not name.startswith("dbip-"):
            return web.Response(status=404)
        return await self._serve(request, name.rsplit("-", 2)[0], "gz")

    async def _ipinfo(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("token") != self.token:
            self.refused += 1
            return web.Response(status=403, text="invalid token\n")
        return await self._serve(request, "ipinfo-lite", "mmdb")

    async def _serve(self, request: web.Request, edition: str, archive: str) -> web.StreamResponse:
        if sum(self.downloads.values()) >= self.daily_cap:
            self.limited += 1
            return web.Response(status=429, text="Daily download limit reached\n")
        self.downloads[edition] += 1
        body = self.body(edition, archive)
        if not self.truncate:
            return web.Response(body=body, content_type="application/octet-stream")
        response = web.StreamResponse(headers={"Content-Length": str(len(body))})
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        transport: Any = request.transport
        if transport is not None:
            transport.close()  # the connection drops mid-body
        return response
