"""Kafka over SASL: the settings mapping drives aiokafka clients and a Faust app against a broker that
requires credentials, and a wrong or missing password fails fast with a clear reason.

One broker for the module, started in its own run dir with a SASL_PLAINTEXT listener (PLAIN and SCRAM
users); every client here talks to that listener only, so a client without credentials cannot pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError

from pipeline.config.settings import Settings
from pipeline.devtools.broker import SASL_MECHANISMS, BrokerInfo, LocalKafka
from pipeline.errors import BrokerError
from pipeline.kafka.config import client_kwargs, faust_app_kwargs
from pipeline.kafka.preflight import check_kafka
from tests.support.kafka import running_app, unique, wait_for

pytestmark = pytest.mark.integration

USER, PASSWORD = "alice", "alice-Secret-1"
FAIL_WITHIN = 10.0  # seconds: a rejected client must fail this fast (it takes well under one), never hang


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerInfo]:
    """A broker of our own with a SASL listener that knows USER (PLAIN, SCRAM-SHA-256 and -512)."""
    broker = LocalKafka(tmp_path_factory.mktemp("kafka-sasl"), sasl_users={USER: PASSWORD})
    try:
        info = broker.start(progress=False)
        assert info.sasl_bootstrap is not None
        yield info
    finally:
        broker.stop()


def sasl_settings(
    broker: BrokerInfo, *, mechanism: str = "SCRAM-SHA-256", password: str | None = PASSWORD
) -> Settings:
    """Settings for the SASL listener, built from the environment like a worker's; no password: PLAINTEXT."""
    assert broker.sasl_bootstrap is not None
    env = {"KAFKA_BOOTSTRAP_SERVERS": broker.sasl_bootstrap, "GEO_APP_ID": unique("sasl-app")}
    if password is not None:
        env |= {
            "GEO_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "GEO_KAFKA_SASL_MECHANISM": mechanism,
            "GEO_KAFKA_SASL_USERNAME": USER,
            "GEO_KAFKA_SASL_PASSWORD": password,
        }
    return Settings.from_env(env)


@pytest.mark.parametrize("mechanism", SASL_MECHANISMS)
async def test_round_trip_with_the_right_credentials(sasl_broker: BrokerInfo, mechanism: str) -> None:
    """Admin, producer and group consumer built from client_kwargs create a topic, write and read it back."""
    settings = sasl_settings(sasl_broker, mechanism=mechanism)
    topic = unique("sasl-roundtrip")
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"over sasl", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, **client_kwargs(settings), group_id=unique("sasl-group"), auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"k", b"over sasl")


Client = Callable[[Settings], Any]
CLIENTS: dict[str, tuple[Client, str]] = {  # how to build one, and how to let go of it
    "producer": (lambda s: AIOKafkaProducer(**client_kwargs(s)), "stop"),
    "consumer": (lambda s: AIOKafkaConsumer(**client_kwargs(s), group_id="never-joins"), "stop"),
    "admin": (lambda s: AIOKafkaAdminClient(**client_kwargs(s)), "close"),
}


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("wrong-password", f"rejected user '{USER}' with SCRAM-SHA-256 .*SaslAuthenticationFailed"),
        (None, "closed the connection .* want SASL or TLS rather than GEO_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
    ],
    ids=["wrong-password", "no-credentials"],
)
async def test_rejected_clients_fail_fast_with_a_clear_reason(
    sasl_broker: BrokerInfo, password: str | None, reason: str
) -> None:
    """With a wrong password or none, every aiokafka client's start() fails within seconds, and the
    preflight check names the cause and the variables to fix."""
    settings = sasl_settings(sasl_broker, password=password)
    for name, (make, release) in CLIENTS.items():
        client = make(settings)
        started = time.monotonic()
        try:
            with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
                await asyncio.wait_for(client.start(), FAIL_WITHIN)
        finally:
            await getattr(client, release)()
        assert time.monotonic() - started < FAIL_WITHIN, name
    with pytest.raises(BrokerError, match=reason) as caught:
        await check_kafka(settings, timeout=FAIL_WITHIN)
    assert "wrong-password" not in str(caught.value)  # the password is named as a variable, never shown


