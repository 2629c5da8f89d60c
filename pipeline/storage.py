"""RocksDB's memory in one worker: a single budget shared by every database the process opens.

Why: a worker opens one RocksDB per table partition it holds (active or standby) and one for its replica of
the resolved topic. Sized database by database, their memory grew with the partitions held, and with the
table itself: by default RocksDB keeps every file's index and bloom-filter blocks in memory outside its
block cache, so they grow with the number of keys, without bound, which at millions of IPs is the part of
a worker's memory that kept growing. Here every database charges its data blocks, its index and filter
blocks, and its memtables to one LRU cache of MEMORY bytes (the setup RocksDB's own documentation, "Memory
usage in RocksDB", gives for a bounded process), so RocksDB's share of a worker stays bounded whatever the
table holds; what is evicted is read again from the files (the operating system's page cache, off the
worker's own memory).

Index and filters are partitioned (a two-level index, a filter per index partition, the top level pinned).
Charged to the cache whole, a file's index and filter were each one large block that RocksDB read again
from the file on every lookup (https://github.com/facebook/rocksdb/issues/3961 and /10149 report the same):
365-390 us a read of a replica of 300,000 entries, even with a 512 MiB cache; partitioned, 4.5 us (1.7 us
for an IP it does not hold), as fast as with the blocks outside the cache (docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes

import rocksdict

MEMORY = 32 * 1024 * 1024  # bytes for all of a worker's RocksDB: blocks, index and filter blocks, memtables
MEMTABLES = 16 * 1024 * 1024  # bytes of MEMORY memtables may hold before RocksDB flushes the largest
MAX_OPEN_FILES = 256  # per database: a table partition holds tens of files, the replica a few more
M_ARENA_MAX = -8  # glibc's mallopt parameters (malloc.h): the most malloc arenas,
M_MMAP_THRESHOLD = -3  # and the size from which a block gets its own mapping, given back when freed
MMAP_THRESHOLD = 256 * 1024  # bytes: Kafka fetch buffers and RocksDB's large reads are mapped, never kept

_shared: tuple[rocksdict.Cache, rocksdict.WriteBufferManager] | None = None


def shared() -> tuple[rocksdict.Cache, rocksdict.WriteBufferManager]:
    """The process's one block cache and the memtable budget charged to it, made on first use."""
    global _shared
    if _shared is None:
        cache = rocksdict.Cache(MEMORY)
        buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(MEMTABLES, False, cache)
        _shared = (cache, buffers)
    return _shared


def options(write_buffer: int, bloom_bits: int) -> rocksdict.Options:
    """Options for one database in the shared budget: memtables of `write_buffer` bytes (two at most), a
    bloom filter of `bloom_bits` bits per key, partitioned with the index; the top level of both, and all
    of L0's (the files every read checks first), stay pinned in the cache."""
    cache, buffers = shared()
    opened = rocksdict.Options(raw_mode=True)
    opened.create_if_missing(True)
    opened.set_write_buffer_size(write_buffer)
    opened.set_max_write_buffer_number(2)
    opened.set_max_open_files(MAX_OPEN_FILES)
    opened.set_write_buffer_manager(buffers)
    table = rocksdict.BlockBasedOptions()
    table.set_bloom_filter(bloom_bits, False)
    table.set_block_cache(cache)
    table.set_cache_index_and_filter_blocks(True)
    table.set_index_type(rocksdict.BlockBasedIndexType.two_level_index_search())
    table.set_partition_filters(True)
    table.set_pin_top_level_index_and_filter(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    opened.set_block_based_table_factory(table)
    return opened


def usage() -> int:
    """Bytes the shared cache holds now (blocks and the memtables charged to it): tests and diagnostics."""
    return shared()[0].get_usage()


def tune_malloc(arenas: int) -> bool:
    """Cap glibc's malloc arenas at `arenas` and fix its mapping threshold at MMAP_THRESHOLD, for the rest
    of the process (0 leaves glibc as it is: eight arenas per core, a threshold that follows what was
    freed); True when glibc took both. Call it before threads start.

    Why: glibc gives a thread that allocates while another holds an arena an arena of its own, and RocksDB's
    flush and compaction threads allocate and free blocks by the megabyte; each arena keeps what was freed
    in it for later, so memory freed in one is not reused by another. And glibc raises its threshold for
    giving a large block its own mapping to the size of any such block freed, after which megabyte Kafka
    fetch buffers come from the heap and leave holes in it when freed; a fixed threshold keeps them mapped
    and returned. Peak RSS in a 300,000-IP scale run: 229 MiB with glibc's defaults, 222 MiB with two
    arenas, 210 MiB with both (docs/benchmarks.md).
    """
    if arenas <= 0:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows): its allocator has no such setting
        return False
    return bool(mallopt(M_ARENA_MAX, arenas)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
