"""Featurization: one path, deterministic, event-time only, spec hash guards compatibility."""
from __future__ import annotations

import math

import numpy as np
import pytest

from models.features import (
    CONTEXT_NAMES,
    NUMERIC_NAMES,
    FeatureSpec,
    advance,
    event_inputs,
    rolling_inputs,
    session_event_inputs,
    stack_inputs,
    step_input,
    step_values,
)
from models.history import INPUT_NAMES as HISTORY_INPUT_NAMES
from models.ids import bucket, stable_hash
from models.state import UserState
from models.windows import Horizon
from schemas.events import EVENT_TYPE_INDEX, ClickEvent

SPEC = FeatureSpec()
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a Monday


def _ev(i: int, ts: int, type_: str = "product_view", **kw) -> ClickEvent:
    return ClickEvent(event_id=f"e{i}", user_id="u1", ts=ts, type=type_, **kw)


def _num(values: np.ndarray, name: str) -> float:
    return float(values[NUMERIC_NAMES.index(name)])


def test_shapes_and_dtypes():
    state = UserState.new("u1")
    _, inp = advance(state, _ev(0, T0, item_id="i1", category_id="c1", price=19.99), SPEC)
    assert inp.cat.dtype == np.int64 and inp.cat.shape == (3,)
    assert inp.num.dtype == np.float32 and inp.num.shape == (SPEC.n_numeric,)
    assert inp.roll.dtype == np.float32 and inp.roll.shape == (SPEC.n_rolling,)
    assert SPEC.n_rolling == 2 * 30 + len(CONTEXT_NAMES) + len(HISTORY_INPUT_NAMES)
    assert SPEC.rolling_names[-len(HISTORY_INPUT_NAMES):] == list(HISTORY_INPUT_NAMES)


def test_event_values():
    state = UserState.new("u1")
    _, a = advance(state, _ev(0, T0 + 6 * 3_600_000, item_id="i1", category_id="c1", price=19.99), SPEC)
    _, b = advance(state, _ev(1, T0 + 6 * 3_600_000 + 90_000, "add_to_cart", item_id="i1", quantity=2,
                              price=19.99, device="mobile"), SPEC)
    assert a.cat.tolist() == [EVENT_TYPE_INDEX["product_view"], bucket(stable_hash("i1"), SPEC.n_item_buckets),
                              bucket(stable_hash("c1"), SPEC.n_category_buckets)]
    assert b.cat[2] == 0  # no category -> the "absent" row
    assert _num(a.num, "is_first") == 1.0 and _num(a.num, "log_dt_s") == 0.0
    assert _num(b.num, "is_first") == 0.0
    assert _num(b.num, "log_dt_s") == pytest.approx(math.log1p(90.0))
    assert _num(b.num, "log_position") == pytest.approx(math.log1p(1))
    assert _num(b.num, "log_quantity") == pytest.approx(math.log1p(2))
    assert _num(a.num, "log_price") == pytest.approx(math.log1p(19.99), rel=1e-6)
    assert _num(a.num, "has_price") == 1.0
    # 06:00 UTC -> a quarter turn
    assert _num(a.num, "hour_sin") == pytest.approx(1.0, abs=1e-6)
    assert _num(a.num, "hour_cos") == pytest.approx(0.0, abs=1e-6)
    # rolling: 1h product_view count 1 -> log1p(1); cart value 39.98 over 1h in the add_to_cart step
    names = SPEC.rolling_names
    assert a.roll[names.index("log1p.1h.product_view")] == pytest.approx(math.log1p(1))
    assert b.roll[names.index("log1p.1h.cart_value_added")] == pytest.approx(math.log1p(39.98), rel=1e-5)
    assert a.roll[names.index("log1p.hist.1h.product_view")] == 0.0  # its own session only
    assert a.roll[names.index("device.none")] == 1.0
    assert b.roll[names.index("device.mobile")] == 1.0 and b.roll[names.index("device.none")] == 0.0


