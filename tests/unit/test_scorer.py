"""streams.scorer.Scorer.run: one packed GRU pass over back-to-back sequences equals stepping each alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models import artifacts
from models.features import FeatureSpec
from models.gru import GRUConfig, IntentGRU
from streams.scorer import Scorer, packed_order


def test_packed_order_is_time_major_longest_first():
    # sequences: a = rows 0-1, b = row 2, c = rows 3-5
    order, batch_sizes, sorted_idx = packed_order(np.array([2, 1, 3]))
    assert sorted_idx.tolist() == [2, 0, 1]
    assert batch_sizes.tolist() == [3, 2, 1]
    assert order.tolist() == [3, 0, 2, 4, 1, 5]


@pytest.mark.parametrize("lengths", [
    [3, 1, 7, 1, 3, 2, 1],  # unsorted, with ties: the packing must put everything back
    [1, 1, 1, 1, 1],  # one click each: the fused cell, no packing
])
def test_run_equals_stepping_each_sequence_from_its_own_state(tmp_path, lengths):
    torch.manual_seed(0)
    spec = FeatureSpec()
    artifacts.save(IntentGRU(GRUConfig.from_spec(spec, hidden_size=16)), {"threshold": 0.5}, tmp_path / "m", spec)
    scorer = Scorer(artifacts.load(tmp_path / "m"), device="cpu")
    model, cfg = scorer.model, scorer.model.config
    rng = np.random.default_rng(1)
    n, b = sum(lengths), len(lengths)
    cat = np.stack([rng.integers(0, cfg.n_types, n), rng.integers(0, cfg.n_item_buckets, n),
                    rng.integers(0, cfg.n_category_buckets, n)], axis=1).astype(np.int64)
    num = rng.normal(size=(n, cfg.n_numeric)).astype(np.float32)
    roll = rng.normal(size=(n, cfg.n_rolling)).astype(np.float32)
    h0 = rng.normal(size=(b, 16)).astype(np.float32)

    p, h_last = scorer.run(cat, num, roll, lengths, h0)

    assert p.shape == (n,) and h_last.shape == (b, 16)
    row = 0
    with torch.no_grad():
        for i, length in enumerate(lengths):
            h = torch.from_numpy(h0[i:i + 1])
            for _ in range(length):
                p_step, h = model.step(torch.from_numpy(cat[row:row + 1]), torch.from_numpy(num[row:row + 1]),
                                       torch.from_numpy(roll[row:row + 1]), h)
                assert abs(p[row] - float(p_step[0])) < 1e-6
                row += 1
            np.testing.assert_allclose(h_last[i], h[0].numpy(), atol=1e-6)
