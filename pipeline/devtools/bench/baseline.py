"""What every benchmark measures against: a plain aiokafka consume-produce loop, its Rate, and the topics.

Why a baseline: absolute events/s depend on the machine and the broker, so a number alone says little. A
consume-parse-produce-commit loop over the same messages is the least work any Kafka consumer in Python
can do; a benchmark runs it on the same broker in the same run and prints the pipeline's rate as a ratio
to it. Its topics get the pipeline's partition count, so both read and write in parallel alike.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

PARTITIONS = 4  # of every benchmark topic: the pipeline's and the baseline's alike
PROGRESS_EVERY = 2.0  # seconds between progress lines


@dataclass(frozen=True)
class Rate:
    """One measured run: `count` records in `seconds` (first to last output)."""

    label: str
    count: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")

    def line(self) -> str:
        return f"{self.label}: {self.count} events in {self.seconds:.2f}s = {self.per_second:,.0f} events/s"


async def baseline(bootstrap: str, source: str, dest: str, count: int, label: str) -> Rate:
    """A plain consume-and-produce loop: per getmany batch, parse, add geo, send, await delivery, commit.

    The clock starts at the first non-empty batch, so group join and assignment are not measured.
    """
    group = f"{source}-{uuid.uuid4().hex[:6]}"
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)  # the worker's linger too
    await asyncio.gather(consumer.start(), producer.start())
    done, first, shown, deadline = 0, 0.0, time.monotonic(), time.monotonic() + max(60.0, count / 200)
    try:
        while done < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{label}: only {done}/{count} records within the deadline")
            batch = await consumer.getmany(timeout_ms=500)
            if not batch:
                continue
            first = first or time.perf_counter()
            futures = []
            for records in batch.values():
                for record in records:
                    value = json.loads(record.value)
                    value["geo"] = {"status": "resolved", "country_code": "DE", "country_name": "Germany"}
                    futures.append(await producer.send(dest, json.dumps(value).encode(), key=record.key))
            await asyncio.gather(*futures)
            await consumer.commit()
            done += len(futures)
            if time.monotonic() - shown > PROGRESS_EVERY:
                shown = time.monotonic()
                print(f"  {label}: {done}/{count}", flush=True)
        rate = Rate(label, done, time.perf_counter() - first)
    finally:
        await asyncio.gather(consumer.stop(), producer.stop())
    print(f"  {rate.line()}", flush=True)
    return rate


async def create_topics(bootstrap: str, names: list[str], configs: Mapping[str, str] | None = None) -> None:
    """The baseline's topics get the pipeline's partition count, so both read and write in parallel alike."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, PARTITIONS, 1, topic_configs=dict(configs or {})) for name in names]
        )
    finally:
        await admin.close()


async def stamped_on_append(bootstrap: str, topic: str) -> None:
    """Create the pipeline's enriched topic with broker timestamps (LogAppendTime) before the workers do:
    an enriched record keeps its input's timestamp, so the benchmarks time the output by when the broker
    appended it (the moment the worker wrote it, give or take the linger)."""
    await create_topics(bootstrap, [topic], {"message.timestamp.type": "LogAppendTime"})


async def delete_topics(bootstrap: str, run: str) -> None:
    """Best effort: a shared dev broker should not collect a dozen topics per benchmark run."""
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            names = [t for t in await admin.list_topics() if run in t]
            if names:
                await admin.delete_topics(names)
        finally:
            await admin.close()
    except Exception as exc:  # cleanup must not hide the benchmark's result
        print(f"bench: could not delete topics of run {run}: {exc}")
