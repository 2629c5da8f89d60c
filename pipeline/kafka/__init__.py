"""Kafka plumbing shared by every wing: client configuration, small clients and the partitioner hash, the
start-up preflight, the topic contract, and the Faust internals we rely on (with their stall watchdog).
"""
