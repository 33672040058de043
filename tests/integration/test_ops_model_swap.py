"""Model hot swap on the real broker: two workers switch together, a bad artifact is refused, rollback."""
from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import orjson

from deploy.kafka.local_broker import free_port_pair
from models import artifacts
from models.simulator import SimConfig, simulate
from streams import cli, control
from streams.topics import ensure_topics
from tests.integration.helpers import (Pipeline, collect, make_model, produce, start_worker, stop_worker, tail,
                                       wait_for)


def get_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def serving(port: int) -> str | None:
    status = get_json(f"http://127.0.0.1:{port}/status")
    return status["model"]["serving"]["version"] if status and status["model"]["serving"] else None


def test_deploy_reaches_every_worker_bad_model_refused_rollback(kafka_bootstrap: str, unique: str, tmp_path: Path,
                                                                monkeypatch) -> None:
    pipe = Pipeline.unique(kafka_bootstrap, unique)
    ensure_topics(kafka_bootstrap, {pipe.clicks: 3, pipe.intents: 3, pipe.dlq: 1})
    m1, m2, m3 = (make_model(tmp_path / f"m{i}", seed=i, hidden_size=16) for i in (1, 2, 3))
    v1, v2 = artifacts.read_meta(m1)["version"], artifacts.read_meta(m2)["version"]
    registry = tmp_path / "registry"
    monkeypatch.setenv("INTENTSTREAM_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("INTENTSTREAM_APP_ID", pipe.app_id)
    monkeypatch.setenv("INTENTSTREAM_REGISTRY_DIR", str(registry))

    events = [e for e, _p in simulate(SimConfig(n_users=80, n_days=2, seed=5))]
    assert len(events) >= 400
    phases = [events[i * len(events) // 4:(i + 1) * len(events) // 4] for i in range(4)]

    def versions_of(phase) -> set[str]:
        """Send one phase's clicks and return the model versions on their intents."""
        produce(kafka_bootstrap, pipe.clicks, phase)
        ids = {e.event_id for e in phase}
        got = [orjson.loads(r.value) for r in collect(kafka_bootstrap, pipe.intents, lambda rs: ids <= {
            orjson.loads(r.value)["event_id"] for r in rs}, timeout_s=60)]
        mine = [i for i in got if i["event_id"] in ids]
        assert {i["event_id"] for i in mine} == ids, "missing intents:\n" + logs()
        return {i["model_version"] for i in mine}

    ports = [free_port_pair(), free_port_pair()]
    workers = [start_worker(pipe, tmp_path / f"w{i}", tmp_path / f"w{i}.log",
                            ["--model", str(m1), "--web-port", str(p)]) for i, p in enumerate(ports)]

    def logs() -> str:
        return "\n".join(tail(tmp_path / f"w{i}.log", 3000) for i in range(len(ports)))

    def all_serve(version: str) -> bool:
        return all(serving(p) == version for p in ports)

    try:
        # Both workers own partitions, so "every worker switches" is tested on two processes with work.
        wait_for(lambda: all((get_json(f"http://127.0.0.1:{p}/status") or {}).get("assignment") for p in ports),
                 90, what="both workers assigned")
        assert versions_of(phases[0]) == {v1}

        assert cli.main(["deploy", str(m2)]) == 0
        wait_for(lambda: all_serve(v2), 30, what=f"both workers on {v2}")
        assert versions_of(phases[1]) == {v2}  # sessions continue: hidden states rebuilt for v2

        # A corrupted copy in the registry: deploy refuses it at the door, the workers refuse it too.
        bad = registry / "gru-corrupted"
        shutil.copytree(m3, bad)
        weights = bad / artifacts.WEIGHTS_FILE
        weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
        assert cli.main(["deploy", str(bad)]) == 1
        control.publish(kafka_bootstrap, f"{pipe.app_id}-control",
                        control.deploy_message(control.ModelRef("gru-corrupted", str(bad))))
        def refused(port: int) -> list:
            return ((get_json(f"http://127.0.0.1:{port}/status") or {}).get("model") or {}).get("refused") or []

        wait_for(lambda: all(refused(p) for p in ports), 30, what="bad model refused")
        assert all_serve(v2)
        assert versions_of(phases[2]) == {v2}

        assert cli.main(["rollback"]) == 0  # pops the bad deploy: v2 stays
        assert cli.main(["rollback"]) == 0  # pops v2: back to the workers' own model
        wait_for(lambda: all_serve(v1), 30, what=f"both workers back on {v1}")
        assert versions_of(phases[3]) == {v1}
        assert cli.main(["rollback"]) == 1  # nothing left to roll back

        for p in ports:
            text = urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=5).read().decode()
            assert 'intentstream_model_swaps_total{result="refused"} 1.0' in text
            assert 'intentstream_model_swaps_total{result="ok"} 2.0' in text
            assert f'intentstream_model_info{{version="{v1}"}} 1.0' in text
        assert all(w.poll() is None for w in workers), logs()
    finally:
        for w in workers:
            stop_worker(w)
