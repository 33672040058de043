"""Model hot swap without a broker: the deploy stack, the registry, swapping a pipeline's scorer."""
from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
import torch

from models import artifacts
from models.features import FeatureSpec
from models.gru import GRUConfig, IntentGRU
from models.simulator import SimConfig, simulate
from models.state import UserState
from schemas.codec import encode_click
from streams import control
from streams.control import ModelControl, ModelRef, apply_message, deploy_message, replay, rollback_message
from streams.metrics import WorkerMetrics
from streams.pipeline import Pipeline, Record
from streams.settings import Settings


def make_artifact(out: Path, seed: int) -> str:
    torch.manual_seed(seed)
    spec = FeatureSpec()
    return artifacts.save(IntentGRU(GRUConfig.from_spec(spec, hidden_size=8)), {"threshold": 0.5}, out, spec)


def tamper(model_dir: Path) -> None:
    w = model_dir / artifacts.WEIGHTS_FILE
    data = bytearray(w.read_bytes())
    data[-5] ^= 0xFF
    w.write_bytes(bytes(data))


def test_stack_deploy_pushes_rollback_pops_and_junk_is_ignored() -> None:
    a, b = ModelRef("gru-a", "/r/a"), ModelRef("gru-b", "/r/b")
    msgs = [deploy_message(a), {"action": "explode"}, {}, deploy_message(b), rollback_message(),
            rollback_message(), rollback_message(), deploy_message(b)]
    stacks = []
    stack: list = []
    for m in msgs:
        stack = apply_message(stack, m)
        stacks.append([r.version for r in stack])
    assert stacks == [["gru-a"], ["gru-a"], ["gru-a"], ["gru-a", "gru-b"], ["gru-a"], [], [], ["gru-b"]]
    assert replay(msgs) == [b]
    assert control.parse(b"\xff") == {} and control.parse(b"[1]") == {}
    assert control.parse(orjson.dumps(deploy_message(a)))["version"] == "gru-a"


def test_register_verifies_and_copies_once(tmp_path) -> None:
    version = make_artifact(tmp_path / "m", 1)
    ref = control.register_artifact(tmp_path / "m", tmp_path / "registry")
    assert ref.version == version and Path(ref.path) == (tmp_path / "registry" / version).resolve()
    assert artifacts.load(ref.path).version == version
    assert control.register_artifact(tmp_path / "m", tmp_path / "registry") == ref  # idempotent
    tamper(tmp_path / "m")
    with pytest.raises(artifacts.ArtifactError):
        control.register_artifact(tmp_path / "m", tmp_path / "registry2")
    assert not (tmp_path / "registry2").exists()


def test_swap_between_batches_refuses_bad_artifacts_and_rolls_back(tmp_path) -> None:
    v1, v2 = make_artifact(tmp_path / "m1", 1), make_artifact(tmp_path / "m2", 2)
    make_artifact(tmp_path / "bad", 3)
    tamper(tmp_path / "bad")
    metrics = WorkerMetrics()
    ctl = ModelControl(Settings(model_dir=tmp_path / "m1", control_topic="", device="cpu"), metrics)
    scorer = asyncio.run(ctl.initial_scorer())
    assert scorer.version == v1 and ctl.serving.version == v1
    pipeline = Pipeline(scorer)

    events = [e for e, _p in simulate(SimConfig(n_users=60, n_days=2, seed=2))][:120]
    assert len(events) == 120
    store: dict[str, bytes] = {}

    def run(evs, offset0):
        recs = [Record(e.user_id.encode(), encode_click(e), "c", 0, offset0 + i, 0.0) for i, e in enumerate(evs)]
        res = pipeline.process(recs, lambda u, _r: UserState.from_bytes(store[u]) if u in store else None)
        for u, st in res.states.items():
            store[u] = st.to_bytes()
        return {orjson.loads(v)["model_version"] for _u, v in res.intents}

    assert run(events[:40], 0) == {v1}
    ctl.stack = [ModelRef(v2, str(tmp_path / "m2"))]
    asyncio.run(ctl._apply(pipeline))
    assert run(events[40:80], 40) == {v2}  # sessions continue: hidden states rebuilt for the new version
    ctl.stack.append(ModelRef("gru-bad", str(tmp_path / "bad")))
    asyncio.run(ctl._apply(pipeline))
    assert pipeline.scorer.version == v2 and ctl.refused[-1]["version"] == "gru-bad"
    ctl.stack = []  # rolled back past every deploy: the worker's own model

    async def core_cannot(scorer) -> None:  # e.g. the core's process ran out of GPU memory loading it
        raise RuntimeError(f"the core could not load {scorer.version}")

    asyncio.run(ctl._apply(pipeline, activate=core_cannot))
    assert pipeline.scorer.version == v2 and ctl.serving.version == v2
    assert ctl.refused[-1]["error"] == f"the core could not load {v1}"
    activated = []

    async def core_can(scorer) -> None:
        activated.append(scorer.version)

    asyncio.run(ctl._apply(pipeline, activate=core_can))
    assert activated == [v1] and ctl.serving.version == v1
    assert run(events[80:], 80) == {v1}
    text = metrics.render().decode()
    assert 'intentstream_model_swaps_total{result="refused"} 2.0' in text
    assert 'intentstream_model_swaps_total{result="ok"} 2.0' in text
    assert f'intentstream_model_info{{version="{v1}"}} 1.0' in text and v2 not in text


def test_startup_skips_deploys_that_do_not_load(tmp_path) -> None:
    v1, v2 = make_artifact(tmp_path / "m1", 1), make_artifact(tmp_path / "m2", 2)
    ctl = ModelControl(Settings(model_dir=tmp_path / "m1", control_topic="", device="cpu"))
    ctl.stack = [ModelRef(v2, str(tmp_path / "m2")), ModelRef("gone", str(tmp_path / "missing"))]
    assert asyncio.run(ctl.initial_scorer()).version == v2
    assert ctl.refused[-1]["version"] == "gone"
