"""librdkafka's errors as aiokafka's exception classes, so the hot path tells a record that can never be
written (dead-letter it) from a failure that may pass (replay the batch) the same way for both clients.

What aiokafka raises as one of the permanent classes that pipeline/hotpath/outputs.py names, librdkafka
reports with these codes; every other code (a timeout, a leader moving, the broker down, a rebalance under
a commit) becomes a plain KafkaError, or CommitFailedError for a commit the group refused: the hot path
replays the batch.
"""

from __future__ import annotations

from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    CommitFailedError,
    CorruptRecordException,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    PolicyViolationError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
)
from confluent_kafka import KafkaError as CKafkaError

PERMANENT: dict[int, type[KafkaError]] = {
    CKafkaError.MSG_SIZE_TOO_LARGE: MessageSizeTooLargeError,  # also raised by produce() itself
    CKafkaError.RECORD_LIST_TOO_LARGE: RecordListTooLargeError,
    CKafkaError.INVALID_MSG: CorruptRecordException,
    CKafkaError.INVALID_RECORD: CorruptRecordException,
    CKafkaError.TOPIC_EXCEPTION: InvalidTopicError,
    CKafkaError.TOPIC_AUTHORIZATION_FAILED: TopicAuthorizationFailedError,
    CKafkaError.CLUSTER_AUTHORIZATION_FAILED: ClusterAuthorizationFailedError,
    CKafkaError.POLICY_VIOLATION: PolicyViolationError,
}
GROUP_REFUSED = frozenset(
    {CKafkaError.REBALANCE_IN_PROGRESS, CKafkaError.ILLEGAL_GENERATION, CKafkaError.UNKNOWN_MEMBER_ID}
)


def as_aiokafka_error(error: object) -> KafkaError:
    """The aiokafka exception for a librdkafka error (`confluent_kafka.KafkaError`, or anything else)."""
    if not isinstance(error, CKafkaError):
        return KafkaError(repr(error))
    code = error.code()
    text = f"{error.name()}: {error.str()}"
    if code in PERMANENT:
        return PERMANENT[code](text)
    if code in GROUP_REFUSED:
        return CommitFailedError(text)
    return KafkaError(text)
