"""streams.core_process: the core in the worker's process or in a child process gives the same intents and
states as Pipeline itself; states come from the shell once per batch and never older than its writes."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
from types import SimpleNamespace

import orjson
import pytest

from streams.core_process import BatchCore, CoreConfig, CoreError, CoreProcess, InlineCore, use_everywhere
from streams.pipeline import Pipeline
from streams.scorer import available_devices

from .test_pipeline import Store, make_scorer, to_records

# scored_at and latency_ms depend on when a batch ran
TIMING = ("scored_at", "latency_ms")


def comparable(intents: list[tuple[str, bytes]]) -> list[dict]:
    return [{k: v for k, v in orjson.loads(b).items() if k not in TIMING} for _u, b in intents]


class Table:
    """The shell's side: the `users` table as bytes, and every read the core asked for."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.reads: list[list[str]] = []

    def read_states(self, missing: list[tuple[str, int]]) -> dict[str, bytes | None]:
        self.reads.append([user_id for user_id, _i in missing])
        return {user_id: self.data.get(user_id) for user_id, _i in missing}

    def write(self, result) -> None:
        self.data.update(result.states)


@pytest.fixture(scope="module")
def events():
    from models.simulator import SimConfig, simulate

    return [e for e, _p in simulate(SimConfig(n_users=30, n_days=2, seed=5))][:400]


def batches(records, size):
    return [records[i:i + size] for i in range(0, len(records), size)]


def test_batch_core_equals_the_pipeline_and_reads_each_user_once_while_cached(tmp_path, events):
    scorer = make_scorer(tmp_path)
    records = to_records(events)
    expected, _ = Store().run(Pipeline(scorer), records, batch_size=50)
    core, table, got = BatchCore(Pipeline(scorer), cache_users=1000), Table(), []
    for batch in batches(records, 50):
        result = core.process(batch, table.read_states, None, generation=1, forget=[])
        table.write(result)
        got += result.intents
        for user_id, i in result.last_record.items():  # the user's last record in the batch as sent
            assert orjson.loads(batch[i].value)["user_id"] == user_id
    assert comparable(got) == comparable(expected)
    read = [u for users in table.reads for u in users]
    assert sorted(read) == sorted(set(read)) == sorted({e.user_id for e in events})  # once each: then cached


def test_batch_core_forgets_on_a_new_generation_on_erasure_and_after_a_failure(tmp_path, events):
    core, table = BatchCore(Pipeline(make_scorer(tmp_path)), cache_users=1000), Table()
    first, second = batches(to_records(events), 100)[:2]
    table.write(core.process(first, table.read_states, None, generation=1, forget=[]))
    users = {orjson.loads(r.value)["user_id"] for r in second}
    erased = sorted(users)[0]
    table.reads.clear()
    core.process(second, table.read_states, None, generation=1, forget=[erased])
    known = {orjson.loads(r.value)["user_id"] for r in first}
    assert set(table.reads[0]) == (users - known) | {erased}
    table.reads.clear()
    core.process(second[:5], table.read_states, None, generation=2, forget=[])  # rebalanced: all read again
    assert set(table.reads[0]) == {orjson.loads(r.value)["user_id"] for r in second[:5]}

    def broken(_missing):
        raise OSError("disk gone")

    with pytest.raises(OSError):
        core.process(second[5:10], broken, None, generation=2, forget=[])
    assert len(core.cache) == 0


def config_for(scorer, cache_users: int = 1000, device: str = "cpu") -> CoreConfig:
    return CoreConfig(scorer.artifact.path, device, 65_536, "", cache_users, 1)