def test_no_wall_clock_dependence_and_determinism(monkeypatch):
    events = [_ev(i, T0 + i * 40_000, price=5.0 + i) for i in range(5)]

    def run():
        state = UserState.new("u1")
        return [advance(state, e, SPEC)[1] for e in events]

    first = run()
    import time
    monkeypatch.setattr(time, "time", lambda: 0.0)
    second = run()
    for x, y in zip(first, second):
        assert np.array_equal(x.cat, y.cat) and np.array_equal(x.num, y.num) and np.array_equal(x.roll, y.roll)


def test_late_event_has_zero_gap():
    state = UserState.new("u1")
    advance(state, _ev(0, T0 + 60_000), SPEC)
    _, late = advance(state, _ev(1, T0), SPEC)  # earlier than the previous click, same session
    assert _num(late.num, "log_dt_s") == 0.0 and _num(late.num, "is_first") == 0.0


def test_rebuild_from_recent_equals_live_inputs():
    """The worker rebuilds a hidden state from Session.recent: the inputs must be the live ones exactly."""
    state = UserState.new("u1")
    live = []
    for i in range(40):  # more than RECENT_K, so recent holds only the tail
        _, inp = advance(state, _ev(i, T0 + i * 37_000 + (i % 3) * 1000, "add_to_cart" if i % 7 == 3 else "product_view",
                                    item_id=f"i{i % 5}", category_id="c2", price=3.5 * i), SPEC)
        live.append(inp)
    sess = state.session
    k = len(sess.recent)
    first_pos = sess.n_events - k
    # the event before recent[0] is live event first_pos - 1
    prev_ts = T0 + (first_pos - 1) * 37_000 + ((first_pos - 1) % 3) * 1000
    cat, num = session_event_inputs(sess.recent, first_pos, prev_ts, SPEC)
    assert np.array_equal(cat, np.stack([x.cat for x in live[-k:]]))
    assert np.array_equal(num, np.stack([x.num for x in live[-k:]]))


def test_rolling_inputs_clip_and_log():
    wf = np.arange(30, dtype=np.float32) - 1.0  # includes a negative entry
    out = rolling_inputs(wf, SPEC, "tablet")
    assert out[0] == 0.0  # negatives clipped before log1p
    assert out[5] == pytest.approx(math.log1p(4.0))
    assert np.array_equal(out[30:60], out[:30])  # no session share given: history == windows
    assert out[60 + CONTEXT_NAMES.index("device.tablet")] == 1.0
    assert rolling_inputs(wf, SPEC, "smart-fridge")[60 + CONTEXT_NAMES.index("device.other")] == 1.0
    own = np.ones(30, dtype=np.float32) * 2
    out = rolling_inputs(wf, SPEC, None, own)
    assert out[30 + 5] == pytest.approx(math.log1p(2.0)) and out[30 + 2] == 0.0  # 1 - 2 clipped at 0


def test_history_windows_exclude_the_current_session():
    """hist.* = what earlier sessions left in the windows: exact, also after later clicks were applied."""
    state = UserState.new("u1")
    names = SPEC.rolling_names
    advance(state, _ev(0, T0, "add_to_cart", price=5.0, quantity=2), SPEC)          # earlier session
    advance(state, _ev(1, T0 + 60_000, "purchase", price=5.0, quantity=2), SPEC)
    s2 = T0 + 45 * 60_000                                                            # new session (gap)
    step_a, a = advance(state, _ev(2, s2, "add_to_cart", price=3.0), SPEC)
    step_b, b = advance(state, _ev(3, s2 + 60_000, "product_view"), SPEC)
    assert step_b.session is step_a.session and not step_b.new_session
    for x in (a, b):
        assert x.roll[names.index("log1p.hist.1h.add_to_cart")] == pytest.approx(math.log1p(1))
        assert x.roll[names.index("log1p.hist.1h.cart_value_added")] == pytest.approx(math.log1p(10.0), rel=1e-5)
        assert x.roll[names.index("log1p.hist.1h.purchase")] == pytest.approx(math.log1p(1))
        assert x.roll[names.index("log1p.hist.1h.product_view")] == 0.0
    assert a.roll[names.index("log1p.1h.add_to_cart")] == pytest.approx(math.log1p(2))  # windows include it
    # featurizing step_a again after step_b was applied gives the same inputs
    assert np.array_equal(step_input(step_a, SPEC).roll, a.roll)


