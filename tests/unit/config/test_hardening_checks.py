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
