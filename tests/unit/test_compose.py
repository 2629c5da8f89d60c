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


def test_worker_data_dir_is_a_volume() -> None:
    """GEO_DATA_DIR is mounted from a volume so RocksDB state survives container restarts."""
    worker = load()["services"]["worker"]
    data_dir = environment(worker)["GEO_DATA_DIR"]
    assert any(str(v).split(":")[1] == data_dir for v in worker.get("volumes", []))
