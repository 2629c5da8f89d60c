"""The worker's replica of the resolved topic on a real RocksDB store: entries and offsets land together,
survive a restart, and a copy too old to trust is rebuilt."""

from __future__ import annotations

from pathlib import Path

from pipeline.hotpath.replica import REBUILD_AFTER, Replica

NOW = 1_700_000_000.0


def opened(path: Path, now: float = NOW) -> Replica:
    replica = Replica(path)
    replica.open(now)
    return replica


def test_entries_and_their_offsets_are_written_together_and_a_tombstone_deletes(tmp_path: Path) -> None:
    """Applied entries are served, a None value deletes its IP, and the offsets say where reading stops."""
    replica = opened(tmp_path / "r")
    replica.apply([(b"1.1.1.1", b"a"), (b"8.8.8.8", b"b")], {0: 10, 3: 4}, NOW)
    replica.apply([(b"8.8.8.8", None)], {3: 5}, NOW)
    assert (replica.get(b"1.1.1.1"), replica.get(b"8.8.8.8"), replica.get(b"9.9.9.9")) == (b"a", None, None)
    assert replica.offsets() == {0: 10, 3: 5}
    assert replica.rebuilt and replica.disk_bytes() > 0
    replica.close()


def test_a_restart_keeps_the_entries_and_resumes_at_the_stored_offsets(tmp_path: Path) -> None:
    """Reopened within REBUILD_AFTER, the copy has what it had: only the delta is read after a restart."""
    replica = opened(tmp_path / "r")
    replica.apply([(b"1.1.1.1", b"a")], {0: 7}, NOW)
    replica.close()
    again = opened(tmp_path / "r", NOW + 3600)
    assert (again.get(b"1.1.1.1"), again.offsets(), again.rebuilt) == (b"a", {0: 7}, False)
    again.close()


def test_a_copy_offline_longer_than_a_tombstone_lives_is_rebuilt(tmp_path: Path) -> None:
    """After REBUILD_AFTER without a write the copy may have missed a tombstone: it starts empty."""
    replica = opened(tmp_path / "r")
    replica.apply([(b"1.1.1.1", b"a")], {0: 7}, NOW)
    replica.close()
    late = opened(tmp_path / "r", NOW + REBUILD_AFTER + 1)
    assert (late.get(b"1.1.1.1"), late.offsets(), late.rebuilt) == (None, {}, True)
    late.close()


def test_reset_forgets_everything(tmp_path: Path) -> None:
    """A reset (the topic no longer has the stored offsets) leaves an empty copy that reads from scratch."""
    replica = opened(tmp_path / "r", NOW)
    replica.apply([(b"1.1.1.1", b"a")], {0: 7}, NOW)
    replica.reset()
    assert (replica.get(b"1.1.1.1"), replica.offsets()) == (None, {})
    replica.close()


def test_an_unopened_copy_knows_nothing(tmp_path: Path) -> None:
    """Before it is opened (a worker still starting) every lookup is a miss, never an error."""
    assert Replica(tmp_path / "never").get(b"1.1.1.1") is None
