"""The start-up check of the Faust/aiokafka internals our fixes hook: with every hook on its call path a
worker builds; with one taken off (a release renamed it, or its caller stopped calling it) the worker
refuses to start with one error naming the fix and the name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiokafka.consumer.subscription_state import Assignment
from faust.stores.rocksdb import Store
from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from pipeline.app import build
from pipeline.cli.main import main
from pipeline.config.settings import Settings
from pipeline.errors import PipelineError
from pipeline.kafka.hooks import faust_hooks, problems


async def _never_calls_the_hook(self: Any, *args: Any, **kwargs: Any) -> None:
    """A caller from a release that no longer goes through the hooked name."""


# (the fix named in the error, the name named in it, how to take the hook off its path)
OFF_PATH = {
    "fetch snapshot": ("AIOKafkaConsumerThread.getmany", (AIOKafkaConsumerThread, "getmany")),
    "rewind": ("Consumer.perform_seek", (Consumer, "perform_seek")),
    "delivery guard": ("Consumer._commit_offsets", (Consumer, "_commit_offsets")),
    "stall watch": ("Assignment.state_value", (Assignment, "state_value")),
    "geo table store": ("Store._open_for_partition", (Store, "_open_for_partition")),
}
REMOVED = {"stall watch", "geo table store"}  # these names are deleted; the others' callers replaced


def take_off(monkeypatch: pytest.MonkeyPatch, fix: str) -> str:
    """Take the hook of `fix` off its call path; returns the name the error must mention."""
    name, (owner, attribute) = OFF_PATH[fix]
    if fix in REMOVED:
        monkeypatch.delattr(owner, attribute)
    else:
        monkeypatch.setattr(owner, attribute, _never_calls_the_hook)
    return name


def test_every_hook_is_on_its_call_path_with_the_installed_versions() -> None:
    """The installed (pinned) Faust and aiokafka still call every name our fixes hook."""
    assert problems(faust_hooks()) == []


@pytest.mark.parametrize("fix", sorted(OFF_PATH))
async def test_a_worker_with_a_hook_off_its_path_refuses_to_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fix: str
) -> None:
    """build() raises one PipelineError naming the fix and the name that is gone or no longer called."""
    name = take_off(monkeypatch, fix)
    settings = Settings.from_env({}, app_id="hooks", data_dir=tmp_path, providers=("offline",))
    with pytest.raises(PipelineError, match="refusing to start") as refused:
        build(settings)
    assert fix in str(refused.value) and name.split(".")[-1] in str(refused.value)


def test_the_worker_command_refuses_before_it_connects(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`geo-pipeline worker` with the fetch snapshot's hook off its path exits 2 with one line naming it,
    before it tries the broker (none listens at the address given)."""
    take_off(monkeypatch, "fetch snapshot")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("GEO_DATA_DIR", str(tmp_path))
    assert main(["worker"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fetch snapshot" in err[0] and "getmany" in err[0], err
