"""Offline data that keeps itself current: one download per cluster, the same build on every worker.

Pure decisions (no loop, no I/O): `sources` (what to ask each vendor, how to read its answer), `schedule`
(when to check, the daily cap, back-off, staleness), `builds` (unpacking, manifests, chunks, the topic's
state). The shells: `fetch` (the HTTP download, aiohttp) and `service` (the lease, the compacted topic,
the atomic write into the data dir and the hand-over to the reload). docs/data-updates.md tells the story.
"""