async def test_preflight_passes_with_the_right_credentials(sasl_broker: BrokerInfo) -> None:
    """The preflight check returns quietly when the broker accepts the credentials."""
    await check_kafka(sasl_settings(sasl_broker), timeout=FAIL_WITHIN)


async def test_faust_app_creates_its_topics_and_processes_a_record_over_sasl(
    sasl_broker: BrokerInfo, tmp_path: Path
) -> None:
    """A Faust app given faust_app_kwargs starts, creates its topics (an internal source topic and a
    compacted table changelog), runs one record through an agent into a table, and every aiokafka client
    it made authenticated with SASL."""
    settings = sasl_settings(sasl_broker, mechanism="SCRAM-SHA-512")
    app = faust.App(
        settings.app_id,
        **faust_app_kwargs(settings),
        store="memory://",
        datadir=str(tmp_path),
        web_enabled=False,
        topic_partitions=1,
    )
    # internal=True: Faust itself declares the topic on start (the broker would auto-create it otherwise)
    source = app.topic(
        f"{settings.app_id}-source", key_serializer="raw", value_serializer="raw", partitions=1, internal=True
    )
    table = app.Table("seen", key_type=bytes, value_type=bytes, partitions=1)
    table.key_serializer = table.value_serializer = "raw"
    seen: list[bytes] = []

    @app.agent(source)
    async def record(stream: Any) -> None:
        async for key, value in stream.items():
            table[key] = value
            seen.append(value)

    async with running_app(app, timeout=60):
        await source.send(key=b"1.2.3.4", value=b"hello over sasl")
        await wait_for(lambda: seen, 30, message="the agent to process the record")
        assert table[b"1.2.3.4"] == b"hello over sasl"
        faust_clients = {
            "producer": app.producer._producer.client,
            "consumer": app.consumer._thread._consumer._client,  # also table recovery and topic creation
        }
        for name, client in faust_clients.items():
            assert (client._security_protocol, client._sasl_mechanism) == (
                "SASL_PLAINTEXT",
                "SCRAM-SHA-512",
            ), name
            assert client._sasl_plain_username == USER, name

    changelog = f"{settings.app_id}-seen-changelog"
    policies = await topic_configs(settings, [source.get_topic_name(), changelog], "cleanup.policy")
    assert policies == {source.get_topic_name(): "delete", changelog: "compact"}


async def test_faust_app_with_a_wrong_password_fails_fast(sasl_broker: BrokerInfo, tmp_path: Path) -> None:
    """Faust's start() with rejected credentials raises within seconds instead of retrying forever."""
    settings = sasl_settings(sasl_broker, password="wrong-password")
    app = faust.App(
        settings.app_id,
        **faust_app_kwargs(settings),
        store="memory://",
        datadir=str(tmp_path),
        web_enabled=False,
    )
    try:
        with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
            await asyncio.wait_for(app.start(), FAIL_WITHIN)
    finally:
        await app.stop()
        # mode's ServiceThread makes the consumer thread's event loop up front and closes it only once the
        # thread ran; after this failed start nothing would close it (a leak in mode, not in the mapping)
        thread_loop = app.consumer._thread.thread_loop
        if not thread_loop.is_running() and not thread_loop.is_closed():
            thread_loop.close()


async def topic_configs(settings: Settings, topics: list[str], name: str) -> dict[str, str]:
    """One config value of each topic, read over SASL."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, topic, configs={name: None}) for topic in topics
        ]
        responses = await admin.describe_configs(resources)
    finally:
        await admin.close()
    found: dict[str, str] = {}
    for response in responses:
        for _code, _message, _kind, topic, entries in response.resources:
            found.update((topic, value) for key, value, *_ in entries if key == name)
    return found
