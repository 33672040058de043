"""The scoring worker end to end on the real broker: clicks in, one intent per valid click out."""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import orjson
from kafka import KafkaProducer

from models import artifacts
from models.offline import offline_scores
from models.simulator import SimConfig, simulate
from schemas.codec import decode_dead_letter, encode_click
from streams.topics import ensure_topics
from tests.integration.helpers import Pipeline, collect, decode_all, start_worker, stop_worker, tail

# Each poison message is (bytes, expected DLQ code); they go in mid-stream.
POISON = [
    (b"\x00\xff garbage", "not_json"),
    (b"[1, 2, 3]", "not_object"),
    (orjson.dumps({"event_id": "p1", "user_id": "u-poison", "ts": 1_700_000_000_000}), "missing_field"),
    (orjson.dumps({"event_id": "p2", "user_id": "u-poison", "ts": 1_700_000_000_000, "type": "teleport"}),
     "unknown_event_type"),
    (orjson.dumps({"event_id": "p3", "user_id": "u-poison", "ts": 1_700_000_000_000, "type": "purchase",
                   "price": -3}), "bad_value"),
]


def test_worker_scores_every_valid_click_and_dead_letters_the_rest(kafka_bootstrap: str, unique: str,
                                                                    tmp_path: Path) -> None:
    pipe = Pipeline.unique(kafka_bootstrap, unique)
    ensure_topics(kafka_bootstrap, {pipe.clicks: 3, pipe.intents: 3, pipe.dlq: 1})
    events = [e for e, _p in simulate(SimConfig(n_users=300, n_days=3, seed=11))]
    n_valid = len(events)
    assert n_valid > 1000

    log_path = tmp_path / "worker.log"
    worker = start_worker(pipe, tmp_path / "state", log_path)
    try:
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
        half = n_valid // 2
        for ev in events[:half]:
            producer.send(pipe.clicks, key=ev.user_id.encode(), value=encode_click(ev))
        for raw, _code in POISON:
            producer.send(pipe.clicks, key=b"u-poison", value=raw)
        for ev in events[half:]:
            producer.send(pipe.clicks, key=ev.user_id.encode(), value=encode_click(ev))
        producer.flush()
        producer.close()

        intents = decode_all(collect(kafka_bootstrap, pipe.intents,
                                     lambda rs: len({orjson.loads(r.value)["event_id"] for r in rs}) >= n_valid,
                                     timeout_s=180))
        dead = [decode_dead_letter(r.value) for r in collect(kafka_bootstrap, pipe.dlq,
                                                             lambda rs: len(rs) >= len(POISON), timeout_s=30)]
        assert worker.poll() is None, "worker died:\n" + tail(log_path)
    finally:
        stop_worker(worker)

    # One intent per valid event; re-deliveries may repeat one, but only as an exact copy.
    by_id: dict[str, list[dict]] = defaultdict(list)
    for intent in intents:
        by_id[intent["event_id"]].append(intent)
    assert set(by_id) == {e.event_id for e in events}, tail(log_path)
    duplicates = sum(len(v) - 1 for v in by_id.values())
    assert all(all(x == v[0] for x in v) for v in by_id.values())
    print(f"\n{n_valid} valid events, {len(intents)} intents, {duplicates} exact duplicates")

    assert Counter(d.error_code for d in dead) == Counter(code for _raw, code in POISON)
    assert {d.original for d in dead} == {raw for raw, _code in POISON}
    assert all(d.topic == pipe.clicks and d.offset >= 0 for d in dead)

    # Per-user order: each user's intents arrive in the order of the user's events.
    position = {e.event_id: i for i, e in enumerate(events)}
    seen: dict[str, int] = {}
    for intent in intents:
        i = position[intent["event_id"]]
        assert i >= seen.get(intent["user_id"], -1)
        seen[intent["user_id"]] = i

    # Live equals offline: the same model over the same events, full-sequence pass.
    art = artifacts.load()
    offline = offline_scores(events, art.model, art.spec)
    worst = max(abs(v[0]["p_purchase"] - offline[eid]) for eid, v in by_id.items())
    assert worst < 1e-5, worst
    assert {v[0]["model_version"] for v in by_id.values()} == {art.version}
