"""A build checked as a database before anyone uses it, and written into the data dir in one rename.

Checks (any failure is a BuildError and nothing is published or replaced): it opens with maxminddb and
passes `open_mmdb`'s own checks (format, metadata, probe lookups, a layout it can tell); its layout is the
one this source had before; and each KNOWN_IP gets the answer every build of its layout has.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.providers.mmdb import MmdbFile, MmdbLoadError, open_mmdb
from pipeline.providers.mmdb_layouts import Layout, extract
from pipeline.providers.updates.builds import BuildError

# Long-allocated addresses every global database places; the field their layout must answer for them
KNOWN_IPS = ("8.8.8.8", "1.1.1.1")
KEY_FIELD = {Layout.MAXMIND: "country_code", Layout.ASN: "asn", Layout.IPINFO: "country_code"}
# (anonymizer and connection-type files list some networks only, so no address is known to every build)


def check_file(path: Path, layout: str | None) -> MmdbFile:
    """Open `path` and check it as above; `layout`: the layout the source's previous build had."""
    try:
        db = open_mmdb(os.fspath(path))
    except MmdbLoadError as exc:
        raise BuildError(str(exc)) from None
    if layout is not None and db.layout.value != layout:
        raise BuildError(f"layout {db.layout} where this source published {layout} before")
    key = KEY_FIELD.get(db.layout)
    for ip in KNOWN_IPS if key else ():
        record = db.reader.get(ip)
        if not isinstance(record, dict) or key not in extract(db.layout, record):
            raise BuildError(f"no {key} for {ip}: not a full {db.layout} database")
    return db


def write_checked(data: bytes, target: Path, layout: str | None) -> MmdbFile:
    """Write `data` beside `target`, check it, then rename it over `target` (readers never see half a
    file); the temporary file is removed when a check fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        db = check_file(temporary, layout)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return db


def check_bytes(data: bytes, scratch: Path, layout: str | None) -> MmdbFile:
    """Check a downloaded build without installing it (the publisher checks before publishing)."""
    scratch.parent.mkdir(parents=True, exist_ok=True)
    try:
        scratch.write_bytes(data)
        return check_file(scratch, layout)
    finally:
        scratch.unlink(missing_ok=True)

