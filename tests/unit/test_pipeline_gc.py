"""The core process's garbage collection (streams.pipeline.collect_young_and_freeze): survivors are frozen,
which is only safe while what the core keeps (its cached states) holds no reference cycles."""
from __future__ import annotations

import gc

import pytest

from streams.core_process import BatchCore
from streams.pipeline import Pipeline, collect_young_and_freeze

from .test_core_process import Table, batches
from .test_pipeline import make_scorer, to_records


@pytest.fixture
def frozen_restored():
    """gc.freeze is process-wide: give the test a clean slate and take its frozen objects back after."""
    gc.collect()
    yield
    gc.unfreeze()
    gc.collect()


def test_a_full_state_cache_leaves_no_cyclic_garbage_when_dropped(tmp_path):
    from models.simulator import SimConfig, simulate

    events = [e for e, _p in simulate(SimConfig(n_users=200, n_days=3, seed=21))][:3000]
    core, table = BatchCore(Pipeline(make_scorer(tmp_path)), cache_users=10_000), Table()
    for batch in batches(to_records(events), 200):
        table.write(core.process(batch, table.read_states, None, generation=1, forget=[]))
    assert len(core.cache) >= 100  # the states are cached, as in a core process
    gc.collect()
    # What the collector finds now, kept for a look (DEBUG_SAVEALL): a cycle through the cache's objects
    # (states, sessions, recent events and intents, rings), frozen, would never be freed. Only those count:
    # threads left by earlier tests (Kafka clients) may make cyclic garbage of their own meanwhile.
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        del core
        gc.collect()
        cyclic = [type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith(("models.", "streams."))]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert cyclic == []


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_young_objects_are_collected_and_survivors_frozen_once_past_the_limit(frozen_restored):
    frozen_before = gc.get_freeze_count()
    kept = [Node() for _ in range(50)]  # survive: referenced from here
    for _ in range(20):  # garbage, reachable only through its own cycle
        a, b = Node(), Node()
        a.other, b.other = b, a
    del a, b
    assert not collect_young_and_freeze(young_limit=10_000_000)  # under the limit: nothing happens
    assert gc.get_freeze_count() == frozen_before
    assert collect_young_and_freeze(young_limit=1)
    assert gc.get_freeze_count() >= frozen_before + len(kept)  # survivors: out of the collector's sight
    assert gc.get_count()[0] == 0
    assert all(gc.is_tracked(n) for n in kept)
    # The cycles were collected, not frozen: nothing of them is left to find
    assert not [o for o in gc.get_objects() if isinstance(o, Node) and o not in kept]
