"""The worker core without Kafka: DLQ routing, ordering in rounds, idempotence, offline parity."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import orjson
import pytest
import torch

from models import artifacts
from models.features import FeatureSpec
from models.offline import offline_scores
from models.gru import GRUConfig, IntentGRU
from models.simulator import SimConfig, simulate
from models.state import UserState
from schemas.codec import decode_dead_letter, encode_click
from streams.pipeline import Pipeline, Record
from streams.scorer import Scorer, available_devices

TOPIC = "clickstream"


def make_scorer(tmp_path: Path, seed: int = 0) -> Scorer:
    torch.manual_seed(seed)
    spec = FeatureSpec()
    model = IntentGRU(GRUConfig.from_spec(spec, hidden_size=16))
    out = tmp_path / f"model-{seed}"
    artifacts.save(model, {"threshold": 0.5}, out, spec)
    return Scorer(artifacts.load(out), device="cpu")


@pytest.fixture(scope="module")
def events() -> list:
    evs = [e for e, _p in simulate(SimConfig(n_users=40, n_days=2, seed=3))]
    assert len(evs) > 200
    return evs[:600]


def to_records(events, partitions: int = 3, start_offset: int = 0) -> list[Record]:
    offsets: dict[int, int] = defaultdict(lambda: start_offset)
    records = []
    for ev in events:
        part = hash(ev.user_id) % partitions
        records.append(Record(ev.user_id.encode(), encode_click(ev), TOPIC, part, offsets[part], 0.0))
        offsets[part] += 1
    return records


class Store:
    """Stands in for the Faust table: bytes in, bytes out, like RocksDB."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def load(self, user_id: str, _rec: Record) -> UserState | None:
        raw = self.data.get(user_id)
        return UserState.from_bytes(raw) if raw is not None else None

    def run(self, pipeline: Pipeline, records: list[Record], batch_size: int):
        intents, dead = [], []
        for i in range(0, len(records), batch_size):
            result = pipeline.process(records[i:i + batch_size], self.load)
            for uid, state in result.states.items():
                self.data[uid] = state.to_bytes()
            intents += result.intents
            dead += result.dead_letters
        return intents, dead


def test_one_intent_per_event_in_user_order_and_batching_does_not_matter(tmp_path, events):
    scorer = make_scorer(tmp_path)
    records = to_records(events)
    big, _ = Store().run(Pipeline(scorer), records, batch_size=512)
    small, _ = Store().run(Pipeline(scorer), records, batch_size=7)
    assert len(big) == len(small) == len(events)
    by_event = {orjson.loads(b)["event_id"]: orjson.loads(b) for _u, b in big}
    assert set(by_event) == {e.event_id for e in events}
    for _u, b in small:
        other = orjson.loads(b)
        mine = by_event[other["event_id"]]
        assert abs(mine["p_purchase"] - other["p_purchase"]) < 1e-6
        assert mine["session_events"] == other["session_events"]
    # Per user, intents come out in the order of the user's events.
    order = defaultdict(list)
    for uid, b in big:
        order[uid].append(orjson.loads(b)["event_id"])
    for uid, ids in order.items():
        assert ids == [e.event_id for e in events if e.user_id == uid]


def test_live_scores_equal_offline_full_sequence_pass(tmp_path, events):
    scorer = make_scorer(tmp_path)
    live, _ = Store().run(Pipeline(scorer), to_records(events), batch_size=64)
    live_p = {orjson.loads(b)["event_id"]: orjson.loads(b)["p_purchase"] for _u, b in live}

    offline = offline_scores(events, scorer.model, scorer.spec)
    checked = 0
    for event_id, p in offline.items():
        assert abs(live_p[event_id] - p) < 1e-5
        checked += 1
    assert checked == len(events)


# cuda joins where a GPU is present (no skip where there is none): the worker picks it automatically there.
@pytest.mark.parametrize("device", available_devices())
def test_the_shipped_model_scores_live_on_each_device_as_offline_on_the_cpu(device, events):
    live_scorer = Scorer.load(device=device)  # the trained model the worker loads by default
    live, _ = Store().run(Pipeline(live_scorer), to_records(events), batch_size=64)
    live_p = {orjson.loads(b)["event_id"]: orjson.loads(b)["p_purchase"] for _u, b in live}

    reference = Scorer.load(device="cpu")
    offline = offline_scores(events, reference.model, reference.spec)
    worst = max(abs(live_p[event_id] - p) for event_id, p in offline.items())
    assert len(offline) == len(events) and worst < 1e-5, f"{device}: worst |live - offline| = {worst:.2e}"


