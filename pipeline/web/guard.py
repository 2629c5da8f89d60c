"""What the HTTP API uses to protect itself from its peers and its probes (I/O helpers; the decisions are
in pipeline/web/ownership.py).

- `Cached`: a check whose answer is reused for a while and whose refresh is single flight: however many
  readiness probes and scrapes arrive at once, one request goes to the broker (or the group coordinator),
  and every caller awaits that one.
- `NetworkResolver`: an aiohttp resolver that keeps only the addresses inside GEO_FORWARD_NETWORKS, so a
  forwarded lookup connects to an allowed address whatever a peer's host name resolves to (checked where
  the connection is made, not before, so a name cannot resolve one way for the check and another for the
  connection).
- `read_capped`: a response body, refused past a size.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from pipeline.web.ownership import address_allowed

T = TypeVar("T")


class Cached(Generic[T]):
    """`get()` returns the last answer of `check` while younger than `ttl` seconds; otherwise it runs
    `check` once for every caller waiting meanwhile (single flight)."""

    def __init__(self, check: Callable[[], Awaitable[T]], ttl: float, initial: T) -> None:
        self._check, self._ttl = check, ttl
        self._value, self._at = initial, -float("inf")
        self._flight: asyncio.Future[T] | None = None
        self.runs = 0  # checks actually made (for tests and metrics)

    def expire(self) -> None:
        """Make the next `get()` check again."""
        self._at = -float("inf")

    async def get(self) -> T:
        if time.monotonic() - self._at < self._ttl:
            return self._value
        if self._flight is None:
            self._flight = asyncio.ensure_future(self._run())
        # shield: one caller giving up (a probe's timeout) must not cancel the check the others await
        return await asyncio.shield(self._flight)

    async def _run(self) -> T:
        try:
            self.runs += 1
            value = await self._check()
            self._value, self._at = value, time.monotonic()
            return value
        finally:
            self._flight = None


class NetworkResolver(AbstractResolver):
    """Resolves as aiohttp does by default, keeping only addresses inside `networks`; none left: OSError."""

    def __init__(self, networks: Sequence[str]) -> None:
        self.networks = tuple(networks)
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        kept = [r for r in found if address_allowed(r["host"], self.networks)]
        if not kept:
            shown = ", ".join(sorted({r["host"] for r in found}))
            raise OSError(0, f"{host} resolves to {shown}, outside GEO_FORWARD_NETWORKS")  # strerror: shown
        return kept

    async def close(self) -> None:
        await self._inner.close()


class TooLarge(ValueError):
    """A peer's answer over the size this worker relays."""


async def read_capped(reply: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body of `reply`, or TooLarge as soon as it passes `limit` bytes (announced or received)."""
    if reply.content_length is not None and reply.content_length > limit:
        raise TooLarge(f"{reply.content_length} bytes announced")
    body = bytearray()
    async for chunk in reply.content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"over {limit} bytes")
    return bytes(body)


def connector(networks: Sequence[str]) -> Any:
    """The forwarding session's connector: limited to `networks` when some are given."""
    return aiohttp.TCPConnector(resolver=NetworkResolver(networks)) if networks else None