@pytest.mark.parametrize("device", available_devices())
def test_the_child_process_gives_the_inline_cores_results(tmp_path, events, device):
    """The child scores on `device` (cuda where there is one), the inline core on the cpu."""
    scorer = make_scorer(tmp_path)
    records = to_records(events)
    lost = []

    async def scenario():
        inline = InlineCore(Pipeline(scorer), 1000)
        child = CoreProcess(config_for(scorer, device=device), scorer, on_lost=lost.append)
        await child.start()
        try:
            outputs = []
            for core in (inline, child):
                table, intents, users = Table(), [], set()
                # Back to back: the child scores a batch while the ones before are still being answered.
                futures = [core.submit(b, table.read_states, None, 1, [], table.write) for b in batches(records, 64)]
                for result in await asyncio.gather(*futures):
                    intents += result.intents
                    users.update(result.states)
                outputs.append((comparable(intents), users, sorted(table.data)))
            return outputs
        finally:
            child._process.kill()

    (inline_intents, *inline_rest), (child_intents, *child_rest) = asyncio.run(scenario())
    assert inline_rest == child_rest and len(inline_intents) == len(child_intents) == len(records)
    for a, b in zip(inline_intents, child_intents):
        assert abs(a.pop("p_purchase") - b.pop("p_purchase")) <= 1e-5  # cpu against `device`
        a.pop("intent"), b.pop("intent")  # the level follows p; a tie at a threshold may flip it
        assert a == b
    assert lost == []


def test_a_batch_reads_states_written_for_the_batch_before_even_when_submitted_early(tmp_path, events):
    """Without a cache the child reads every user from the table. A user's second batch, submitted before
    the first was scored, must still see the first batch's state: its session counts on."""
    scorer = make_scorer(tmp_path)
    user = events[0].user_id
    mine = [e for e in events if e.user_id == user][:6]
    records = to_records(mine, partitions=1)
    table = Table()

    async def scenario():
        child = CoreProcess(config_for(scorer, cache_users=0), scorer, on_lost=lambda why: None)
        await child.start()
        try:
            return await asyncio.gather(*[child.submit([r], table.read_states, None, 1, [], table.write)
                                          for r in records])
        finally:
            child._process.kill()

    results = asyncio.run(scenario())
    counts = [orjson.loads(r.intents[0][1])["session_events"] for r in results]
    expected, _ = Store().run(Pipeline(scorer), records, batch_size=1)
    assert counts == [orjson.loads(b)["session_events"] for _u, b in expected]
    assert len(table.reads) == len(records)  # really read from the table each time
    assert max(counts) > 1


def test_a_model_swap_lands_between_batches_a_refused_one_changes_nothing_and_a_lost_child_is_reported(
        tmp_path, events):
    first, second, third = (make_scorer(tmp_path, seed=s) for s in (0, 1, 2))
    assert len({first.version, second.version, third.version}) == 3
    # The shell loaded the third model, then its artifact changed on disk before the child loaded it.
    shutil.rmtree(third.artifact.path)
    shutil.copytree(first.artifact.path, third.artifact.path)
    records = to_records(events[:60])
    lost = []

    async def scenario():
        child = CoreProcess(config_for(first), first, on_lost=lost.append)
        await child.start()
        table = Table()
        before = await child.submit(records[:20], table.read_states, None, 1, [], table.write)
        await child.use(second)
        after = await child.submit(records[20:40], table.read_states, None, 1, [], table.write)
        assert child.scorer is second
        with pytest.raises(CoreError, match=f"holds model {first.version}, not {third.version}"):
            await child.use(third)
        assert child.scorer is second
        refused = await child.submit(records[40:], table.read_states, None, 1, [], table.write)
        os.kill(child._process.pid, signal.SIGKILL)
        pending = child.submit(records[:5], table.read_states, None, 1, [], table.write)
        with pytest.raises(CoreError, match="exited"):
            await asyncio.wait_for(pending, timeout=30)
        return before, after, refused

    before, after, refused = asyncio.run(scenario())
    assert {orjson.loads(b)["model_version"] for _u, b in before.intents} == {first.version}
    assert {orjson.loads(b)["model_version"] for _u, b in after.intents} == {second.version}
    assert {orjson.loads(b)["model_version"] for _u, b in refused.intents} == {second.version}
    assert lost and "exited" in lost[0]


