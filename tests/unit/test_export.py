"""TorchScript and ONNX exports of the step function agree with eager PyTorch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.export import example_inputs, export_onnx, export_torchscript
from models.gru import GRUConfig, IntentGRU

CFG = GRUConfig(n_types=8, n_item_buckets=97, n_category_buckets=13, n_numeric=10, n_rolling=30, hidden_size=24)


@pytest.fixture(scope="module")
def model() -> IntentGRU:
    torch.manual_seed(0)
    m = IntentGRU(CFG)
    m.set_normalization(torch.randn(10), torch.rand(10) + 0.5, torch.randn(30), torch.rand(30) + 0.5)
    m.set_calibration(1.3, 0.2)
    return m.eval()


def _run_sequence(step_fn, model, batch: int, T: int = 5):
    """Feed T steps through step_fn (threading h), returning all p's and the final h as numpy."""
    h = torch.zeros(batch, model.hidden_size)
    ps = []
    for t in range(T):
        cat, num, roll, _ = example_inputs(model, batch)
        cat = (cat + t) % torch.tensor([8, 97, 13])
        p, h = step_fn(cat, num + t, roll, h)
        ps.append(np.asarray(p))
        h = torch.as_tensor(np.asarray(h))
    return np.stack(ps), np.asarray(h)


def test_torchscript_matches_eager(model, tmp_path):
    path = export_torchscript(model, tmp_path / "step.pt")
    scripted = torch.jit.load(str(path))
    with torch.no_grad():
        for batch in (1, 7):  # other batch sizes than the traced one
            want = _run_sequence(lambda *a: model.step(*a), model, batch)
            got = _run_sequence(lambda *a: scripted(*a), model, batch)
            np.testing.assert_allclose(got[0], want[0], atol=1e-5, rtol=0)
            np.testing.assert_allclose(got[1], want[1], atol=1e-5, rtol=0)


def test_onnxruntime_matches_torch(model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = export_onnx(model, tmp_path / "step.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def ort_step(cat, num, roll, h):
        p, h_new = sess.run(None, {"cat": cat.numpy(), "num": num.numpy(), "roll": roll.numpy(),
                                   "h": np.asarray(h, dtype=np.float32)})
        return p, h_new

    with torch.no_grad():
        for batch in (1, 9):
            want = _run_sequence(lambda *a: model.step(*a), model, batch)
            got = _run_sequence(ort_step, model, batch)
            assert got[0].shape == want[0].shape
            np.testing.assert_allclose(got[0], want[0], atol=1e-5, rtol=0)
            np.testing.assert_allclose(got[1], want[1], atol=1e-5, rtol=0)
