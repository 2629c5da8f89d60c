"""Settings -> Kafka client arguments and Faust credentials: one mapping for both, secrets hidden."""

from __future__ import annotations

import ast
import logging
import ssl
from pathlib import Path

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from pipeline.config.limits import SASL_MECHANISMS
from pipeline.config.settings import Settings
from pipeline.errors import ConfigError
from pipeline.kafka import config as kafka_config
from pipeline.kafka.config import client_kwargs, faust_app_kwargs, faust_credentials

PASSWORD = "pw-Sekrit-42"
KEY_PASSWORD = "key-pass"

# A self-signed EC certificate (CN=geo-pipeline-test, valid until 2126) and its key, encrypted with
# KEY_PASSWORD: made once with openssl; only loaded, never used for a connection.
CERT_PEM = """-----BEGIN CERTIFICATE-----
MIIBkDCCATWgAwIBAgIUE0uOOgChU5c0JdggJ/3Yd+FUp6UwCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRZ2VvLXBpcGVsaW5lLXRlc3QwIBcNMjYxMTMwMTYwMTMzWhgP
MjEyNjExMDYxNjAxMzNaMBwxGjAYBgNVBAMMEWdlby1waXBlbGluZS10ZXN0MFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEa1ASkOzRcjjK/jTWIuKn3JoRlv8ypqtu
/M8NHHKTZJZuvgHXWjMQsp94+pZo2kmjlZ1ahYA9OTIDbCWkIEWSQqNTMFEwHQYD
VR0OBBYEFJvhmaHg7bF+4GzlVo20Tb3zqjC0MB8GA1UdIwQYMBaAFJvhmaHg7bF+
4GzlVo20Tb3zqjC0MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIh
AI3qFamLCjOI9Bon9MBV8XFnvBIiYETV22oKEJm4aYI7AiEA/DYOFPWEvZ4ui12z
U7IjH9Yb6s+H+/mP8NxSYUCN2+g=
-----END CERTIFICATE-----
"""
KEY_PEM = """-----BEGIN ENCRYPTED PRIVATE KEY-----
MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAi8ftR9IGQxRQICCAAw
DAYIKoZIhvcNAgkFADAdBglghkgBZQMEASoEEELL1CL4hHrugoOmnVR2X30EgZDS
Cz4lOFOEBtBl7nblvYWkM53ifbtkra2HUwmDqgNvJg6IfyX4DAyI2YakrYe9b4/4
dmfuP57M0itQMU8egYp4Op66FcM5quLcvE/rBAF4XGKnao3cfhFEEWNquUf/fTv3
KGyTlx2Ns11/qtAKKxufRRNtpypH5XH9Va9iYugjaUjPi3+GQECGpstOv85bDQw=
-----END ENCRYPTED PRIVATE KEY-----
"""


def sasl_env(protocol: str = "SASL_PLAINTEXT", mechanism: str = "SCRAM-SHA-256") -> dict[str, str]:
    return {
        "GEO_KAFKA_SECURITY_PROTOCOL": protocol,
        "GEO_KAFKA_SASL_MECHANISM": mechanism,
        "GEO_KAFKA_SASL_USERNAME": "alice",
        "GEO_KAFKA_SASL_PASSWORD": PASSWORD,
    }


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    """The certificate (also as CA file) and encrypted key on disk, as environment variables."""
    (tmp_path / "cert.pem").write_text(CERT_PEM)
    (tmp_path / "key.pem").write_text(KEY_PEM)
    return {
        "GEO_KAFKA_SSL_CAFILE": str(tmp_path / "cert.pem"),
        "GEO_KAFKA_SSL_CERTFILE": str(tmp_path / "cert.pem"),
        "GEO_KAFKA_SSL_KEYFILE": str(tmp_path / "key.pem"),
        "GEO_KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD,
    }


def security_part(kwargs: dict[str, object]) -> dict[str, object]:
    """What the security protocol decides, with the (per-call) TLS context reduced to whether it is there."""
    part = {k: v for k, v in kwargs.items() if k != "bootstrap_servers" and v is not None}
    if "ssl_context" in part:
        part["ssl_context"] = "context"
    return part


def test_plaintext_default_adds_only_the_servers() -> None:
    """Without security settings, clients get the bootstrap servers and PLAINTEXT, Faust no credentials."""
    s = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k1:9092, k2:9093"})
    assert client_kwargs(s) == {"bootstrap_servers": ["k1:9092", "k2:9093"], "security_protocol": "PLAINTEXT"}
    assert faust_credentials(s) is None
    assert faust_app_kwargs(s) == {"broker": "kafka://k1:9092, k2:9093", "broker_credentials": None}


