"""Decoded user states kept between micro-batches, so a returning user is not decoded from bytes again.

The `users` table (RocksDB + changelog) stays the source of truth: every batch still writes each touched
user's bytes to it. The cache only saves `UserState.from_bytes` for users this worker touched recently.
It is valid while nobody else writes those users, so it is emptied whenever that may have happened:
on every rebalance (a new consumer generation: partitions may have moved and come back restored from
the changelog), after a batch that failed half-way (its states may be half-applied), and per user on erasure.
"""
from __future__ import annotations

from collections import OrderedDict

from models.state import UserState


class UserCache:
    def __init__(self, max_users: int) -> None:
        self.max_users = max_users
        self.generation: object = None  # the consumer generation and core layout (streams/app.py)
        self._states: OrderedDict[str, UserState] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, user_id: str) -> bool:
        return user_id in self._states

    def check_generation(self, generation: object) -> bool:
        """Empty the cache when the consumer group rebalanced or the core layout changed since the last batch
        (the partitions may have moved); True if it did."""
        if generation != self.generation:
            self._states.clear()
            self.generation = generation
            return True
        return False

    def get(self, user_id: str) -> UserState | None:
        state = self._states.get(user_id)
        if state is None:
            self.misses += 1
            return None
        self._states.move_to_end(user_id)
        self.hits += 1
        return state

    def put(self, user_id: str, state: UserState) -> list[str]:
        """Keep `state`; returns the users dropped to make room (least recently used first)."""
        if self.max_users <= 0:
            return [user_id]
        self._states[user_id] = state
        self._states.move_to_end(user_id)
        dropped = []
        while len(self._states) > self.max_users:
            dropped.append(self._states.popitem(last=False)[0])  # least recently used
        return dropped

    def forget(self, user_id: str) -> None:
        self._states.pop(user_id, None)

    def clear(self) -> None:
        self._states.clear()
