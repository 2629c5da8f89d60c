"""Settings from the environment: defaults, parsing, one clear error per bad value, secrets redacted."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.secret import Secret
from pipeline.settings import MAX_EVENT_BYTES_CEILING, Settings


def test_defaults_run_the_demo_on_one_machine() -> None:
    """An empty environment gives the documented defaults and the derived internal topic names."""
    s = Settings.from_env({})
    assert (s.kafka_bootstrap, s.partitions, s.resolve_partitions) == ("127.0.0.1:9092", 8, 1)
    assert (s.budget_requests, s.budget_window, s.providers) == (15, 60.0, ("ipapi", "offline"))
    assert (s.by_ip_topic, s.results_topic) == ("geo-pipeline-events-by-ip", "geo-pipeline-geo-results")
    assert s.web_host == "127.0.0.1"


def test_values_are_parsed_by_type() -> None:
    """Ints, floats, paths and the provider list are parsed; empty values mean the default."""
    s = Settings.from_env(
        {
            "GEO_PARTITIONS": "4",
            "GEO_BUDGET_WINDOW": "6.5",
            "GEO_DATA_DIR": "/tmp/x",
            "GEO_PROVIDERS": " offline , ipapi ",
            "GEO_APP_ID": "",
        }
    )
    assert (s.partitions, s.budget_window, s.data_dir) == (4, 6.5, Path("/tmp/x"))
    assert (s.providers, s.app_id) == (("offline", "ipapi"), "geo-pipeline")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"GEO_PARTITIONS": "eight"}, "GEO_PARTITIONS='eight' is not valid"),
        ({"GEO_PARTITIONS": "0"}, "must be at least 1"),
        ({"GEO_BUDGET_REQUESTS": "0"}, "GEO_BUDGET_REQUESTS must be >= 1"),
        ({"GEO_PROVIDERS": "maxmind"}, "unknown provider"),
        ({"GEO_NEAR_CACHE_SIZE": "-1"}, "GEO_NEAR_CACHE_SIZE must be >= 0"),
        ({"GEO_MAX_EVENT_BYTES": str(MAX_EVENT_BYTES_CEILING + 1)}, "GEO_MAX_EVENT_BYTES must be between"),
    ],
)
def test_bad_values_raise_config_error_naming_the_variable(environ: dict[str, str], message: str) -> None:
    """A malformed or out-of-range value is one ConfigError that names the variable."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(environ)


def test_api_key_is_redacted_everywhere_it_could_be_printed() -> None:
    """The key is kept, but neither describe(), repr() nor str() shows it."""
    s = Settings.from_env({"GEO_IPAPI_KEY": "sekrit-123"})
    assert s.ipapi_key is not None and s.ipapi_key.reveal() == "sekrit-123"
    shown = " ".join(value for _, value in s.describe()) + repr(s) + str(s)
    assert "sekrit-123" not in shown


def test_kafka_security_defaults_to_plaintext() -> None:
    """An empty environment means PLAINTEXT without credentials or TLS files."""
    s = Settings.from_env({})
    assert (s.kafka_security_protocol, s.kafka_sasl_username, s.kafka_sasl_password) == (
        "PLAINTEXT",
        "",
        None,
    )
    assert (s.kafka_ssl_cafile, s.kafka_ssl_certfile, s.kafka_ssl_keyfile) == (None, None, None)


