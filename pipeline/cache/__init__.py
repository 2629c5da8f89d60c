"""The geo cache: the changelog-backed Faust table in RocksDB, its only writer (the cache agent), the pure
retry policy, and the timers that re-ask what is still unknown.
"""
