"""Our murmur2 is Kafka's: every key lands in the partition aiokafka's (and Java's) partitioner picks."""

from __future__ import annotations

from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.kafka.partitioner import key_hash, murmur2


@settings(max_examples=2000)
@given(st.binary(max_size=80))
def test_murmur2_equals_aiokafkas_on_any_bytes(data: bytes) -> None:
    """Same 32-bit hash as aiokafka's reference implementation, for every length and content."""
    assert murmur2(data) == aiokafka_murmur2(data)


def test_key_hash_is_non_negative_and_matches_kafkas_known_values() -> None:
    """Known partitions of Kafka's default partitioner (values from Kafka's own murmur2 tests)."""
    assert key_hash(b"21") == -973932308 & 0x7FFFFFFF
    assert key_hash(b"foobar") == -790332482 & 0x7FFFFFFF
    assert key_hash(b"a-little-bit-long-string") == -985981536 & 0x7FFFFFFF
    assert all(key_hash(bytes([i])) >= 0 for i in range(256))
