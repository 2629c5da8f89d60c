"""A downloaded build: unpacked from its archive, cut into chunks with a manifest, kept on the data topic,
and put back together (and checked) by every worker.

The data topic (`<app>-geo-data`, compacted, one partition) holds, by key:
- `chunk/<source>/<sha256 prefix>/<index>`: the raw bytes of one chunk of a build's .mmdb (CHUNK_BYTES);
- `manifest/<source>`: the current build (`Manifest`), written after all its chunks, so a reader that
  sees a manifest has seen its chunks; the chunks of older builds are then deleted (tombstones);
- `count/<source>/<UTC day>`: downloads started that day, the daily cap's memory across restarts;
- `status/<source>`: the outcome of the last attempt (what every worker and `data update` report).

`TopicState` is the latest value per key, replayed from the topic; all decisions read it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from pipeline.providers.updates.sources import Archive

CHUNK_BYTES = 512 * 1024  # each record well under Kafka's default 1 MiB message limit, with headroom
FORMAT = 1  # manifest format version: a reader skips manifests of a format it does not know


class BuildError(ValueError):
    """A download that must not be loaded or published: truncated, corrupt, too big, wrong content."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unpack(data: bytes, archive: Archive, max_bytes: int) -> bytes:
    """The .mmdb inside a download; BuildError when the archive is broken, holds none (or several), or
    unpacks to more than `max_bytes`."""
    try:
        if archive is Archive.PLAIN:
            return data
        if archive is Archive.GZIP:
            return _gunzip(data, max_bytes)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            found = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".mmdb")]
            if len(found) != 1:
                raise BuildError(f"the archive holds {len(found)} .mmdb files, not one")
            if found[0].size > max_bytes:
                raise BuildError(f"{found[0].name} unpacks to {found[0].size} bytes, over GEO_DATA_MAX_BYTES")
            handle = tar.extractfile(found[0])
            if handle is None:
                raise BuildError(f"{found[0].name} cannot be read from the archive")
            content = handle.read()
            if len(content) != found[0].size:
                raise BuildError("the archive is truncated")
            return content
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise BuildError(f"broken {archive} archive ({type(exc).__name__}: {exc})") from None


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing
    out = inflate.decompress(data, max_bytes + 1)
    if len(out) > max_bytes:
        raise BuildError(f"unpacks to more than GEO_DATA_MAX_BYTES ({max_bytes} bytes)")
    if not inflate.eof:
        raise BuildError("the gzip stream is truncated")
    gzip.decompress(data[: len(data) - len(inflate.unused_data)])  # the CRC and length trailer, checked
    return out


@dataclass(frozen=True)
class Manifest:
    """What one published build is: enough to find, assemble and check it."""

    source: str  # Source.name
    build_epoch: int
    database_type: str
    layout: str
    size: int
    sha256: str
    chunks: int
    published_at: float
    publisher: str  # the worker that downloaded it
    format: int = FORMAT

    @property
    def prefix(self) -> str:
        return f"chunk/{self.source}/{self.sha256[:16]}/"

    def chunk_key(self, index: int) -> bytes:
        return f"{self.prefix}{index:06d}".encode()

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest | None:
        """The manifest, or None for one this version cannot read (malformed, another format)."""
        try:
            data = json.loads(raw)
            manifest = cls(**data)
        except (ValueError, TypeError):
            return None
        ok = manifest.format == FORMAT and len(manifest.sha256) == 64 and manifest.chunks >= 1
        return manifest if ok and isinstance(manifest.size, int) else None


def manifest_key(source: str) -> bytes:
    return f"manifest/{source}".encode()


def count_key(source: str, day: str) -> bytes:
    return f"count/{source}/{day}".encode()


def status_key(source: str) -> bytes:
    return f"status/{source}".encode()


def chunks(data: bytes, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    for start in range(0, max(len(data), 1), size):
        yield data[start : start + size]


def chunk_count(size: int, chunk: int = CHUNK_BYTES) -> int:
    return max(1, -(-size // chunk))


class TopicState:
    """The latest value of every key of the data topic (a tombstone removes the key)."""

    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        if value is None:
            self.values.pop(key, None)
        else:
            self.values[key] = value

    def manifest(self, source: str) -> Manifest | None:
        raw = self.values.get(manifest_key(source))
        return Manifest.from_json(raw) if raw is not None else None

    def count(self, source: str, day: str) -> int:
        try:
            return int(json.loads(self.values.get(count_key(source, day), b"{}")).get("count", 0))
        except (ValueError, AttributeError):
            return 0

    def status(self, source: str) -> dict[str, object]:
        try:
            found = json.loads(self.values.get(status_key(source), b"{}"))
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}

    def assemble(self, manifest: Manifest) -> bytes:
        """The build's bytes from its chunks, checked against the manifest; BuildError when a chunk is
        missing or the size or SHA-256 differs (nothing half-assembled ever reaches a file)."""
        parts = [self.values.get(manifest.chunk_key(i)) for i in range(manifest.chunks)]
        missing = sum(part is None for part in parts)
        if missing:
            raise BuildError(f"{missing} of {manifest.chunks} chunks of {manifest.source} missing")
        data = b"".join(p for p in parts if p is not None)
        if len(data) != manifest.size or sha256(data) != manifest.sha256:
            raise BuildError(f"{manifest.source}: assembled build does not match its manifest's SHA-256")
        return data

    def obsolete(self, source: str, keep: Manifest | None, today: str) -> list[bytes]:
        """Keys of `source` to delete: chunks of builds other than `keep`, counts of days before today."""
        chunk_prefix = f"chunk/{source}/".encode()
        count_prefix = f"count/{source}/".encode()
        keep_prefix = keep.prefix.encode() if keep else None
        return [
            key
            for key in self.values
            if (key.startswith(chunk_prefix) and (keep_prefix is None or not key.startswith(keep_prefix)))
            or (key.startswith(count_prefix) and key[len(count_prefix) :].decode(errors="replace") < today)
        ]
