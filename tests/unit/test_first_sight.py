"""The hot path's first-sight JSON, built from a cached tail, is byte for byte the entry the table's owner
builds for the same IP at the same time."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.app import (
    first_sight_factory,
    offline_providers,
    offline_sources,
    provisional_factory,
    retry_policy,
)
from pipeline.config.settings import Settings

SETTINGS = Settings.from_env({}, providers=("offline",))
SOURCES = offline_sources(offline_providers(SETTINGS))
POLICY = retry_policy(SETTINGS)
SIGHT = first_sight_factory(SOURCES, SETTINGS.providers, POLICY)
PROVISIONAL = provisional_factory(SOURCES, SETTINGS.providers, POLICY)


@settings(max_examples=1500)
@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)), st.sampled_from([1.0, 1.5, 1_765_000_000.25]))
def test_provisional_json_is_the_first_sight_entrys_json(address: Any, now: float) -> None:
    """Cached or not, global or private, known to the offline data or not: the same bytes."""
    ip = str(address)
    assert PROVISIONAL(ip, now) == SIGHT(ip, now).to_json()
    assert PROVISIONAL(ip, now) == SIGHT(ip, now).to_json()  # the second one comes from the tail cache
