"""The second plain loop every backlog run is measured against: the same consume-produce-commit loop as
baseline.py, on confluent-kafka (librdkafka) instead of aiokafka.

Why a second: aiokafka's loop says what the pipeline's design costs on aiokafka; librdkafka's says how far
the machine goes with a Python loop at all (it fetches, decodes and batches in C threads), so the ratio to
it is what is left on the table. Per batch: `consume` up to 2,000 records, parse each and add a geo field
(as baseline.py does), `produce` it (on a full local queue: serve deliveries and retry), `flush`, then
commit synchronously. Run in a thread: the client blocks. Needs the `bench` extra (confluent-kafka); without
it the backlog benchmark prints that it was skipped.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from importlib.util import find_spec

from pipeline.devtools.bench.baseline import PROGRESS_EVERY, Rate

BATCH = 2000  # records per consume, the hot path's INPUT_BATCH
FULL_QUEUE_WAIT = 0.01  # seconds to serve deliveries when the producer's local queue is full


def available() -> bool:
    """Whether confluent-kafka is installed (the `bench` extra)."""
    return find_spec("confluent_kafka") is not None


async def confluent_loop(bootstrap: str, source: str, dest: str, count: int, label: str) -> Rate:
    """The loop over `count` records of `source` into `dest`, timed from the first non-empty batch."""
    rate = await asyncio.to_thread(_loop, bootstrap, source, dest, count, label)
    print(f"  {rate.line()}", flush=True)
    return rate


def _loop(bootstrap: str, source: str, dest: str, count: int, label: str) -> Rate:
    from confluent_kafka import Consumer, Producer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{source}-ck-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})  # the worker's linger too
    consumer.subscribe([source])
    done, first, shown = 0, 0.0, time.monotonic()
    deadline = time.monotonic() + max(60.0, count / 200)
    geo = {"status": "resolved", "country_code": "DE", "country_name": "Germany"}
    try:
        while done < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{label}: only {done}/{count} records within the deadline")
            messages = [m for m in consumer.consume(BATCH, 1.0) if m.error() is None]
            if not messages:
                continue
            first = first or time.perf_counter()
            for m in messages:
                value = json.loads(m.value() or b"{}")
                value["geo"] = geo
                out = json.dumps(value).encode()
                while True:
                    try:
                        producer.produce(dest, out, m.key())
                        break
                    except BufferError:
                        producer.poll(FULL_QUEUE_WAIT)
            producer.flush()
            consumer.commit(asynchronous=False)
            done += len(messages)
            if time.monotonic() - shown > PROGRESS_EVERY:
                shown = time.monotonic()
                print(f"  {label}: {done}/{count}", flush=True)
        return Rate(label, done, time.perf_counter() - first)
    finally:
        consumer.close()
