"""Kafka over TLS for real: a worker enriches events through the broker's SSL listener (client certificate)
and its SASL_SSL listener (SCRAM over TLS), and the mistakes users make are refused at start with one clear
error naming the setting to fix: a wrong CA file, a host name the broker's certificate does not hold, a
client certificate the broker does not trust.

One broker for the module (its start and the TLS material take ~10 s), with SSL and SASL_SSL listeners
beside PLAINTEXT; its certificate names `localhost` only (pipeline/devtools/tls.py).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.app import build, running
from pipeline.cli.main import main
from pipeline.config.secret import Secret
from pipeline.config.settings import Settings
from pipeline.devtools.broker import BrokerInfo, LocalKafka
from pipeline.devtools.processes import settings_env
from pipeline.devtools.tls import TlsFiles
from pipeline.errors import BrokerError
from pipeline.kafka.config import client_kwargs
from pipeline.kafka.preflight import check_kafka
from tests.support.kafka import wait_for
from tests.support.pipeline import make_settings

pytestmark = pytest.mark.integration

USER, PASSWORD = "tls-user", "tls-Secret-1"
FAIL_WITHIN = 10.0  # seconds: a refused client fails well under this, never hangs
EVENTS = ["8.8.8.8", "1.1.1.1", "9.9.9.9", "2001:4860:4860::8888", "81.2.69.142"]


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo]:
    """A broker of our own with SSL (client certificates required) and SASL_SSL listeners."""
    broker = LocalKafka(tmp_path_factory.mktemp("kafka-tls"), sasl_users={USER: PASSWORD}, tls=True)
    try:
        info = broker.start(progress=False)
        assert info.ssl_bootstrap and info.sasl_ssl_bootstrap and info.tls
        yield info
    finally:
        broker.stop()


def tls_settings(
    broker: BrokerInfo,
    tmp_path: Path,
    protocol: str = "SSL",
    *,
    cafile: str = "ca",
    client: str | None = "client",
    host: str | None = None,
) -> Settings:
    """Settings for one TLS listener: `cafile` and `client` name files of the broker's TlsFiles (`client`
    None: no client certificate); `host` replaces the host of the bootstrap address."""
    tls = broker.tls
    assert isinstance(tls, TlsFiles) and broker.ssl_bootstrap and broker.sasl_ssl_bootstrap
    bootstrap = broker.ssl_bootstrap if protocol == "SSL" else broker.sasl_ssl_bootstrap
    if host is not None:
        bootstrap = f"{host}:{bootstrap.rpartition(':')[2]}"
    values: dict[str, object] = {
        "kafka_bootstrap": bootstrap,
        "kafka_security_protocol": protocol,
        "kafka_ssl_cafile": getattr(tls, cafile),
    }
    if client is not None:
        values |= {
            "kafka_ssl_certfile": getattr(tls, client),
            "kafka_ssl_keyfile": getattr(tls, f"{client}_key"),
        }
    if protocol == "SASL_SSL":
        values |= {
            "kafka_sasl_mechanism": "SCRAM-SHA-256",
            "kafka_sasl_username": USER,
            "kafka_sasl_password": Secret(PASSWORD),
        }
    settings = dataclasses.replace(make_settings(broker.bootstrap, tmp_path / "data"), **values)
    settings.validate()
    return settings


async def enriched_records(settings: Settings, n: int, timeout: float) -> list[dict[str, object]]:
    """The first `n` records of the enriched topic, read through the same listener as the worker."""
    consumer = AIOKafkaConsumer(
        settings.enriched_topic, **client_kwargs(settings), group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[dict[str, object]] = []
    try:

        async def more() -> bool:
            batch = await consumer.getmany(timeout_ms=500)
            found.extend(json.loads(r.value) for records in batch.values() for r in records)
            return len(found) >= n

        await wait_for(more, timeout, message=lambda: f"{n} enriched records ({len(found)} so far)")
    finally:
        await consumer.stop()
    return found


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
async def test_a_worker_enriches_events_through_tls(
    tls_broker: BrokerInfo, tmp_path: Path, protocol: str
) -> None:
    """The preflight passes, a worker on the TLS listener enriches every event produced there, and every
    Kafka client it made (Faust's producer and consumer, the hot path's) speaks `protocol`."""
    settings = tls_settings(tls_broker, tmp_path, protocol)
    await check_kafka(settings, timeout=FAIL_WITHIN)
    geo = build(settings)
    async with running(geo, timeout=90):
        producer = AIOKafkaProducer(**client_kwargs(settings), acks="all")
        await producer.start()
        try:
            for ip in EVENTS:
                await producer.send_and_wait(settings.events_topic, ip.encode())
        finally:
            await producer.stop()
        out = await enriched_records(settings, len(EVENTS), 60)
        clients = {
            "faust producer": geo.app.producer._producer.client,
            "faust consumer": geo.app.consumer._thread._consumer._client,
            "hot path": geo.hotpath._consumer._client,
        }
        for name, client in clients.items():
            assert client._security_protocol == protocol, name
    print(f"\n{protocol}: {len(out)} enriched records of {len(EVENTS)} events")
    assert sorted(str(r["ip"]) for r in out) == sorted(EVENTS)
    assert all(isinstance(r["geo"], dict) for r in out)


# (the settings' mistake, the setting the error must name)
REFUSALS = {
    "wrong CA": ({"cafile": "other_ca"}, "GEO_KAFKA_SSL_CAFILE"),
    "host name": ({"host": "127.0.0.1"}, "KAFKA_BOOTSTRAP_SERVERS"),
    "untrusted client certificate": ({"client": "stranger"}, "GEO_KAFKA_SSL_CERTFILE"),
    "no client certificate": ({"client": None}, "GEO_KAFKA_SSL_CERTFILE"),
}


@pytest.mark.parametrize("mistake", sorted(REFUSALS))
async def test_the_preflight_names_the_tls_setting_to_fix(
    tls_broker: BrokerInfo, tmp_path: Path, mistake: str
) -> None:
    """Each TLS mistake makes the preflight fail within seconds with one error naming the setting."""
    change, setting = REFUSALS[mistake]
    settings = tls_settings(tls_broker, tmp_path, **change)
    started = time.monotonic()
    with pytest.raises(BrokerError, match=f"check {setting}") as refused:
        await check_kafka(settings, timeout=FAIL_WITHIN)
    print(f"\n{mistake}: {refused.value}")
    assert time.monotonic() - started < FAIL_WITHIN


@pytest.mark.parametrize("mistake", ["wrong CA", "host name", "untrusted client certificate"])
def test_a_worker_with_a_tls_mistake_refuses_to_start_naming_the_setting(
    tls_broker: BrokerInfo,
    tmp_path: Path,
    mistake: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`geo-pipeline worker` with the mistake exits 2 at start with one error line naming the setting."""
    change, setting = REFUSALS[mistake]
    settings = tls_settings(tls_broker, tmp_path, **change)
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    assert main(["worker"]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("geo-pipeline:")]
    assert len(errors) == 1 and f"check {setting}" in errors[0], errors
