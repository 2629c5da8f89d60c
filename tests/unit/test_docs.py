"""The README and docs/ cite only what a reader of the repository can open."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# a repository path: one of the top-level folders or files, then path characters (a trailing dot is prose)
CITED = re.compile(
    r"(?<![\w/.~-])((?:pipeline|tests|docs|deploy|\.ci)/[\w./-]*[\w/]|[A-Z]+\.md|docker-compose\.yml)"
)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_repository_path_a_doc_cites_exists(doc: Path) -> None:
    """Each `pipeline/...`, `tests/...`, `docs/...` path and top-level file named in a doc is in the tree."""
    missing = sorted(
        cited for cited in set(CITED.findall(doc.read_text())) if not (ROOT / cited.rstrip("/")).exists()
    )
    assert not missing, f"{doc.name} cites paths that do not exist: {missing}"


def test_the_readme_links_every_doc() -> None:
    """Every file in docs/ is reachable from the README."""
    readme = (ROOT / "README.md").read_text()
    assert [d.name for d in DOCS[1:] if f"docs/{d.name}" not in readme] == []
