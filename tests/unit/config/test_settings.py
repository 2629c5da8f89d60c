"""Settings from the environment: defaults, parsing, one clear error per bad value, secrets redacted."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config.limits import MAX_EVENT_BYTES_CEILING
from pipeline.config.secret import Secret
from pipeline.config.settings import Settings
from pipeline.errors import ConfigError


def test_defaults_run_the_demo_on_one_machine() -> None:
    """An empty environment gives the documented defaults and the derived internal topic names."""
    s = Settings.from_env({})
    assert (s.kafka_bootstrap, s.partitions, s.resolve_partitions) == ("127.0.0.1:9092", 8, 1)
    assert (s.budget_requests, s.budget_window, s.providers) == (15, 60.0, ("ipapi", "offline"))
    assert (s.seen_topic, s.results_topic) == ("geo-pipeline-ips-seen", "geo-pipeline-geo-results")
    assert s.web_host == "127.0.0.1"


def test_values_are_parsed_by_type() -> None:
    """Ints, floats, paths and the provider list are parsed; empty values mean the default."""
    s = Settings.from_env(
        {
            "GEO_PARTITIONS": "4",
            "GEO_BUDGET_WINDOW": "6.5",
            "GEO_IPAPI_URL": "http://127.0.0.1:8080",
            "GEO_DATA_DIR": "/tmp/x",
            "GEO_PROVIDERS": " offline , ipapi ",
            "GEO_APP_ID": "",
        }
    )
    assert (s.partitions, s.budget_window, s.data_dir) == (4, 6.5, Path("/tmp/x"))
    assert (s.providers, s.app_id) == (("offline", "ipapi"), "geo-pipeline")


FAKE = {"GEO_IPAPI_URL": "http://127.0.0.1:8080"}  # a local fake API: the free tier's budget does not apply


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"GEO_PARTITIONS": "eight"}, "GEO_PARTITIONS='eight' is not valid"),
        ({"GEO_HTTP_TIMEOUT": "ten"}, "GEO_HTTP_TIMEOUT='ten' is not valid"),
        ({"GEO_PARTITIONS": "0"}, "GEO_PARTITIONS=0 is out of range: use at least 1 and at most 10000"),
        ({"GEO_PARTITIONS": "10001"}, "GEO_PARTITIONS=10001 is out of range"),
        ({"GEO_RESOLVE_PARTITIONS": "0"}, "GEO_RESOLVE_PARTITIONS=0 is out of range"),
        ({"GEO_RESOLVE_PARTITIONS": "20000"}, "GEO_RESOLVE_PARTITIONS=20000 is out of range"),
        ({"GEO_REPLICATION": "0"}, "GEO_REPLICATION=0 is out of range"),
        ({"GEO_NEAR_CACHE_SIZE": "-1"}, "GEO_NEAR_CACHE_SIZE=-1 is out of range: use at least 0"),
        ({"GEO_NEAR_CACHE_SIZE": "50000001"}, "GEO_NEAR_CACHE_SIZE=50000001 is out of range"),
        (
            {"GEO_MAX_EVENT_BYTES": str(MAX_EVENT_BYTES_CEILING + 1)},
            "GEO_MAX_EVENT_BYTES=524289 is out of range",
        ),
        ({"GEO_MAX_EVENT_BYTES": "10"}, "GEO_MAX_EVENT_BYTES=10 is out of range"),
        ({"GEO_SLOW_LANE_AFTER": "0"}, "GEO_SLOW_LANE_AFTER=0 is out of range"),
        ({"GEO_SLOW_LANE_INTERVAL": "-5"}, "GEO_SLOW_LANE_INTERVAL=-5 is out of range: use more than 0"),
        ({"GEO_BUDGET_REQUESTS": "0"}, "GEO_BUDGET_REQUESTS=0 is out of range"),
        ({**FAKE, "GEO_BUDGET_WINDOW": "0.5"}, "GEO_BUDGET_WINDOW=0.5 is out of range: use at least 1"),
        ({"GEO_BUDGET_WINDOW": "0"}, "GEO_BUDGET_WINDOW=0 is out of range"),
        ({"GEO_HTTP_TIMEOUT": "0"}, "GEO_HTTP_TIMEOUT=0 is out of range: use more than 0 and at most 300 s"),
        ({"GEO_HTTP_TIMEOUT": "-1"}, "GEO_HTTP_TIMEOUT=-1 is out of range"),
        ({"GEO_HTTP_TIMEOUT": "301"}, "GEO_HTTP_TIMEOUT=301 is out of range"),
        ({"GEO_HTTP_TIMEOUT": "nan"}, "GEO_HTTP_TIMEOUT=nan is out of range"),
        ({"GEO_REFRESH_AFTER": "inf"}, "GEO_REFRESH_AFTER=inf is out of range"),
        ({"GEO_RETRY_INTERVAL": "0"}, "GEO_RETRY_INTERVAL=0 is out of range"),
        ({"GEO_RETRY_INTERVAL": "-1"}, "GEO_RETRY_INTERVAL=-1 is out of range"),
        ({"GEO_RETRY_BASE": "0"}, "GEO_RETRY_BASE=0 is out of range"),
        ({"GEO_RETRY_CAP": "-1"}, "GEO_RETRY_CAP=-1 is out of range"),
        ({"GEO_RETRY_CAP": "30"}, "GEO_RETRY_CAP=30 is below GEO_RETRY_BASE=60: .* raise GEO_RETRY_CAP"),
        ({"GEO_PENDING_TIMEOUT": "15"}, "GEO_PENDING_TIMEOUT=15 is shorter than two GEO_HTTP_TIMEOUTs"),
        ({"GEO_REFRESH_AFTER": "0"}, "GEO_REFRESH_AFTER=0 is out of range"),
        ({"GEO_RESOLVE_BATCH_WAIT": "-1"}, "GEO_RESOLVE_BATCH_WAIT=-1 is out of range"),
        ({"GEO_WEB_PORT": "70000"}, "GEO_WEB_PORT=70000 is out of range"),
        ({"GEO_PROVIDERS": "maxmind"}, "unknown provider"),
        ({"GEO_BUDGET_REQUESTS": "30"}, "can send 30 requests in one of ip-api's 60 s windows"),
        ({"GEO_BUDGET_WINDOW": "30"}, "GEO_BUDGET_REQUESTS=15 per GEO_BUDGET_WINDOW=30 s can send 30"),
        ({"GEO_BUDGET_REQUESTS": "4", "GEO_BUDGET_WINDOW": "17"}, "can send 16 requests"),
        ({"GEO_BUDGET_REQUESTS": "16", "GEO_BUDGET_WINDOW": "120"}, "can send 16 requests"),
        ({"GEO_IPAPI_KEY": "k", "GEO_IPAPI_URL": "http://geo.example.com"}, "the key would travel in clear"),
        ({"GEO_IPAPI_URL": "ftp://geo.example.com"}, "GEO_IPAPI_URL must be an http:// or https:// URL"),
        ({"GEO_IPAPI_URL": "127.0.0.1:8080"}, "GEO_IPAPI_URL must be an http:// or https:// URL"),
    ],
)
def test_bad_values_raise_config_error_naming_the_variable(environ: dict[str, str], message: str) -> None:
    """A malformed or unworkable value is a ConfigError that names the variable and says what to use."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(environ)


