"""The proxy/hosting/mobile flags through the cache policy: they travel with the geography they came with,
through first sights, answers, failed refreshes, re-answers and the results topic's JSON."""

from __future__ import annotations

import random

from pipeline.addresses import AddressKind
from pipeline.cache.policy import RetryPolicy, apply_result, first_sight, on_reanswer
from pipeline.messages import ResultMessage, decode_results_message, encode_result
from pipeline.models import EntryStatus, GeoData, GeoEntry, TransientFailure
from pipeline.models import Resolved as R

POLICY = RetryPolicy()
NOW = 1_700_000_000.0
OFFLINE = GeoData("GB", "United Kingdom", city="London", proxy=True, hosting=None, mobile=True)  # mmdb files
IPAPI = GeoData("GB", "United Kingdom", city="London", asn=20712, proxy=False, hosting=True, mobile=False)


def test_a_first_sight_carries_the_offline_flags_and_the_remote_answer_replaces_them() -> None:
    """The pending entry shows what the offline files flag; ip-api's answer becomes the entry's geography,
    flags included (an entry's fields all come from the one answer it holds)."""
    pending = first_sight("81.2.69.142", AddressKind.GLOBAL, OFFLINE, "mmdb", NOW, POLICY, "mmdb:x@1")
    assert pending.geo == OFFLINE and pending.status is EntryStatus.PENDING
    resolved = apply_result(pending, 1, R(IPAPI, "ipapi", "ipapi"), NOW + 1, POLICY, random.Random(1))
    assert resolved is not None and resolved.geo == IPAPI and resolved.first_seen == NOW


def test_a_failed_refresh_and_a_transient_failure_keep_the_flags() -> None:
    """A resolved entry whose refresh fails keeps its answer and flags; a pending one whose remote answer
    fails keeps the offline answer and its flags (partial)."""
    resolved = GeoEntry("1.1.1.1", EntryStatus.RESOLVED, IPAPI, "ipapi", 1, NOW, NOW, NOW, None, "ipapi", NOW)
    failed = apply_result(resolved, 2, TransientFailure("HTTP 503", "ipapi"), NOW, POLICY, random.Random(1))
    assert failed is not None and failed.geo == IPAPI and failed.status is EntryStatus.RESOLVED
    pending = first_sight("1.1.1.1", AddressKind.GLOBAL, OFFLINE, "mmdb", NOW, POLICY, "mmdb:x@1")
    partial = apply_result(pending, 1, TransientFailure("HTTP 503", "ipapi"), NOW, POLICY, random.Random(1))
    assert partial is not None and partial.status is EntryStatus.PARTIAL and partial.geo == OFFLINE


def test_a_fallback_answer_and_a_reanswer_carry_their_own_flags() -> None:
    """A transient failure carrying the chain's fallback geography brings its flags; newer offline data
    re-answers an offline entry with the new data's flags (a file that no longer lists it: None)."""
    pending = first_sight("1.1.1.1", AddressKind.GLOBAL, None, None, NOW, POLICY)
    fallback = TransientFailure("HTTP 503", "ipapi", OFFLINE, True, "mmdb:x@1")
    partial = apply_result(pending, 1, fallback, NOW, POLICY, random.Random(1))
    assert partial is not None and partial.geo == OFFLINE and partial.provider == "ipapi"
    offline = first_sight("1.1.1.1", AddressKind.GLOBAL, OFFLINE, "mmdb", NOW, POLICY, "mmdb:x@1")
    unlisted = GeoData("GB", "United Kingdom", city="London")
    fresh = first_sight("1.1.1.1", AddressKind.GLOBAL, unlisted, "mmdb", NOW, POLICY, "mmdb:x@2")
    decision = on_reanswer(offline, fresh, NOW + 5)
    assert decision.entry is not None and decision.entry.geo == unlisted and decision.entry.geo.proxy is None


def test_the_flags_survive_the_results_topic() -> None:
    """A result's flags (True, False and None) survive the results record's JSON."""
    for geo in (IPAPI, OFFLINE):
        for result in (R(geo, "ipapi", "ipapi"), TransientFailure("x", "ipapi", geo, True, "mmdb:x@1")):
            assert decode_results_message(encode_result(3, result)) == ResultMessage(3, result)
