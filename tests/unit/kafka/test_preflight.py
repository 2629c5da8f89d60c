"""How the preflight check words a TLS refusal: the setting to fix, from the error (or what caused it)."""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path

import pytest

from pipeline.config.settings import Settings
from pipeline.kafka.preflight import _tls_refusal

# replace(): the files need not exist for wording an error (validate() would check them)
SETTINGS = dataclasses.replace(
    Settings.from_env({}), kafka_security_protocol="SSL", kafka_ssl_certfile=Path("/c.pem")
)


def verification(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    error.verify_code, error.verify_message = code, message
    return error


def wrapped(cause: BaseException) -> Exception:
    """As aiokafka raises it: a connection error whose cause is the TLS error."""
    error = ConnectionError("Connection at localhost:9095 closed")
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "setting"),
    [
        (verification(19, "self-signed certificate in certificate chain"), "GEO_KAFKA_SSL_CAFILE"),
        (
            verification(62, "Hostname mismatch, certificate is not valid for 'kafka'."),
            "check KAFKA_BOOTSTRAP",
        ),
        (
            verification(64, "IP address mismatch, certificate is not valid for '127.0.0.1'."),
            "check KAFKA_BOOT",
        ),
        (
            wrapped(ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] alert")),
            "GEO_KAFKA_SSL_CERTFILE",
        ),
        (
            wrapped(OSError("broken: [SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")),
            "GEO_KAFKA_SSL_CERTFILE",
        ),
    ],
    ids=["wrong-ca", "host-name", "ip-address", "certificate-required", "unknown-ca"],
)
def test_a_tls_refusal_names_the_setting_to_fix(error: BaseException, setting: str) -> None:
    """A certificate the client cannot verify names the CA file, a host name mismatch the bootstrap
    address, a broker's alert about our certificate the certificate and key files."""
    text = _tls_refusal(error, SETTINGS)
    assert text is not None and setting in text


def test_other_errors_are_not_tls_refusals() -> None:
    """A refused connection or a plain timeout is left to the other explanations."""
    assert _tls_refusal(ConnectionRefusedError(111, "refused"), SETTINGS) is None
    assert _tls_refusal(TimeoutError(), SETTINGS) is None
