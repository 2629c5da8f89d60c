"""The worker's process-wide memory settings: glibc's arena cap is applied only when asked for."""

from __future__ import annotations

import platform

import pytest

from pipeline.storage import tune_malloc


def test_zero_arenas_leaves_the_allocator_alone() -> None:
    """GEO_MALLOC_ARENAS=0 keeps glibc's default: nothing is called, nothing reported as applied."""
    assert tune_malloc(0) is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the arena cap is a glibc setting")
def test_glibc_takes_the_arena_cap() -> None:
    """On glibc the cap is taken (mallopt reports success); 16 is above what this test process uses."""
    assert tune_malloc(16) is True
