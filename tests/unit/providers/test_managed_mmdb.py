"""Files the updater manages in an MmdbSource: opened when they appear, checked before they are written,
and flagged `!expired` once their build is 30 days old (operator files never are)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.providers.mmdb import MmdbSource
from pipeline.providers.updates.builds import BuildError
from pipeline.providers.updates.verify import write_checked
from tests.support.mmdb import NETWORKS, write_layout

DAY = 86400


def test_a_managed_file_is_opened_when_it_appears_after_the_operator_files(tmp_path: Path) -> None:
    """No file yet: nothing answers; once written, the next reload opens it (after GEO_MMDB files)."""
    asn = write_layout(tmp_path, "geolite2-asn")
    managed = tmp_path / "data" / "maxmind-GeoLite2-City.mmdb"
    source = MmdbSource([asn], managed=[managed])
    assert source.lookup("8.8.8.8") is not None and len(source.files) == 1
    fresh = write_layout(tmp_path, "geolite2-city", build_epoch=int(time.time()) - DAY)
    write_checked(fresh.read_bytes(), managed, None)
    assert source.maybe_reload()
    assert [f.path for f in source.files] == [str(asn), str(managed)]
    assert "!expired" not in source.version


def test_only_a_managed_file_30_days_old_is_flagged_expired(tmp_path: Path) -> None:
    """The version (and so every entry it answers) carries `!expired` for an old managed build only."""
    old = int(time.time()) - 31 * DAY
    operator = write_layout(tmp_path, "geolite2-asn", build_epoch=old)
    managed = tmp_path / "m.mmdb"
    city = write_layout(tmp_path, "geolite2-city", build_epoch=old, name="c")
    write_checked(city.read_bytes(), managed, None)
    source = MmdbSource([operator], managed=[managed])
    assert source.version.count("!expired") == 1 and source.version.endswith("!expired")


def test_a_broken_or_wrong_layout_build_never_replaces_the_file(tmp_path: Path) -> None:
    """write_checked refuses garbage, a layout change and a database missing the known answers; the
    installed file stays as it was."""
    target = tmp_path / "t.mmdb"
    good = write_layout(tmp_path, "geolite2-city").read_bytes()
    write_checked(good, target, "maxmind")
    for data, layout in (
        (b"garbage", None),
        (write_layout(tmp_path, "geolite2-asn").read_bytes(), "maxmind"),
        (write_layout(tmp_path, "geolite2-city", networks=NETWORKS[3:], name="v6").read_bytes(), None),
    ):
        with pytest.raises(BuildError):
            write_checked(data, target, layout)
        assert target.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
