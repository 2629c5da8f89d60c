"""The HTTP half of a download: one source's requests tried in order, redirects followed, the body bounded
and checked against the vendor's SHA-256 file when there is one.

Every failure becomes a `FetchError` whose text names the shown URL (never a secret) and, for 401/403,
the setting to fix; aiohttp's own exception texts are not passed on, because they carry the URL with its
query (IPinfo's token travels there).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import aiohttp

from pipeline.providers.updates.builds import BuildError, sha256
from pipeline.providers.updates.sources import Request, Source, checksum_of

READ_CHUNK = 1024 * 1024  # bytes read from the socket at a time


class FetchError(Exception):
    """A download that failed; `auth` marks a refusal of the credentials (not worth a retry today)."""

    def __init__(self, text: str, *, auth: bool = False, status: int | None = None) -> None:
        super().__init__(text)
        self.auth, self.status = auth, status


@dataclass(frozen=True)
class Fetched:
    """A download's body and what it came from."""

    request: Request
    body: bytes
    checksum: str | None  # the vendor's SHA-256 of the body, when it publishes one (already checked)


async def fetch(source: Source, requests: list[Request], timeout: float, max_bytes: int) -> Fetched:
    """The first of `requests` that answers, its body checked; FetchError or BuildError otherwise."""
    limits = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 30))
    async with aiohttp.ClientSession(timeout=limits) as session:
        for i, request in enumerate(requests):
            try:
                body = await _get(session, source, request, max_bytes)
            except FetchError as exc:
                if exc.status == 404 and request.missing_ok and i + 1 < len(requests):
                    continue  # not out yet (DB-IP's new month): the next candidate
                raise
            checksum = None
            if request.checksum_url:
                text = (await _get(session, source, _checksum(request), 4096)).decode(errors="replace")
                checksum = checksum_of(text)
                if checksum is None:
                    raise BuildError(f"{_checksum(request).shown}: no SHA-256 in the checksum file")
                if sha256(body) != checksum:
                    raise BuildError(f"{request.shown}: SHA-256 differs from the vendor's (truncated?)")
            return Fetched(request, body, checksum)
    raise FetchError(f"{source.spec}: nothing to download")  # pragma: no cover  (requests is never empty)


def basic_auth(user: str, password: str) -> str:
    """An HTTP basic Authorization value (aiohttp's dropped on a redirect to another host, as MaxMind's
    storage links need none)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _checksum(request: Request) -> Request:
    return Request(request.checksum_url or "", request.archive, request.auth, request.secret_query)


async def _get(session: aiohttp.ClientSession, source: Source, request: Request, max_bytes: int) -> bytes:
    headers = {"Authorization": basic_auth(*request.auth)} if request.auth else None
    params = dict([request.secret_query]) if request.secret_query else None
    try:
        async with session.get(request.url, headers=headers, params=params, allow_redirects=True) as response:
            if response.status in (401, 403):
                raise FetchError(
                    f"{request.shown}: HTTP {response.status}, credentials refused: check {source.setting}",
                    auth=True,
                    status=response.status,
                )
            if response.status != 200:
                raise FetchError(f"{request.shown}: HTTP {response.status}", status=response.status)
            expected = response.content_length
            if expected is not None and expected > max_bytes:
                raise BuildError(f"{request.shown}: {expected} bytes, over GEO_DATA_MAX_BYTES")
            body = bytearray()
            async for piece in response.content.iter_chunked(READ_CHUNK):
                body += piece
                if len(body) > max_bytes:
                    raise BuildError(f"{request.shown}: over GEO_DATA_MAX_BYTES ({max_bytes} bytes)")
            if expected is not None and len(body) != expected:
                raise BuildError(f"{request.shown}: truncated ({len(body)} of {expected} bytes)")
            return bytes(body)
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise FetchError(f"{request.shown}: {type(exc).__name__}") from None