def test_bad_messages_go_to_dlq_and_the_rest_is_scored(tmp_path, events):
    scorer = make_scorer(tmp_path)
    good = to_records(events[:50])
    bad = [
        Record(b"u1", b"{not json", TOPIC, 0, 10_000, 0.0),
        Record(b"u1", orjson.dumps({"event_id": "x", "user_id": "u1", "ts": 1, "type": "teleport"}), TOPIC, 0,
               10_001, 0.0),
        Record(b"someone-else", encode_click(events[0]), TOPIC, 0, 10_002, 0.0),  # key is not the user id
        Record(None, b"", TOPIC, 0, 10_003, 0.0),
    ]
    mixed = good[:20] + bad + good[20:]
    intents, dead = Store().run(Pipeline(scorer), mixed, batch_size=16)
    assert len(intents) == 50
    codes = [decode_dead_letter(b).error_code for _k, b in dead]
    assert codes == ["not_json", "unknown_event_type", "key_mismatch", "not_json"]
    first = decode_dead_letter(dead[0][1])
    assert (first.original, first.topic, first.partition, first.offset) == (b"{not json", TOPIC, 0, 10_000)


def test_redelivered_events_reemit_identical_intents_and_leave_state_alone(tmp_path, events):
    scorer = make_scorer(tmp_path)
    pipeline = Pipeline(scorer)
    store = Store()
    records = to_records(events[:120])
    first, _ = store.run(pipeline, records, batch_size=32)
    snapshot = dict(store.data)
    # A crash before the offset commit: the last few records of every partition come again.
    tail = [r for r in records if r.offset >= max(x.offset for x in records if x.partition == r.partition) - 1]
    again, _ = store.run(pipeline, tail, batch_size=32)
    assert store.data == snapshot
    original = {orjson.loads(b)["event_id"]: b for _u, b in first}
    assert again and all(original[orjson.loads(b)["event_id"]] == b for _u, b in again)


def test_crash_after_the_state_write_reemits_every_intent_of_the_batch(tmp_path, events):
    """The shell makes a batch's state durable before its intents. A crash in between re-delivers the whole
    batch; every click must find its intent in the state, even a user with many clicks in that batch."""
    pipeline = Pipeline(make_scorer(tmp_path))
    store = Store()
    records = to_records(events[:300], partitions=1)
    per_user = defaultdict(int)
    for r in records:
        per_user[r.key] += 1
    assert max(per_user.values()) > UserState.new("u").config.max_intents  # the case that used to lose intents
    first = pipeline.process(records, store.load)
    for uid, state in first.states.items():  # state durable ...
        store.data[uid] = state.to_bytes()
    # ... intents lost with the crash; the records come again.
    again = pipeline.process(records, store.load)
    assert again.unanswerable_duplicates == 0 and again.reemitted == len(first.intents)
    assert sorted(b for _u, b in again.intents) == sorted(b for _u, b in first.intents)

    # The next batch's state keeps its own clicks' intents and forgets older ones, down to the usual few.
    nxt = pipeline.process(to_records(events[300:400], partitions=1, start_offset=len(records)), store.load)
    for uid, state in nxt.states.items():
        new_here = sum(1 for u, _b in nxt.intents if u == uid)
        ever = per_user.get(uid.encode(), 0) + new_here
        assert len(state.recent_intents) == min(ever, max(state.config.max_intents, new_here))


