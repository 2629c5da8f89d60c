"""Settings from the environment: defaults, parsing, one clear error per bad value, secrets redacted."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import MAX_EVENT_BYTES_CEILING, Settings


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
