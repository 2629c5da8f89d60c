"""The Dockerfile runs the worker as an unprivileged user that owns only its data directory."""

from __future__ import annotations

import re
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"
ROOT_USERS = {"root", "0", "0:0", "root:root"}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    start = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[start:]


def test_the_image_runs_as_a_non_root_user() -> None:
    """The final stage switches to a user that is not root before its command runs."""
    steps = final_stage()
    users = [(i, args) for i, (word, args) in enumerate(steps) if word == "USER"]
    assert users, "no USER instruction: the worker would run as root"
    last, user = users[-1]
    command = max(i for i, (word, _) in enumerate(steps) if word in ("CMD", "ENTRYPOINT"))
    assert last < command and user not in ROOT_USERS


def test_the_user_is_created_and_owns_the_data_directory() -> None:
    """The user the image switches to is created in the image and owns GEO_DATA_DIR (an anonymous volume
    mounted there copies the directory's owner), so RocksDB can write its state."""
    steps = final_stage()
    user = [args for word, args in steps if word == "USER"][-1].split(":")[0]
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert re.search(rf"useradd\b[^&;]*\b{re.escape(user)}\b", runs)
    env = " ".join(args for word, args in steps if word == "ENV")
    data_dir = re.search(r"GEO_DATA_DIR[= ](\S+)", env)
    assert data_dir, "GEO_DATA_DIR is set in the image"
    assert re.search(rf"chown\b[^&;]*\b{re.escape(user)}\b[^&;]*{re.escape(data_dir.group(1))}", runs)
