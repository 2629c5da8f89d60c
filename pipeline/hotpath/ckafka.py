"""The hot path's consumer and producer on confluent-kafka (`GEO_INGEST_CLIENT=confluent`): their
librdkafka properties, chosen to behave as the aiokafka pair in service.py does. The clients themselves
(pipeline/kafka/confluent.py, pipeline/kafka/confluent_producer.py) show aiokafka's face, so the hot path's
loop is one for both clients. Imported only when chosen: confluent-kafka is the optional `fast` extra.
"""

from __future__ import annotations

from pipeline.config.settings import Settings
from pipeline.kafka.config import confluent_config
from pipeline.kafka.confluent import ConfluentConsumer
from pipeline.kafka.confluent_producer import ConfluentProducer

SESSION_TIMEOUT_MS = 10_000  # aiokafka's default: a killed worker's partitions move on within seconds
HEARTBEAT_MS = 3_000  # aiokafka's default, a third of the session timeout
MESSAGE_TIMEOUT_MS = 40_000  # a record not delivered by then fails, and the batch is replayed (aiokafka's
# request timeout: the same bound on how long a batch waits for a broker that is gone)
PREFETCH_KBYTES = 16 * 1024  # librdkafka's fetched-but-not-consumed queue, per client (default 64 MiB)


def confluent_clients(settings: Settings, linger_ms: int) -> tuple[ConfluentProducer, ConfluentConsumer]:
    """The hot path's producer and its consumer in the `<app>-ingest` group, on librdkafka."""
    s = settings
    producer = ConfluentProducer(
        {
            **confluent_config(s),
            "client.id": f"{s.app_id}-ingest",
            "acks": "all",
            "linger.ms": linger_ms,
            # retries keep each partition's order (the aiokafka producer sends one batch per partition at
            # a time); idempotence needs only WRITE on the topics since Kafka 3.0
            "enable.idempotence": True,
            "message.timeout.ms": MESSAGE_TIMEOUT_MS,
        }
    )
    consumer = ConfluentConsumer(
        {
            **confluent_config(s),
            "client.id": f"{s.app_id}-ingest",
            "group.id": f"{s.app_id}-ingest",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # the aiokafka consumers of the group use round robin too: a group can mix both clients while
            # workers are switched over one by one
            "partition.assignment.strategy": "roundrobin",
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_MS,
            "max.partition.fetch.bytes": max(1024 * 1024, s.max_event_bytes + 1024),
            "queued.max.messages.kbytes": PREFETCH_KBYTES,
        }
    )
    return producer, consumer
