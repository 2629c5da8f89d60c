"""docker-compose.yml wires the worker to the Kafka service's internal listener."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def load() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the "KEY=value" list form is equally valid compose
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_services_kafka_and_worker() -> None:
    """The compose file defines the kafka and worker services, the worker built from this repository."""
    services = load()["services"]
    assert {"kafka", "worker"} <= set(services)
    assert services["worker"].get("build") in (".", {"context": "."})


def test_worker_bootstrap_is_kafka_internal_listener() -> None:
    """The worker's KAFKA_BOOTSTRAP_SERVERS is the host:port the kafka service advertises to containers."""
    services = load()["services"]
    advertised = environment(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"].split(",")
    addresses = [entry.split("://", 1)[1] for entry in advertised]
    internal = {address for address in addresses if address.startswith("kafka:")}
    bootstrap = environment(services["worker"])["KAFKA_BOOTSTRAP_SERVERS"]
    assert bootstrap == "kafka:19092"
    assert bootstrap in internal


def test_worker_data_dir_is_a_volume_of_its_own_per_replica() -> None:
    """GEO_DATA_DIR is a volume (state survives restarts) that is anonymous, so `--scale worker=3` gives
    each replica its own: a named volume there would be shared by every replica."""
    data = load()
    worker = data["services"]["worker"]
    data_dir = environment(worker)["GEO_DATA_DIR"]
    mounts = [v if isinstance(v, str) else f"{v.get('source', '')}:{v['target']}" for v in worker["volumes"]]
    assert data_dir in mounts  # the short syntax without a source: an anonymous volume
    assert not data.get("volumes"), "no named volume to share"


def test_worker_api_is_reachable_by_the_other_replicas() -> None:
    """The API binds every interface inside the container (the worker advertises its host name) and the
    healthcheck asks its /ready."""
    worker = load()["services"]["worker"]
    env = environment(worker)
    assert env["GEO_WEB_HOST"] == "0.0.0.0" and "GEO_ADVERTISED_URL" not in env
    assert f"127.0.0.1:{env['GEO_WEB_PORT']}/ready" in " ".join(worker["healthcheck"]["test"])


RESTARTING = ("always", "unless-stopped", "on-failure")  # policies that bring an exited worker back


def test_the_worker_is_restarted_when_it_exits() -> None:
    """Recovery exits the process (delivery guard, stall restart, replay limit): compose starts it again."""
    worker = load()["services"]["worker"]
    assert str(worker.get("restart", "no")).split(":")[0] in RESTARTING