def test_step_input_matches_event_inputs():
    state = UserState.new("u1")
    step, inp = advance(state, _ev(0, T0, item_id="x", price=2.0), SPEC)
    again = step_input(step, SPEC)
    cat, num = event_inputs(step.recent_event, step.prev_ts_ms, step.position, SPEC)
    assert np.array_equal(again.cat, inp.cat) and np.array_equal(cat, inp.cat) and np.array_equal(num, inp.num)


def test_stacked_rows_are_each_clicks_own_inputs():
    """A batch is stacked in one numpy pass; every row must be what that click alone gives, in order."""
    states = {u: UserState.new(u) for u in ("u1", "u2")}
    values, alone = [], []
    for i in range(12):
        user = "u1" if i % 3 else "u2"
        event = ClickEvent(event_id=f"e{i}", user_id=user, ts=T0 + i * 45_000, type=["product_view", "add_to_cart",
                           "search"][i % 3], item_id=f"i{i}", price=float(i) + 0.5, device=["mobile", None][i % 2])
        v = step_values(states[user].apply(event), SPEC)
        values.append(v)
        alone.append(stack_inputs([v], SPEC))
    cat, num, roll = stack_inputs(values, SPEC)
    assert cat.shape == (12, 3) and num.shape == (12, SPEC.n_numeric) and roll.shape == (12, SPEC.n_rolling)
    assert len({tuple(r) for r in num.tolist()}) == 12  # distinct rows: a mix-up would show
    for i, (c, n, r) in enumerate(alone):
        assert np.array_equal(cat[i], c[0]) and np.array_equal(num[i], n[0]) and np.array_equal(roll[i], r[0]), i


def test_spec_hash_changes_with_the_spec():
    base = FeatureSpec().spec_hash()
    assert FeatureSpec().spec_hash() == base
    assert FeatureSpec(n_item_buckets=1000).spec_hash() != base
    assert FeatureSpec(version="f1").spec_hash() != base
    assert FeatureSpec(horizons=(Horizon("1h", 3_600_000, 600_000),)).spec_hash() != base
    assert FeatureSpec.from_dict(FeatureSpec().to_dict()).spec_hash() == base


def test_lifetime_inputs_describe_finished_sessions_only():
    """life.* come from the user's finished sessions: zero on a first visit, constant within a session,
    and they still count a session that left the 7-day windows long ago."""
    state = UserState.new("u1")
    names = SPEC.rolling_names
    _, a = advance(state, _ev(0, T0, "add_to_cart", price=5.0, device="app"), SPEC)
    _, b = advance(state, _ev(1, T0 + 60_000, "begin_checkout", device="app"), SPEC)
    _, c = advance(state, _ev(2, T0 + 90_000, "purchase", price=5.0, device="app"), SPEC)
    for x in (a, b, c):  # first session: no history yet
        assert not x.roll[-len(HISTORY_INPUT_NAMES):].any()
    later = T0 + 30 * 86_400_000                                                    # 30 days later
    _, d = advance(state, _ev(3, later, "page_view", device="mobile"), SPEC)
    _, e = advance(state, _ev(4, later + 5_000, "search", device="mobile"), SPEC)
    assert d.roll[names.index("log1p.hist.7d.purchase")] == 0.0                      # the windows forgot
    for x in (d, e):
        v = dict(zip(names, x.roll.tolist()))
        assert v["life.returning"] == 1.0 and v["life.log1p.sessions"] == pytest.approx(math.log1p(1))
        assert v["life.frac.purchase"] == 1.0 and v["life.frac.cart_no_purchase"] == 0.0
        assert v["life.frac.checkout"] == 1.0 and v["life.frac.device.app"] == 1.0
        assert v["life.log1p.events.add_to_cart"] == pytest.approx(math.log1p(1))
        assert v["life.log1p.events_per_session"] == pytest.approx(math.log1p(3))
        assert v["life.mean_log_gap"] == pytest.approx((math.log1p(60) + math.log1p(30)) / 2, rel=1e-6)
        assert v["life.log1p.purchase_amount"] == pytest.approx(math.log1p(5.0), rel=1e-6)
    assert np.array_equal(d.roll[-len(HISTORY_INPUT_NAMES):], e.roll[-len(HISTORY_INPUT_NAMES):])
