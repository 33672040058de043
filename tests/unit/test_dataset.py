"""build_dataset: sessions cut at the first purchase, labels, order independence, same inputs as serving."""
from __future__ import annotations

import random

import numpy as np

from models.dataset import Packed, agg_feature_names, build_dataset, time_split
from models.features import FeatureSpec, advance
from models.state import UserState
from schemas.events import ClickEvent

SPEC = FeatureSpec()
T0 = 1_704_067_200_000
MIN = 60_000


def _ev(eid: str, user: str, ts: int, type_: str, **kw) -> ClickEvent:
    return ClickEvent(event_id=eid, user_id=user, ts=ts, type=type_, **kw)


def _events() -> list[ClickEvent]:
    return [
        # u1 session A: view, cart, checkout, purchase, view (after purchase) -> 3 prefixes, label 1
        _ev("a1", "u1", T0, "product_view", item_id="i1", price=10.0),
        _ev("a2", "u1", T0 + 1 * MIN, "add_to_cart", item_id="i1", price=10.0, quantity=2),
        _ev("a3", "u1", T0 + 2 * MIN, "begin_checkout"),
        _ev("a4", "u1", T0 + 3 * MIN, "purchase", item_id="i1", price=10.0, quantity=2),
        _ev("a5", "u1", T0 + 4 * MIN, "page_view"),
        # u1 session B (gap > 30 min): two views, no purchase -> label 0
        _ev("b1", "u1", T0 + 60 * MIN, "page_view"),
        _ev("b2", "u1", T0 + 61 * MIN, "product_view", item_id="i2"),
        # u2: a session that opens with a purchase (dropped), then one with a view only
        _ev("c1", "u2", T0 + 5 * MIN, "purchase", price=3.0, session_id="s-c"),
        _ev("c2", "u2", T0 + 6 * MIN, "page_view", session_id="s-c"),
        _ev("d1", "u2", T0 + 7 * MIN, "search", session_id="s-d"),
    ]


def test_cut_at_first_purchase_and_labels():
    ds = build_dataset(_events(), SPEC, progress=False)
    by_first = {ids[0]: i for i, ids in enumerate(ds.event_ids)}
    assert sorted(by_first) == ["a1", "b1", "d1"]
    a, b, d = by_first["a1"], by_first["b1"], by_first["d1"]
    assert ds.event_ids[a] == ["a1", "a2", "a3"] and ds.label[a] == 1
    assert ds.event_ids[b] == ["b1", "b2"] and ds.label[b] == 0
    assert ds.event_ids[d] == ["d1"] and ds.label[d] == 0
    assert ds.session_id[d] == "s-d"
    assert ds.start_ms[b] == T0 + 60 * MIN
    for i in range(len(ds)):
        n = len(ds.event_ids[i])
        assert ds.cat[i].shape == (n, 3) and ds.num[i].shape == (n, SPEC.n_numeric)
        assert ds.roll[i].shape == (n, SPEC.n_rolling) and ds.agg[i].shape == (n, len(agg_feature_names(SPEC)))


def test_events_after_the_cut_still_move_rolling_windows():
    """Session B sees session A's purchase in its 24h window even though A's purchase is not a prefix."""
    ds = build_dataset(_events(), SPEC, progress=False)
    b = [ids[0] for ids in ds.event_ids].index("b1")
    names = agg_feature_names(SPEC)
    assert ds.agg[b][0, names.index("win.24h.purchase")] == 1
    assert ds.agg[b][0, names.index("win.24h.purchase_amount")] == 20.0
    assert ds.agg[b][0, names.index("win.24h.page_view")] == 2  # a5 (after the cut) and b1


def test_agg_counts_and_cart_value():
    ds = build_dataset(_events(), SPEC, progress=False)
    a = [ids[0] for ids in ds.event_ids].index("a1")
    names = agg_feature_names(SPEC)
    rows = ds.agg[a]
    assert rows[:, names.index("n_events")].tolist() == [1, 2, 3]
    assert rows[:, names.index("n.add_to_cart")].tolist() == [0, 1, 1]
    assert rows[:, names.index("cart_value")].tolist() == [0.0, 20.0, 20.0]
    assert rows[:, names.index("duration_s")].tolist() == [0.0, 60.0, 120.0]


def test_input_order_does_not_matter():
    evs = _events()
    shuffled = evs[:]
    random.Random(3).shuffle(shuffled)
    x = build_dataset(evs, SPEC, progress=False)
    y = build_dataset(shuffled, SPEC, progress=False)
    assert x.event_ids == y.event_ids and np.array_equal(x.label, y.label)
    for i in range(len(x)):
        assert np.array_equal(x.num[i], y.num[i]) and np.array_equal(x.roll[i], y.roll[i])


def test_same_inputs_as_the_serving_path():
    """Replaying u1 through advance() (what the worker does) gives the dataset's rows exactly."""
    ds = build_dataset(_events(), SPEC, progress=False)
    state = UserState.new("u1")
    served = {}
    for ev in [e for e in _events() if e.user_id == "u1"]:
        _, inp = advance(state, ev, SPEC)
        served[ev.event_id] = inp
    for i, ids in enumerate(ds.event_ids):
        for t, eid in enumerate(ids):
            if eid in served:
                assert np.array_equal(ds.cat[i][t], served[eid].cat)
                assert np.array_equal(ds.num[i][t], served[eid].num)
                assert np.array_equal(ds.roll[i][t], served[eid].roll)


def test_time_split_is_ordered_and_disjoint():
    ds = build_dataset(_events(), SPEC, progress=False)
    tr, va, te = time_split(ds, 1 / 3, 1 / 3)
    assert len(tr) + len(va) + len(te) == len(ds)
    assert set(tr).isdisjoint(va) and set(va).isdisjoint(te)
    assert ds.start_ms[tr].max() <= ds.start_ms[va].min() <= ds.start_ms[te].min()


def test_packed_batch_pads_with_zeros():
    ds = build_dataset(_events(), SPEC, progress=False)
    packed = Packed.from_dataset(ds)
    idx = np.arange(len(ds))
    cat, num, roll, lengths, y = packed.batch(idx)
    assert cat.shape[:2] == (len(ds), int(lengths.max()))
    for i in idx:
        n = lengths[i]
        assert np.array_equal(cat[i, :n], ds.cat[i]) and np.array_equal(num[i, :n], ds.num[i])
        assert not cat[i, n:].any() and not num[i, n:].any() and not roll[i, n:].any()
    assert np.array_equal(y, ds.label.astype(np.float32))
