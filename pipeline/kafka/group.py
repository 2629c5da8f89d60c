"""The app's consumer group as its coordinator describes it: the URL each Faust worker advertised.

Every worker is a member of the group named after the app (GEO_APP_ID), and Faust's assignor puts each
member's URL (its `canonical_url`, our GEO_ADVERTISED_URL) into the member metadata it sends to the group
coordinator. `member_urls` asks the coordinator to describe the group and reads those URLs back, one per
member, duplicates kept: the CLI lists the workers from them (pipeline/cli/cluster.py) and each worker's
readiness refuses a URL that two members share (pipeline/web/server.py), because Faust's assignor keys its
partition map by URL and silently merges such workers.
"""

from __future__ import annotations

import asyncio
import json
import time

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from pipeline.config.settings import Settings
from pipeline.kafka.config import client_kwargs

MEMBER_METADATA = 3  # index of member_metadata in a DescribeGroups member (member_id, client_id, host, ...)
MEMBERS = 5  # index of the members in a DescribeGroups group
GROUP_STATE = 2  # index of the state in a DescribeGroups group
REBALANCING = ("PreparingRebalance", "CompletingRebalance")  # no member metadata is shared meanwhile
REQUEST_TIMEOUT_MS = 10_000  # one DescribeGroups answer


def member_url(metadata: bytes) -> str | None:
    """The URL a Faust worker advertised in its group membership (None for a non-Faust member)."""
    try:
        user_data = ConsumerProtocolMemberMetadata.decode(metadata).user_data
        url = json.loads(user_data).get("url")
    except Exception:  # a member of another protocol or version: not one of our workers
        return None
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None


async def member_urls(settings: Settings, *, wait: float = 0.0) -> list[str]:
    """The URL of each member of the app's group, one per member (sorted, duplicates kept; a non-Faust
    member has none). The coordinator shares member metadata only while the group is stable: during a
    rebalance this waits for it, `wait` seconds at most."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings), request_timeout_ms=REQUEST_TIMEOUT_MS)
    await admin.start()
    try:
        deadline = time.monotonic() + wait
        while True:
            responses = await admin.describe_consumer_groups([settings.app_id])
            groups = [group for response in responses for group in response.groups]
            rebalancing = any(group[GROUP_STATE] in REBALANCING for group in groups)
            if not rebalancing or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)  # polling the coordinator: it has no "stable again" notification
    finally:
        await admin.close()
    urls = [member_url(member[MEMBER_METADATA]) for group in groups for member in group[MEMBERS]]
    return sorted(url for url in urls if url)
