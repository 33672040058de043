"""Worker replicas on one machine, in one group: partitions spread, standbys kept, scale out and in
under load without losing an event."""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from models.simulator import SimConfig, simulate
from streams.topics import ensure_topics
from tests.integration.helpers import (
    Load,
    Pipeline,
    collect,
    decode_all,
    group_members,
    intents_by_event,
    locate,
    make_model,
    private_ops_env,
    produce,
    spread,
    start_worker,
    stop_worker,
    tail,
    commit_lag_after,
    wait_for,
)

PARTITIONS = 6


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model") / "m", seed=3)


def balanced(bootstrap: str, group: str, topic: str, n_members: int):
    """The group's members when there are n of them, each owning some of `topic`, together all of it."""
    members = group_members(bootstrap, group)
    parts = spread(members, topic)
    if len(members) == n_members and all(parts) and sorted(p for s in parts for p in s) == list(range(PARTITIONS)):
        return members
    return None


def test_replicas_spread_partitions_and_scale_out_and_in_under_load(kafka_bootstrap: str, unique: str,
                                                                     tmp_path: Path, model_dir: Path) -> None:
    pipe = Pipeline.unique(kafka_bootstrap, unique, partitions=PARTITIONS)
    ensure_topics(kafka_bootstrap, {pipe.clicks: PARTITIONS, pipe.intents: PARTITIONS, pipe.dlq: 1})
    events = [e for e, _p in simulate(SimConfig(n_users=400, n_days=2, seed=31))]
    changelog = f"{pipe.app_id}-users-changelog"
    env = private_ops_env(unique)

    def start(name: str):
        return start_worker(pipe, tmp_path / name, tmp_path / f"{name}.log",
                            ["--model", str(model_dir), "--standby-replicas", "1", "--max-batch", "64"], env=env)

    workers = {"a": start("a"), "b": start("b")}
    try:
        # Two replicas: disjoint shares of the source partitions, each also keeping standby copies of the
        # other's table partitions (its changelog assignment is larger than its active share).
        members = wait_for(lambda: balanced(kafka_bootstrap, pipe.app_id, pipe.clicks, 2), 120,
                           what="two balanced members")
        for topics in members.values():
            assert topics[pipe.clicks] < topics.get(changelog, set()), topics

        load = Load(kafka_bootstrap, pipe.clicks, events, rate=len(events) / 25.0)
        wait_for(lambda: load.sent >= len(events) // 4, 60, what="a quarter of the load")
        workers["c"] = start("c")  # scale out under load
        members3 = wait_for(lambda: balanced(kafka_bootstrap, pipe.app_id, pipe.clicks, 3), 120,
                            what="three balanced members")
        wait_for(lambda: load.sent >= 2 * len(events) // 3, 60, what="two thirds of the load")
        stop_worker(workers.pop("a"))  # scale in under load (graceful)
        wait_for(lambda: balanced(kafka_bootstrap, pipe.app_id, pipe.clicks, 2), 120, what="two members again")
        load.thread.join(timeout=120)

        records = collect(kafka_bootstrap, pipe.intents,
                          lambda rs: len({orjson.loads(r.value)["event_id"] for r in rs}) >= len(events), timeout_s=150)
        for name, proc in workers.items():
            assert proc.poll() is None, f"worker {name} died:\n" + tail(tmp_path / f"{name}.log")
        lag = commit_lag_after(kafka_bootstrap, pipe.app_id, pipe.clicks)
    finally:
        for proc in workers.values():
            stop_worker(proc)

    by_id, duplicates = intents_by_event(decode_all(records))  # duplicates only as exact copies
    missing = {e.event_id for e in events} - set(by_id)
    assert not missing, (f"{len(missing)} events without an intent: {locate(kafka_bootstrap, pipe.clicks, missing)}\n"
                         + tail(tmp_path / "c.log"))
    print(f"\nscaling 2 -> 3 -> 2 workers under load: {len(events)} events, shares "
          f"{sorted(sorted(s) for s in spread(members3, pipe.clicks))} with 3 workers, "
          f"{duplicates} exact duplicates ({10_000 * duplicates / len(events):.1f} per 10k); "
          f"commits behind the end: {lag or 'none'}")
