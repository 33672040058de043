"""IntentGRU: the incremental step path equals the full-sequence pass."""
from __future__ import annotations

import pytest
import torch

from models.gru import GRUConfig, IntentGRU
from streams.scorer import available_devices

CFG = GRUConfig(n_types=8, n_item_buckets=101, n_category_buckets=17, n_numeric=10, n_rolling=30,
                hidden_size=32)


def _model(seed: int = 0) -> IntentGRU:
    torch.manual_seed(seed)
    m = IntentGRU(CFG)
    # Non-trivial normalization and calibration, so the test covers the buffers too.
    m.set_normalization(torch.randn(10), torch.rand(10) + 0.5, torch.randn(30), torch.rand(30) + 0.5)
    m.set_calibration(0.8, -0.3)
    return m.eval()


def _batch(B: int, T: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack(
        (
            torch.randint(0, 8, (B, T), generator=g),
            torch.randint(0, 101, (B, T), generator=g),
            torch.randint(0, 17, (B, T), generator=g),
        ),
        dim=-1,
    )
    return cat, torch.randn(B, T, 10, generator=g), torch.randn(B, T, 30, generator=g)


def _step_all(m: IntentGRU, cat, num, roll) -> torch.Tensor:
    B, T = cat.shape[:2]
    h = m.init_hidden(B)
    ps = []
    for t in range(T):
        p, h = m.step(cat[:, t], num[:, t], roll[:, t], h)
        ps.append(p)
    return torch.stack(ps, dim=1)


def test_step_by_step_equals_full_pass():
    m = _model()
    cat, num, roll = _batch(4, 12)
    with torch.no_grad():
        full = torch.sigmoid(m(cat, num, roll))
        stepped = _step_all(m, cat, num, roll)
    assert full.shape == (4, 12)
    assert torch.allclose(full, stepped, atol=1e-5, rtol=0)


def test_mixed_lengths_match_individual_sequences():
    """Padded batch with different lengths: every real position equals stepping that sequence alone."""
    m = _model(3)
    lengths = torch.tensor([1, 7, 3, 10])
    cat, num, roll = _batch(4, 10, seed=5)
    with torch.no_grad():
        logits = m(cat, num, roll, lengths)
        for b, n in enumerate(lengths.tolist()):
            alone = _step_all(m, cat[b : b + 1, :n], num[b : b + 1, :n], roll[b : b + 1, :n])[0]
            assert torch.allclose(torch.sigmoid(logits[b, :n]), alone, atol=1e-5, rtol=0)
            assert torch.all(logits[b, n:] == 0)


def test_rebuilt_hidden_continues_like_the_full_pass():
    m = _model(4)
    cat, num, roll = _batch(2, 9, seed=7)
    with torch.no_grad():
        full = torch.sigmoid(m(cat, num, roll))
        h = m.hidden_from_inputs(cat[:, :6], num[:, :6])
        p, _ = m.step(cat[:, 6], num[:, 6], roll[:, 6], h)
    assert torch.allclose(p, full[:, 6], atol=1e-5, rtol=0)


def test_rolling_features_only_reach_the_head():
    """Changing rolling inputs changes the score but not the hidden state (so it can be rebuilt)."""
    m = _model(5)
    cat, num, roll = _batch(3, 1, seed=9)
    h0 = m.init_hidden(3)
    with torch.no_grad():
        p1, h1 = m.step(cat[:, 0], num[:, 0], roll[:, 0], h0)
        p2, h2 = m.step(cat[:, 0], num[:, 0], roll[:, 0] + 3.0, h0)
    assert torch.equal(h1, h2)
    assert not torch.allclose(p1, p2)


# cuda joins where a GPU is present (no skip where there is none).
@pytest.mark.parametrize("device", available_devices())
def test_the_fused_cell_steps_like_the_gru_on_each_device(device):
    m = _model()
    cat, num, roll = _batch(64, 1)
    h = torch.tanh(torch.randn(64, CFG.hidden_size, generator=torch.Generator().manual_seed(2)))
    with torch.no_grad():
        want_p, want_h = m.step(cat[:, 0], num[:, 0], roll[:, 0], h)
        fused = m.to(device)
        if device == "cuda":
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # as the worker runs
        p, h_new = fused.step_fused(cat[:, 0].to(device), num[:, 0].to(device), roll[:, 0].to(device), h.to(device))
    assert (p.cpu() - want_p).abs().max() < 1e-6
    assert (h_new.cpu() - want_h).abs().max() < 1e-6