@pytest.mark.parametrize("mechanism", SASL_MECHANISMS)
def test_sasl_plaintext_passes_mechanism_user_and_password(mechanism: str) -> None:
    """SASL_PLAINTEXT gives every client the mechanism, user and revealed password, and no TLS context."""
    s = Settings.from_env(sasl_env(mechanism=mechanism))
    assert client_kwargs(s) == {
        "bootstrap_servers": ["127.0.0.1:9092"],
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "alice",
        "sasl_plain_password": PASSWORD,
    }
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.protocol.value, creds.mechanism.value, creds.username) == (
        "SASL_PLAINTEXT",
        mechanism,
        "alice",
    )


@pytest.mark.parametrize(
    "protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], ids=lambda p: p.lower()
)
def test_faust_gets_the_same_security_arguments_as_our_clients(
    protocol: str, tls_files: dict[str, str]
) -> None:
    """What Faust's own translation (used for its producer, both consumers and thus topic creation) makes
    of our credentials equals the security part of `client_kwargs`."""
    env = sasl_env(protocol) if protocol.startswith("SASL_") else {"GEO_KAFKA_SECURITY_PROTOCOL": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        env |= tls_files
    s = Settings.from_env(env)
    faust_side = credentials_to_aiokafka_auth(faust_credentials(s), None)
    assert security_part(dict(faust_side)) == security_part(client_kwargs(s))


def test_tls_context_verifies_the_server_and_loads_the_client_certificate(tls_files: dict[str, str]) -> None:
    """SASL_SSL builds a verifying context (CA file, host name check) holding the decrypted client key,
    for our clients and Faust's credentials alike."""
    s = Settings.from_env(sasl_env("SASL_SSL") | tls_files)
    context = client_kwargs(s)["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert context.get_ca_certs()[0]["subject"] == ((("commonName", "geo-pipeline-test"),),)
    creds = faust_credentials(s)
    assert creds.protocol.value == "SASL_SSL" and isinstance(creds.ssl_context, ssl.SSLContext)


def test_ssl_without_sasl_is_faust_ssl_credentials(tls_files: dict[str, str]) -> None:
    """SSL alone gives clients a TLS context and no SASL arguments, and Faust SSLCredentials."""
    s = Settings.from_env({"GEO_KAFKA_SECURITY_PROTOCOL": "SSL"} | tls_files)
    assert set(client_kwargs(s)) == {"bootstrap_servers", "security_protocol", "ssl_context"}
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SSLCredentials) and creds.protocol.value == "SSL"


def test_ssl_without_files_uses_the_system_trust_store() -> None:
    """SSL with no CA file still verifies the server, against the default trust store."""
    context = client_kwargs(Settings.from_env({"GEO_KAFKA_SECURITY_PROTOCOL": "SSL"}))["ssl_context"]
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)


def test_wrong_key_password_fails_when_the_context_is_built(tls_files: dict[str, str]) -> None:
    """A wrong GEO_KAFKA_SSL_KEY_PASSWORD is an SSL error at start-up, not a silent unauthenticated client."""
    s = Settings.from_env(
        {"GEO_KAFKA_SECURITY_PROTOCOL": "SSL"} | tls_files | {"GEO_KAFKA_SSL_KEY_PASSWORD": "no"}
    )
    with pytest.raises(ssl.SSLError):
        client_kwargs(s)


def test_unvalidated_settings_are_refused() -> None:
    """Settings built without validate() cannot produce half-configured SASL clients."""
    with pytest.raises(ConfigError, match="GEO_KAFKA_SASL_PASSWORD"):
        client_kwargs(Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="alice"))
    with pytest.raises(ConfigError, match="GEO_KAFKA_SECURITY_PROTOCOL"):
        faust_credentials(Settings(kafka_security_protocol="TLS"))


def test_secrets_never_show_in_reprs_or_log_lines(
    tls_files: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The SASL and key passwords appear in no repr, str, f-string, describe() line or log record of the
    settings, the client arguments or Faust's credentials."""
    s = Settings.from_env(sasl_env("SASL_SSL") | tls_files)
    kwargs, creds = client_kwargs(s), faust_credentials(s)
    log = logging.getLogger("test.kafka_config")
    with caplog.at_level(logging.INFO):
        log.info("client %s %r, credentials %s %r, settings %s", kwargs, kwargs, creds, creds, s)
    shown = " ".join(
        [repr(kwargs), str(kwargs), f"{kwargs}", repr(creds), str(creds), repr(s), str(s), caplog.text]
        + [value for _, value in s.describe()]
    )
    assert PASSWORD not in shown and KEY_PASSWORD not in shown
    assert "alice" in shown and "**********" in shown  # the rest is still there to debug with
    assert kwargs["sasl_plain_password"] == PASSWORD  # ... and the client still gets the real one


def test_no_kafka_or_faust_import_at_module_level() -> None:
    """The mapping imports no Kafka client or Faust at module level (Faust only inside faust_credentials)."""
    tree = ast.parse(Path(kafka_config.__file__).read_text())
    top = {
        alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names
    }
    top |= {(node.module or "").split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert not top & {"faust", "mode", "aiokafka"}