def test_states_are_sent_along_only_for_users_the_core_lacks_and_no_batch_in_the_core_names():
    from streams.core_process import CoreResult, StatesToSend
    from streams.pipeline import Record

    def recs(*keys):
        return [Record(k, b"{}", "t", 0, i, 0.0) for i, k in enumerate(keys)]

    def result(states, cleared=False, evicted=()):
        return CoreResult([], [], {u: b"s" for u in states}, {}, 0, {}, 0.0, cleared, list(evicted))

    to_send = StatesToSend()
    first, opaque = to_send.users_of(recs(b"a", b"b", b"a"))
    assert first == {"a": 0, "b": 1} and not opaque
    assert to_send.choose(first) == [("a", 0), ("b", 1)]  # nothing held yet
    to_send.submitted(first, opaque)
    second, _ = to_send.users_of(recs(b"b", b"c"))
    assert to_send.choose(second) == [("c", 1)]  # b's batch is still in the core: its stored state may be old
    to_send.answered(first, False, result(["a", "b"], evicted=["a"]))
    assert to_send.choose(second) == [("c", 1)]  # b is held now
    assert to_send.choose({"a": 0}) == [("a", 0)]  # evicted
    to_send.answered({}, False, result(["c"], cleared=True))
    assert to_send.choose({"b": 0, "c": 1}) == [("b", 0)]  # the core emptied its cache first
    to_send.forget("c")  # erased
    assert to_send.choose({"c": 0}) == [("c", 0)]

    unnamed, opaque = to_send.users_of(recs(None, b"d"))
    assert unnamed == {"d": 1} and opaque
    to_send.submitted(unnamed, opaque)
    assert to_send.choose({"e": 0}) == []  # some user of a batch in the core is unknown: send nothing
    to_send.answered(unnamed, opaque, result(["d"]))
    assert to_send.choose({"e": 0}) == [("e", 0)]
    assert StatesToSend(lambda u: "p-" + u).users_of(recs(b"a"))[0] == {"p-a": 0}  # keyed like the table


def test_batch_core_uses_the_states_sent_along_but_prefers_its_own(tmp_path, events):
    core, table = BatchCore(Pipeline(make_scorer(tmp_path)), cache_users=1000), Table()
    first, second = batches(to_records(events), 100)[:2]
    table.write(core.process(first, table.read_states, None, generation=1, forget=[]))
    known = {orjson.loads(r.value)["user_id"] for r in first}
    new = {orjson.loads(r.value)["user_id"] for r in second} - known
    assert new and known & {orjson.loads(r.value)["user_id"] for r in second}
    # Garbage for the cached users: never read (a cached state is at least as new); the new ones as stored.
    given = {**{user_id: b"not a state" for user_id in known}, **{user_id: None for user_id in new}}
    table.reads.clear()
    result = core.process(second, table.read_states, None, generation=1, forget=[], given=given)
    assert table.reads == []  # nothing left to ask for
    assert set(result.states) == {orjson.loads(r.value)["user_id"] for r in second}


class SwapRecorder:
    """What use_everywhere touches on a core: the model it serves, and `use`, which may refuse some models."""

    def __init__(self, serving, refuses: tuple = ()):
        self.scorer = serving
        self.refuses = refuses

    async def use(self, scorer) -> None:
        if scorer in self.refuses:
            raise CoreError(f"cannot load {scorer.version}")
        self.scorer = scorer


def test_a_swap_lands_in_every_core_or_in_none():
    splits: list[str] = []
    old, new = SimpleNamespace(version="A"), SimpleNamespace(version="B")

    cores = [SwapRecorder(old) for _ in range(3)]
    asyncio.run(use_everywhere(cores, new, splits.append))
    assert [c.scorer for c in cores] == [new] * 3

    # the last core refuses: the two that switched go back, and the refusal reaches the caller
    cores = [SwapRecorder(old), SwapRecorder(old), SwapRecorder(old, refuses=(new,))]
    with pytest.raises(CoreError, match="cannot load B"):
        asyncio.run(use_everywhere(cores, new, splits.append))
    assert [c.scorer for c in cores] == [old] * 3 and splits == []

    # one that switched cannot go back either: the cores now disagree, and whoever runs them is told
    cores = [SwapRecorder(old, refuses=(old,)), SwapRecorder(old, refuses=(new,))]
    with pytest.raises(CoreError):
        asyncio.run(use_everywhere(cores, new, splits.append))
    assert [c.scorer for c in cores] == [new, old]
    assert len(splits) == 1 and "could not go back to model A" in splits[0]


def test_a_worker_needs_at_least_one_core_process():
    import dataclasses

    from streams.app import create_app
    from streams.settings import Settings

    with pytest.raises(ValueError, match="core_processes must be at least 1"):
        create_app(dataclasses.replace(Settings(), core_processes=0))
