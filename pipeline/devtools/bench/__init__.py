"""The benchmarks: each measures the pipeline beside a plain aiokafka loop (and optionally Quix Streams) on
the same broker, in the same run.
"""