def test_kafka_security_values_are_parsed(tmp_path: Path) -> None:
    """Protocol and mechanism are case-insensitive, the passwords are Secrets and the files Paths."""
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("-")
    s = Settings.from_env(
        {
            "GEO_KAFKA_SECURITY_PROTOCOL": " sasl_ssl ",
            "GEO_KAFKA_SASL_MECHANISM": "scram-sha-512",
            "GEO_KAFKA_SASL_USERNAME": "alice",
            "GEO_KAFKA_SASL_PASSWORD": "pw",
            "GEO_KAFKA_SSL_CAFILE": str(tmp_path / "ca.pem"),
            "GEO_KAFKA_SSL_CERTFILE": str(tmp_path / "cert.pem"),
            "GEO_KAFKA_SSL_KEYFILE": str(tmp_path / "key.pem"),
            "GEO_KAFKA_SSL_KEY_PASSWORD": "kp",
        }
    )
    assert (s.kafka_security_protocol, s.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert s.kafka_sasl_password == Secret("pw") and s.kafka_ssl_key_password == Secret("kp")
    assert s.kafka_ssl_keyfile == tmp_path / "key.pem"


SASL = {
    "GEO_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "GEO_KAFKA_SASL_USERNAME": "alice",
    "GEO_KAFKA_SASL_PASSWORD": "pw",
}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"GEO_KAFKA_SECURITY_PROTOCOL": "TLS"},
            "GEO_KAFKA_SECURITY_PROTOCOL='TLS' is not valid: use one of",
        ),
        ({"GEO_KAFKA_SASL_MECHANISM": "GSSAPI"}, "GEO_KAFKA_SASL_MECHANISM='GSSAPI' is not valid"),
        (
            SASL | {"GEO_KAFKA_SASL_PASSWORD": ""},
            "SASL_SSL needs GEO_KAFKA_SASL_USERNAME and GEO_KAFKA_SASL_PAS",
        ),
        (SASL | {"GEO_KAFKA_SASL_USERNAME": ""}, "SASL_SSL needs GEO_KAFKA_SASL_USERNAME"),
        ({"GEO_KAFKA_SASL_USERNAME": "alice"}, "GEO_KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use SASL"),
        (
            SASL | {"GEO_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "GEO_KAFKA_SSL_CAFILE": "/x/ca.pem"},
            "GEO_KAFKA_SSL_CAFILE set but GEO_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT does not use TLS",
        ),
        (
            {"GEO_KAFKA_SECURITY_PROTOCOL": "SSL", "GEO_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
            "GEO_KAFKA_SSL_CAFILE='/nonexistent/ca.pem': no such file",
        ),
        (
            {"GEO_KAFKA_SECURITY_PROTOCOL": "SSL", "GEO_KAFKA_SSL_CERTFILE": __file__},
            "GEO_KAFKA_SSL_CERTFILE and GEO_KAFKA_SSL_KEYFILE go together",
        ),
        (
            {"GEO_KAFKA_SECURITY_PROTOCOL": "SSL", "GEO_KAFKA_SSL_KEYFILE": __file__},
            "GEO_KAFKA_SSL_CERTFILE and GEO_KAFKA_SSL_KEYFILE go together",
        ),
        (
            {"GEO_KAFKA_SECURITY_PROTOCOL": "SSL", "GEO_KAFKA_SSL_KEY_PASSWORD": "kp"},
            "GEO_KAFKA_SSL_KEY_PASSWORD is set but GEO_KAFKA_SSL_KEYFILE is not",
        ),
    ],
    ids=[
        "protocol",
        "mechanism",
        "no-password",
        "no-username",
        "sasl-without-protocol",
        "tls-without-protocol",
        "missing-file",
        "cert-without-key",
        "key-without-cert",
        "key-password-without-key",
    ],
)
def test_bad_kafka_security_raises_config_error_naming_the_variable(
    environ: dict[str, str], message: str
) -> None:
    """Every inconsistent Kafka security setting is one ConfigError that names the variable(s) to fix."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(environ)


def test_kafka_passwords_are_redacted_everywhere_they_could_be_printed(tmp_path: Path) -> None:
    """The SASL and TLS key passwords are kept but never shown by describe(), repr() or str()."""
    (tmp_path / "c.pem").write_text("-")
    s = Settings.from_env(
        SASL
        | {
            "GEO_KAFKA_SASL_PASSWORD": "sasl-sekrit-1",
            "GEO_KAFKA_SSL_CERTFILE": str(tmp_path / "c.pem"),
            "GEO_KAFKA_SSL_KEYFILE": str(tmp_path / "c.pem"),
            "GEO_KAFKA_SSL_KEY_PASSWORD": "key-sekrit-2",
        }
    )
    assert s.kafka_sasl_password is not None and s.kafka_sasl_password.reveal() == "sasl-sekrit-1"
    shown = " ".join(value for _, value in s.describe()) + repr(s) + str(s)
    assert "sasl-sekrit-1" not in shown and "key-sekrit-2" not in shown
    assert dict(s.describe())["GEO_KAFKA_SASL_USERNAME"] == "alice"
