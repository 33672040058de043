"""Artifacts: round trip, and clear refusals for tampered, incompatible or malformed artifacts."""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from models import artifacts
from models.artifacts import ArtifactError, load, save
from models.features import FeatureSpec
from models.gru import GRUConfig, IntentGRU

SPEC = FeatureSpec(n_item_buckets=101, n_category_buckets=11)


def _model(seed: int = 0) -> IntentGRU:
    torch.manual_seed(seed)
    m = IntentGRU(GRUConfig.from_spec(SPEC, hidden_size=16, item_dim=4))
    m.set_normalization(torch.rand(SPEC.n_numeric), torch.rand(SPEC.n_numeric) + 1, torch.rand(SPEC.n_rolling),
                        torch.rand(SPEC.n_rolling) + 1)
    m.set_calibration(0.9, -0.1)
    return m.eval()


@pytest.fixture
def saved(tmp_path):
    m = _model()
    version = save(m, {"threshold": 0.31, "metrics": {"test": {"roc_auc": 0.8}}, "data": {"sha256": "ab" * 32}},
                   tmp_path / "m", spec=SPEC)
    return m, version, tmp_path / "m"


def _inputs(B: int = 3):
    g = torch.Generator().manual_seed(1)
    cat = torch.stack((torch.randint(0, 8, (B,), generator=g), torch.randint(0, 101, (B,), generator=g),
                       torch.randint(0, 11, (B,), generator=g)), dim=1)
    return cat, torch.randn(B, SPEC.n_numeric, generator=g), torch.randn(B, SPEC.n_rolling, generator=g)


def test_round_trip(saved):
    m, version, d = saved
    art = load(d, expected_spec=SPEC)
    assert art.version == version and version.startswith("gru-") and len(version) == 16
    assert art.threshold == 0.31 and art.spec == SPEC
    meta = json.loads((d / "meta.json").read_text())
    assert meta["spec_hash"] == SPEC.spec_hash()
    assert meta["weights_sha256"] == artifacts.sha256_file(d / "weights.safetensors")
    assert meta["architecture"]["hidden_size"] == 16 and meta["metrics"]["test"]["roc_auc"] == 0.8
    assert meta["data"]["sha256"] == "ab" * 32 and meta["created_at"]
    cat, num, roll = _inputs()
    h = m.init_hidden(3)
    with torch.no_grad():
        p1, h1 = m.step(cat, num, roll, h)
        p2, h2 = art.model.step(cat, num, roll, h)
    assert torch.equal(p1, p2) and torch.equal(h1, h2)  # buffers (normalization, calibration) saved too


def test_version_depends_on_weights(tmp_path):
    v1 = save(_model(0), {}, tmp_path / "a", spec=SPEC)
    v2 = save(_model(1), {}, tmp_path / "b", spec=SPEC)
    v1_again = save(_model(0), {}, tmp_path / "c", spec=SPEC)
    assert v1 != v2 and v1 == v1_again


def test_tampered_weights_are_refused(saved):
    _, _, d = saved
    w = d / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0x01  # flip one bit in the last tensor's data
    w.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="modified or corrupted"):
        load(d)


def test_replaced_weights_with_matching_meta_hash_but_wrong_version(saved, tmp_path):
    _, _, d = saved
    other = tmp_path / "other"
    save(_model(5), {}, other, spec=SPEC)
    (d / "weights.safetensors").write_bytes((other / "weights.safetensors").read_bytes())
    meta = json.loads((d / "meta.json").read_text())
    meta["weights_sha256"] = artifacts.sha256_file(d / "weights.safetensors")  # attacker updates the hash only
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="version"):
        load(d)


def test_incompatible_spec_is_refused(saved):
    _, _, d = saved
    with pytest.raises(ArtifactError, match="incompatible feature spec"):
        load(d, expected_spec=FeatureSpec())
    meta = json.loads((d / "meta.json").read_text())
    meta["feature_spec"]["version"] = "f0"  # trained under an older featurization
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="incompatible feature spec"):
        load(d)


def test_missing_or_foreign_files(tmp_path, saved):
    with pytest.raises(ArtifactError, match="no meta.json"):
        load(tmp_path / "nothing")
    _, _, d = saved
    (d / "weights.safetensors").unlink()
    with pytest.raises(ArtifactError, match="weights file missing"):
        load(d)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "meta.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable"):
        load(bad)


def test_pickle_in_place_of_weights_is_never_executed(saved, tmp_path):
    """A pickle posing as the weights (hash updated to match) fails as non-safetensors data; nothing runs."""
    _, _, d = saved
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    w = d / "weights.safetensors"
    w.write_bytes(pickle.dumps(Evil()))
    digest = artifacts.sha256_file(w)
    meta = json.loads((d / "meta.json").read_text())
    meta["weights_sha256"] = digest
    meta["version"] = f"gru-{digest[:12]}"
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError):
        load(d)
    assert not marker.exists()


def test_architecture_mismatch_is_refused(saved):
    _, _, d = saved
    meta = json.loads((d / "meta.json").read_text())
    meta["architecture"]["hidden_size"] = 32
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="do not fit"):
        load(d)
