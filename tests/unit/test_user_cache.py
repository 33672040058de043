"""The worker's decoded-state cache: LRU and generation rules, and that scoring from a cached state is
byte-for-byte the same as scoring from the state decoded from the table."""
from __future__ import annotations

import itertools
from pathlib import Path

from models.state import UserState
from streams import pipeline as pipeline_module
from streams.pipeline import Pipeline
from streams.user_cache import UserCache
from tests.unit.test_pipeline import Store, events, make_scorer, to_records  # noqa: F401 (fixture)


def test_lru_eviction_generation_change_and_forget():
    cache = UserCache(max_users=2)
    cache.check_generation(1)
    a, b, c = (UserState.new(u) for u in "abc")
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") is a  # "a" is now the most recent, so "b" goes first
    cache.put("c", c)
    assert cache.get("b") is None and cache.get("a") is a and cache.get("c") is c
    cache.forget("a")
    assert cache.get("a") is None and len(cache) == 1
    cache.check_generation(1)
    assert len(cache) == 1
    cache.check_generation(2)  # a rebalance: partitions may have been restored from the changelog
    assert len(cache) == 0 and cache.hits == 3 and cache.misses == 2


def test_disabled_cache_keeps_nothing():
    cache = UserCache(max_users=0)
    cache.put("a", UserState.new("a"))
    assert cache.get("a") is None


def test_cached_states_score_exactly_like_states_decoded_from_the_table(tmp_path: Path, events, monkeypatch):
    records = to_records(events, partitions=3)
    scorer = make_scorer(tmp_path)

    def run(use_cache: bool) -> tuple[list, dict]:
        clock = itertools.count(1_700_000_000_000)  # the same scored_at values in both runs
        monkeypatch.setattr(pipeline_module, "now_ms", lambda: float(next(clock)))
        store, cache, pipe, out = Store(), UserCache(1000), Pipeline(scorer), []
        cache.check_generation(0)

        def load(user_id, rec):
            return (cache.get(user_id) if use_cache else None) or store.load(user_id, rec)

        for i in range(0, len(records), 48):
            result = pipe.process(records[i:i + 48], load)
            for uid, state in result.states.items():
                store.data[uid] = state.to_bytes()
                cache.put(uid, state)
            out += result.intents
        assert (cache.hits > 0) == use_cache
        return out, store.data

    cached_intents, cached_table = run(use_cache=True)
    decoded_intents, decoded_table = run(use_cache=False)
    assert cached_intents == decoded_intents
    assert cached_table == decoded_table
