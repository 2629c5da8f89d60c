"""Settings -> librdkafka properties for the hot path's confluent-kafka clients: the same connection as the
aiokafka clients' (servers, protocol, SASL, TLS files), secrets hidden; librdkafka errors as aiokafka's."""

from __future__ import annotations

import logging

import pytest
from aiokafka.errors import (
    CommitFailedError,
    KafkaError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
)
from confluent_kafka import KafkaError as CKafkaError

from pipeline.config.limits import SASL_MECHANISMS
from pipeline.config.settings import Settings
from pipeline.errors import ConfigError
from pipeline.hotpath.outputs import PERMANENT_ERRORS
from pipeline.kafka.config import client_kwargs, confluent_config
from pipeline.kafka.confluent_errors import as_aiokafka_error
from tests.unit.kafka.test_config import PASSWORD, sasl_env, tls_files  # noqa: F401 - a fixture

KEY_PASSWORD = "key-pass"


def test_plaintext_names_every_broker_and_nothing_else() -> None:
    """PLAINTEXT: the same brokers as aiokafka's list, comma-joined, and the protocol."""
    s = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k1:9092, k2:9093"})
    wanted = {"bootstrap.servers": "k1:9092,k2:9093", "security.protocol": "plaintext"}
    assert dict(confluent_config(s)) == wanted
    assert confluent_config(s)["bootstrap.servers"].split(",") == client_kwargs(s)["bootstrap_servers"]


@pytest.mark.parametrize("mechanism", SASL_MECHANISMS)
def test_sasl_passes_the_same_mechanism_user_and_password(mechanism: str) -> None:
    """SASL_PLAINTEXT with each mechanism: librdkafka gets what aiokafka gets, under its own names."""
    s = Settings.from_env(sasl_env(mechanism=mechanism))
    config, kwargs = confluent_config(s), client_kwargs(s)
    assert config["security.protocol"] == "sasl_plaintext"
    assert (config["sasl.mechanism"], config["sasl.username"], config["sasl.password"]) == (
        kwargs["sasl_mechanism"],
        kwargs["sasl_plain_username"],
        kwargs["sasl_plain_password"],
    )
    assert "ssl.ca.location" not in config


def test_tls_uses_the_same_ca_and_client_certificate_and_checks_the_host_name(
    tls_files: dict[str, str],  # noqa: F811 - the fixture
) -> None:
    """SASL_SSL with files: the CA file, the client certificate, its key and the key's password, and the
    broker's host name verified."""
    s = Settings.from_env(sasl_env("SASL_SSL") | tls_files)
    config = confluent_config(s)
    assert config["security.protocol"] == "sasl_ssl"
    assert config["ssl.ca.location"] == tls_files["GEO_KAFKA_SSL_CAFILE"]
    assert config["ssl.certificate.location"] == tls_files["GEO_KAFKA_SSL_CERTFILE"]
    assert config["ssl.key.location"] == tls_files["GEO_KAFKA_SSL_KEYFILE"]
    assert config["ssl.key.password"] == KEY_PASSWORD
    assert config["ssl.endpoint.identification.algorithm"] == "https"


def test_ssl_without_a_ca_file_probes_the_system_trust_store() -> None:
    """SSL with no CA file: librdkafka looks for the system's CA certificates, as ssl_context does."""
    config = confluent_config(Settings.from_env({"GEO_KAFKA_SECURITY_PROTOCOL": "SSL"}))
    assert config["ssl.ca.location"] == "probe" and "ssl.certificate.location" not in config


def test_secrets_never_show_in_the_reprs(
    tls_files: dict[str, str],  # noqa: F811 - the fixture
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Neither the SASL password nor the key password shows in repr, str or a log line of the config."""
    config = confluent_config(Settings.from_env(sasl_env("SASL_SSL") | tls_files))
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("config %s %r", config, config)
    for shown in (repr(config), str(config), f"{config}", caplog.text):
        assert PASSWORD not in shown and KEY_PASSWORD not in shown


def test_unvalidated_settings_are_refused() -> None:
    """SASL without credentials is refused here too, not handed to librdkafka."""
    with pytest.raises(ConfigError, match="GEO_KAFKA_SASL_PASSWORD"):
        confluent_config(Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="alice"))


def test_an_unknown_ingest_client_is_refused_naming_the_setting() -> None:
    """GEO_INGEST_CLIENT takes aiokafka or confluent; anything else refuses the start with the choices."""
    with pytest.raises(ConfigError, match="GEO_INGEST_CLIENT='kafka-python' is not valid"):
        Settings.from_env({"GEO_INGEST_CLIENT": "kafka-python"}).validate()
    Settings.from_env({"GEO_INGEST_CLIENT": "confluent"}).validate()  # confluent-kafka is installed here


@pytest.mark.parametrize(
    ("code", "wanted"),
    [
        (CKafkaError.MSG_SIZE_TOO_LARGE, MessageSizeTooLargeError),
        (CKafkaError.TOPIC_AUTHORIZATION_FAILED, TopicAuthorizationFailedError),
        (CKafkaError.ILLEGAL_GENERATION, CommitFailedError),
        (CKafkaError._MSG_TIMED_OUT, KafkaError),
        (CKafkaError._TRANSPORT, KafkaError),
    ],
)
def test_librdkafka_errors_become_aiokafkas_classes(code: int, wanted: type[Exception]) -> None:
    """A record refused for good maps to a permanent class (dead-lettered); anything that may pass maps to
    a class the hot path replays on."""
    error = as_aiokafka_error(CKafkaError(code))
    assert type(error) is wanted
    assert isinstance(error, PERMANENT_ERRORS) == (wanted in PERMANENT_ERRORS)
