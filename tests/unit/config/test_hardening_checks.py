"""Settings refusals and warnings added by the hardening round (issue 19): free-tier egress, forwarding
allow-list, SASL PLAIN in clear."""

from __future__ import annotations

import pytest

from pipeline.config.settings import Settings
from pipeline.errors import ConfigError

# -- item 7: several resolve partitions on the free endpoint ------------------------------------------------


def test_several_resolve_partitions_on_the_free_tier_are_refused() -> None:
    """Two resolve partitions without a key, ip-api a provider: refused, naming the fixes."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"GEO_RESOLVE_PARTITIONS": "2"})
    text = str(caught.value)
    assert "GEO_RESOLVE_PARTITIONS=2" in text
    assert "GEO_IPAPI_KEY" in text and "GEO_EGRESS_IP" in text


@pytest.mark.parametrize(
    "environ",
    [
        {"GEO_RESOLVE_PARTITIONS": "1"},
        {"GEO_RESOLVE_PARTITIONS": "3", "GEO_IPAPI_KEY": "k"},
        {"GEO_RESOLVE_PARTITIONS": "3", "GEO_PROVIDERS": "offline"},
        {"GEO_RESOLVE_PARTITIONS": "3", "GEO_IPAPI_URL": "http://127.0.0.1:8080"},
        {"GEO_RESOLVE_PARTITIONS": "3", "GEO_EGRESS_IP": "81.2.69.142"},
    ],
)
def test_several_resolve_partitions_pass_when_the_budget_is_not_shared(environ: dict[str, str]) -> None:
    """One partition, a key, no ip-api, a non-free endpoint, or a declared egress: accepted."""
    assert Settings.from_env(environ).resolve_partitions == int(environ["GEO_RESOLVE_PARTITIONS"])


@pytest.mark.parametrize("egress", ["not-an-ip", "10.0.0.1", "127.0.0.1"])
def test_a_declared_egress_must_be_a_public_address(egress: str) -> None:
    """GEO_EGRESS_IP names the address ip-api sees: a private, loopback or malformed one is refused."""
    with pytest.raises(ConfigError, match="GEO_EGRESS_IP"):
        Settings.from_env({"GEO_RESOLVE_PARTITIONS": "2", "GEO_EGRESS_IP": egress})


# -- item 13c: SASL PLAIN over a plaintext connection -------------------------------------------------------

SASL = {"GEO_KAFKA_SASL_USERNAME": "geo", "GEO_KAFKA_SASL_PASSWORD": "secret-pw"}


@pytest.mark.parametrize(
    ("protocol", "mechanism", "warned"),
    [
        ("SASL_PLAINTEXT", "PLAIN", True),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256", False),  # a challenge, never the password itself
        ("SASL_SSL", "PLAIN", False),
    ],
)
def test_sasl_plain_in_clear_is_cautioned(protocol: str, mechanism: str, warned: bool) -> None:
    """PLAIN over SASL_PLAINTEXT is accepted but cautioned (the password crosses the network in clear),
    naming both settings and never the password."""
    from pipeline.config.checks import cautions

    env = {**SASL, "GEO_KAFKA_SECURITY_PROTOCOL": protocol, "GEO_KAFKA_SASL_MECHANISM": mechanism}
    found = cautions(Settings.from_env(env))
    assert len(found) == int(warned)
    if warned:
        assert "GEO_KAFKA_SASL_MECHANISM=PLAIN" in found[0] and "SASL_PLAINTEXT" in found[0]
        assert "secret-pw" not in found[0]