def test_several_problems_are_reported_together() -> None:
    """Every unworkable value is named in one error, so a bad environment is fixed in one go."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"GEO_PARTITIONS": "0", "GEO_HTTP_TIMEOUT": "0", "GEO_RETRY_BASE": "-1"})
    text = str(caught.value)
    assert text.startswith("3 settings cannot work:")
    assert all(var in text for var in ("GEO_PARTITIONS=0", "GEO_HTTP_TIMEOUT=0", "GEO_RETRY_BASE=-1"))


@pytest.mark.parametrize(
    "environ",
    [
        {"GEO_BUDGET_REQUESTS": "10"},  # stricter than the free tier
        {"GEO_BUDGET_REQUESTS": "5", "GEO_BUDGET_WINDOW": "20"},  # the same rate, and no window sees 16
        {"GEO_BUDGET_REQUESTS": "1", "GEO_BUDGET_WINDOW": "4"},
        {"GEO_BUDGET_REQUESTS": "15", "GEO_BUDGET_WINDOW": "61"},
        {**FAKE, "GEO_BUDGET_WINDOW": "6"},  # the fake API's short window
        {**FAKE, "GEO_BUDGET_WINDOW": "1", "GEO_BUDGET_REQUESTS": "100"},
        {"GEO_PROVIDERS": "offline", "GEO_BUDGET_WINDOW": "6"},  # ip-api is never called
        {"GEO_IPAPI_KEY": "k", "GEO_BUDGET_REQUESTS": "1000"},  # pro: HTTPS, the plan's budget
        {"GEO_IPAPI_KEY": "k", "GEO_IPAPI_URL": "https://geo.example.com"},
        {"GEO_IPAPI_KEY": "k", "GEO_IPAPI_URL": "http://127.0.0.1:8080"},  # loopback: never on a wire
        {"GEO_IPAPI_KEY": "k", "GEO_IPAPI_URL": "http://localhost:8080"},
        {"GEO_IPAPI_KEY": "k", "GEO_IPAPI_URL": "http://[::1]:8080"},
        {"GEO_PENDING_TIMEOUT": "20", "GEO_HTTP_TIMEOUT": "10"},  # exactly two HTTP timeouts
        {"GEO_HTTP_TIMEOUT": "300", "GEO_PENDING_TIMEOUT": "600"},
        {"GEO_RETRY_BASE": "60", "GEO_RETRY_CAP": "60"},
        {"GEO_NEAR_CACHE_SIZE": "0", "GEO_PARTITIONS": "10000", "GEO_WEB_PORT": "0"},
        {"GEO_NEAR_CACHE_SIZE": "50000000", "GEO_RESOLVE_BATCH_WAIT": "0"},
    ],
)
def test_workable_values_are_accepted(environ: dict[str, str]) -> None:
    """Stricter budgets, local fake APIs, keys over HTTPS or loopback and edge values all pass."""
    Settings.from_env(environ)


@pytest.mark.parametrize(
    "overrides",
    [
        # tests/support/pipeline.py outage_settings, plus test_workers' pending timeouts
        {"retry_interval": 1.0, "retry_base": 2.0, "retry_cap": 8.0, "pending_timeout": 30.0},
        # tests/integration/resolver/test_service.py, faults test
        {"http_timeout": 2.0, "retry_interval": 1.0, "retry_base": 1.0, "retry_cap": 5.0},
        # pipeline/devtools bench_budget (window 3 s in CI) and demo
        {"budget_window": 3.0, "budget_requests": 15, "retry_interval": 1.0, "retry_base": 1.0},
        {"budget_window": 10.0, "retry_interval": 5.0, "retry_base": 5.0, "partitions": 4},
    ],
)
def test_test_and_devtool_configurations_are_accepted(overrides: dict[str, object]) -> None:
    """The short windows and retries the integration tests and dev tools use pass with a fake API URL."""
    values = {"providers": ("ipapi",), "ipapi_url": "http://127.0.0.1:45678", "budget_window": 6.0}
    Settings.from_env({}, **{**values, **overrides})


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
