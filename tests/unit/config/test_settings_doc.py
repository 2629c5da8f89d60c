"""docs/settings.md's table against the Settings object: the same variables, the same defaults.

The variables are read off `Settings.from_env` itself, by handing it an empty environment that records every
key it looks up, so a setting added to, renamed in or removed from the code fails here until the table says
so. The defaults are what `Settings.describe()` reports for that empty environment (what
`geo-pipeline settings` prints). Pure: reads docs/settings.md, nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from pipeline.config.settings import Settings

HEADER = ["variable", "default", "meaning"]
EMPTY_WORDS = {"empty", "unset"}  # how the table spells "no value": describe() shows "" or "None"
_CELL_SPLIT = re.compile(r"(?<!\\)\|")  # a cell may hold an escaped pipe
_VARIABLE = re.compile(r"^`([A-Z][A-Z0-9_]*)`$")
_FIRST_CODE = re.compile(r"^`([^`]*)`")


class RecordingEnv(dict[str, str]):
    """An environment mapping that remembers every key looked up in it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked: set[str] = set()

    def get(self, key: Any, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("Settings.from_env iterated the environment: look keys up, or update this test")

    def keys(self) -> Any:
        raise AssertionError("Settings.from_env listed the environment's keys: update this test")

    def items(self) -> Any:
        raise AssertionError("Settings.from_env listed the environment's items: update this test")


def _repo_root() -> Path:
    here = Path(__file__).resolve()
    return next(p for p in here.parents if (p / "pyproject.toml").is_file())


def _cells(line: str) -> list[str]:
    return [c.strip() for c in _CELL_SPLIT.split(line.strip().strip("|"))]


@cache
def documented() -> dict[str, str]:
    """{variable: default cell} from the one table of docs/settings.md headed variable | default | meaning."""
    lines = (_repo_root() / "docs" / "settings.md").read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("|") and _cells(line) == HEADER]
    assert len(starts) == 1, f"docs/settings.md needs exactly one table headed {' | '.join(HEADER)}"
    rows: dict[str, str] = {}
    for line in lines[starts[0] + 2 :]:
        if not line.startswith("|"):
            break
        cells = _cells(line)
        assert len(cells) == 3, f"a row needs 3 cells: {line}"
        match = _VARIABLE.match(cells[0])
        assert match, f"the variable cell must be one `NAME`: {line}"
        assert match.group(1) not in rows, f"{match.group(1)} has two rows"
        rows[match.group(1)] = cells[1]
    assert rows, "the settings table has no rows"
    return rows


@cache
def read_by_settings() -> frozenset[str]:
    """Every variable Settings.from_env looks up in an empty environment."""
    env = RecordingEnv()
    Settings.from_env(env)
    return frozenset(env.asked)


def _documented_value(cell: str) -> str:
    """The default a cell states: its first code span, or "" for a cell starting with empty/unset."""
    code = _FIRST_CODE.match(cell)
    if code:
        return code.group(1)
    first = cell.split()[0].strip(",;:.").lower() if cell.split() else ""
    assert first in EMPTY_WORDS, f"a default starts with `value`, 'empty' or 'unset', not {cell!r}"
    return ""


def _same(documented_value: str, reported: str) -> bool:
    reported = "" if reported == "None" else reported
    if documented_value == reported:
        return True
    try:
        return float(documented_value) == float(reported)  # 14400 is the 14400.0 describe() shows
    except ValueError:
        return False


def test_the_table_names_exactly_the_variables_settings_reads() -> None:
    """Every variable Settings reads has a row, and every row names a variable Settings reads."""
    names = set(documented())
    read = set(read_by_settings())
    assert not read - names, f"read by Settings but not in docs/settings.md: {sorted(read - names)}"
    assert not names - read, f"in docs/settings.md but not read by Settings: {sorted(names - read)}"


def test_describe_lists_the_same_variables_as_the_table() -> None:
    """`geo-pipeline settings` (describe) shows a row for each documented variable and no other."""
    described = [name for name, _ in Settings.from_env(RecordingEnv()).describe()]
    assert len(described) == len(set(described))
    assert set(described) == set(documented())


def test_each_documented_default_is_the_empty_environment_default() -> None:
    """The default column states what describe() reports when no variable is set."""
    reported = dict(Settings.from_env(RecordingEnv()).describe())
    wrong = {
        name: (cell, reported[name])
        for name, cell in documented().items()
        if name in reported and not _same(_documented_value(cell), reported[name])
    }
    assert not wrong, f"documented default vs describe(): {wrong}"


def test_the_recording_environment_sees_a_set_variable() -> None:
    """A value put into the recording environment reaches Settings, so the recorder is what from_env reads."""
    env = RecordingEnv({"GEO_PARTITIONS": "3"})
    assert Settings.from_env(env).partitions == 3
    assert "GEO_PARTITIONS" in env.asked
