"""Development tools: the local Kafka broker, the fake ip-api, the demo, the benchmarks and their workloads.

They ship with the package so `geo-pipeline demo` works from an installed wheel, but the runtime never
imports them (a unit test checks it); the CLI imports them only for the commands that need them.
"""
