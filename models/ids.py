"""Stable ids: the same string hashes to the same number in every process, run and machine.

Python's hash() is salted per process, so it cannot be used for embedding buckets or stored state.
32 bits keep the per-user state small; collisions only merge embedding rows, which buckets do anyway.
"""
from __future__ import annotations

import hashlib


def stable_hash(value: str | None) -> int:
    """A 32-bit unsigned hash of `value`; 0 is reserved for "absent"."""
    if value is None or value == "":
        return 0
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "little") or 1


def bucket(value_hash: int, n_buckets: int) -> int:
    """Map a stable hash to an embedding row in [0, n_buckets); row 0 means "absent"."""
    if value_hash == 0:
        return 0
    return 1 + value_hash % (n_buckets - 1)