def test_model_change_rebuilds_hidden_state_from_recent_events(tmp_path, events):
    old, new = make_scorer(tmp_path, seed=1), make_scorer(tmp_path, seed=2)
    assert old.version != new.version
    records = to_records(events)
    cut = len(records) // 2
    store = Store()
    store.run(Pipeline(old), records[:cut], batch_size=64)
    swapped, _ = store.run(Pipeline(new), records[cut:], batch_size=64)
    reference, _ = Store().run(Pipeline(new), records, batch_size=64)
    ref = {orjson.loads(b)["event_id"]: orjson.loads(b) for _u, b in reference}
    compared = 0
    for _u, b in swapped:
        got = orjson.loads(b)
        assert got["model_version"] == new.version
        if got["session_events"] <= 32:  # exact while the session fits in the stored tail
            assert abs(got["p_purchase"] - ref[got["event_id"]]["p_purchase"]) < 1e-5
            compared += 1
    assert compared > 0


def test_a_record_delivered_twice_in_one_batch_is_scored_once_and_reemitted(tmp_path, events):
    scorer = make_scorer(tmp_path)
    records = to_records(events[:30])
    doubled = records[:10] + [records[5]] + records[10:]
    intents, dead = Store().run(Pipeline(scorer), doubled, batch_size=64)
    assert not dead
    assert len(intents) == 31
    copies = [b for _u, b in intents if orjson.loads(b)["event_id"] == events[5].event_id]
    assert len(copies) == 2 and copies[0] == copies[1]


def test_intents_above_delivered_through_are_kept_until_delivered(tmp_path, events):
    """The shell says through which offset intents are known delivered; a state never forgets one above it,
    however many batches later, and forgets the older ones down to the usual few."""
    pipeline = Pipeline(make_scorer(tmp_path))
    store = Store()
    records = to_records(events[:400], partitions=1)
    source = records[0].source
    for i in range(0, len(records), 50):  # nothing delivered yet: every intent must stay
        result = pipeline.process(records[i:i + 50], store.load, {source: -1})
        for uid, state in result.states.items():
            store.data[uid] = state.to_bytes()
    kept = sum(len(UserState.from_bytes(b).recent_intents) for b in store.data.values())
    assert kept == len(records)
    # Now everything up to offset 349 is delivered: touched users keep only what is above it, or their last few.
    result = pipeline.process(to_records(events[400:450], partitions=1, start_offset=400), store.load, {source: 349})
    for state in result.states.values():
        above = [it for it in state.recent_intents if it.offset > 349]
        assert len(state.recent_intents) == max(len(above), min(len(state.recent_intents), state.config.max_intents))
        assert all(it.offset > 349 for it in state.recent_intents[:-state.config.max_intents])


def test_reemit_only_records_are_answered_from_the_state_and_never_applied(tmp_path, events):
    """A new owner reads the previous owner's last batch back only to re-emit it: for a user erased since
    (no state), those clicks must not bring the state back."""
    import dataclasses

    pipeline = Pipeline(make_scorer(tmp_path))
    store = Store()
    records = to_records(events[:60], partitions=1)
    first = pipeline.process(records, store.load)
    for uid, state in first.states.items():
        store.data[uid] = state.to_bytes()
    erased = records[-1].key.decode()
    del store.data[erased]
    tail = records[-40:]
    assert len({r.key for r in tail}) > 1
    again = pipeline.process([dataclasses.replace(r, reemit_only=True) for r in tail], store.load)
    assert erased not in {u for u, _b in again.intents} and not again.states[erased].applied
    kept = {orjson.loads(b)["event_id"] for u, b in first.intents if u != erased}
    assert {orjson.loads(b)["event_id"] for _u, b in again.intents} <= kept and again.intents


def test_a_batch_pauses_the_cyclic_gc_and_leaves_its_setting_as_it_was(tmp_path, events):
    import gc

    seen = []

    def load(user_id: str, _rec: Record) -> UserState | None:
        seen.append(gc.isenabled())
        if len(seen) == 3:
            raise RuntimeError("table read failed")
        return None

    pipeline = Pipeline(make_scorer(tmp_path))
    records = to_records(events[:50])
    assert gc.isenabled()
    pipeline.process(records[:1], load)
    assert seen == [False] and gc.isenabled()
    with pytest.raises(RuntimeError):
        pipeline.process(records, load)
    assert gc.isenabled()
    gc.disable()
    try:
        pipeline.process(records[:1], lambda _u, _r: None)
        assert not gc.isenabled()  # a caller that turned it off keeps it off
    finally:
        gc.enable()
