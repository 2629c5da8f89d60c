"""GEO_IP_FIELDS, GEO_TRUSTED_PROXIES, GEO_OUTPUT_FORMAT and GEO_ENRICHED_KEY: parsed, defaulted, refused."""

from __future__ import annotations

import pytest

from pipeline.config.settings import Settings
from pipeline.errors import ConfigError


def test_defaults_are_todays_input_and_output() -> None:
    """Unset: the `ip` field, the envelope, keyed by IP, no trusted proxies."""
    s = Settings.from_env({})
    assert (s.ip_fields, s.output_format, s.enriched_key_mode, s.trusted_proxies) == (
        ("ip",),
        "envelope",
        "ip",
        (),
    )


def test_values_are_parsed_and_the_key_follows_the_field_count() -> None:
    """Comma lists are split and stripped; several fields key by the input unless told otherwise."""
    s = Settings.from_env({"GEO_IP_FIELDS": " source.ip , destination.ip ", "GEO_OUTPUT_FORMAT": "ECS"})
    assert (s.ip_fields, s.output_format, s.enriched_key_mode) == (
        ("source.ip", "destination.ip"),
        "ecs",
        "input",
    )
    s = Settings.from_env({"GEO_IP_FIELDS": "src_ip,dest_ip", "GEO_ENRICHED_KEY": "ip"})
    assert s.enriched_key_mode == "ip"
    s = Settings.from_env(
        {"GEO_IP_FIELDS": "xff:x_forwarded_for", "GEO_TRUSTED_PROXIES": "10.0.0.0/8,fd00::/8"}
    )
    assert s.trusted_proxies == ("10.0.0.0/8", "fd00::/8")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"GEO_IP_FIELDS": "source..ip"}, "GEO_IP_FIELDS: 'source..ip' is not a dot path"),
        ({"GEO_IP_FIELDS": "a[0]"}, "names and dots only"),
        ({"GEO_IP_FIELDS": "src_ip,src_ip"}, "names a field twice"),
        ({"GEO_IP_FIELDS": ",".join(f"f{i}" for i in range(17))}, "must name 1 to 16 fields"),
        ({"GEO_IP_FIELDS": "client.ip,client.address", "GEO_OUTPUT_FORMAT": "ecs"}, "under one parent"),
        ({"GEO_OUTPUT_FORMAT": "otel"}, "GEO_OUTPUT_FORMAT='otel' is not valid: use envelope or ecs"),
        ({"GEO_ENRICHED_KEY": "ts"}, "GEO_ENRICHED_KEY='ts' is not valid"),
        ({"GEO_IP_FIELDS": "xff:x", "GEO_TRUSTED_PROXIES": "10.0.0.0/33"}, "'10.0.0.0/33' is not a network"),
        ({"GEO_TRUSTED_PROXIES": "10.0.0.0/8"}, "no GEO_IP_FIELDS field is an xff: chain"),
    ],
)
def test_unworkable_values_are_refused_with_the_fix(environ: dict[str, str], message: str) -> None:
    """A bad path, a duplicate, two ECS targets in one parent, an unknown format or key, a bad proxy CIDR
    or proxies with no chain to apply them to: a ConfigError naming the variable."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(environ)


def test_two_top_level_fields_are_fine_in_ecs() -> None:
    """src_ip and dest_ip share the top level but get their own targets (src_ip_geo, dest_ip_geo)."""
    assert Settings.from_env({"GEO_IP_FIELDS": "src_ip,dest_ip", "GEO_OUTPUT_FORMAT": "ecs"}).ip_fields
