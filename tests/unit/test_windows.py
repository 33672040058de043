"""RollingWindows against a brute-force reference that keeps every event and filters per query."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.windows import (
    DEFAULT_HORIZONS,
    N_VALUES,
    WINDOW_VALUES,
    Horizon,
    RollingWindows,
    window_feature_names,
)
from schemas.events import N_EVENT_TYPES

SMALL_HORIZONS = (Horizon("10s", 10_000, 1_000), Horizon("1m", 60_000, 15_000), Horizon("5m", 300_000, 300_000))
BASE_TS = 1_700_000_000_000
DAY = 86_400_000


def reference_raw(events: list[tuple[int, int, float, float]], now: int, horizons) -> list[int]:
    """Counts and integer cents per horizon, straight from the documented rule, in any event order."""
    out: list[int] = []
    max_ts = max((e[0] for e in events), default=None)
    for h in horizons:
        n = h.length_ms // h.bucket_ms
        bn = now // h.bucket_ms
        top = bn if max_ts is None else max(bn, max_ts // h.bucket_ms)
        vals = [0] * N_VALUES
        for ts, ti, cart, purchase in events:
            if top - n < ts // h.bucket_ms <= bn:
                vals[ti] += 1
                vals[N_EVENT_TYPES] += round(cart * 100)
                vals[N_EVENT_TYPES + 1] += round(purchase * 100)
        out.extend(vals)
    return out


def reference_features(events, now, horizons) -> np.ndarray:
    raw = reference_raw(events, now, horizons)
    return np.array([v / 100 if i % N_VALUES >= N_EVENT_TYPES else v for i, v in enumerate(raw)], dtype=np.float32)


money = st.one_of(st.just(0.0), st.floats(0.01, 5000, allow_nan=False), st.integers(1, 10**6).map(lambda c: c / 100))
# Steps mix bursts, gaps beyond every horizon and jumps back in time (late and out-of-order events).
steps = st.one_of(
    st.integers(0, 2_000),
    st.integers(0, 400_000),
    st.integers(-400_000, 0),
    st.integers(-9 * DAY, 9 * DAY),
)
event = st.tuples(steps, st.integers(0, N_EVENT_TYPES - 1), money, money)


@st.composite
def streams(draw):
    horizons = draw(st.sampled_from([DEFAULT_HORIZONS, SMALL_HORIZONS, DEFAULT_HORIZONS + SMALL_HORIZONS]))
    ts = BASE_TS
    events = []
    for dt, ti, cart, purchase in draw(st.lists(event, max_size=60)):
        ts += dt
        events.append((ts, ti, cart, purchase))
    return horizons, events


@settings(max_examples=200, deadline=None)
@given(streams(), st.lists(st.integers(-10 * DAY, 10 * DAY), min_size=1, max_size=8), st.data())
def test_matches_reference_at_random_times(stream, query_offsets, data):
    horizons, events = stream
    w = RollingWindows(horizons)
    seen: list = []
    for ts, ti, cart, purchase in events:
        w.add(ts, ti, cart, purchase)
        seen.append((ts, ti, cart, purchase))
        # right after the add (what UserState.apply reports), and at a random nearby time
        assert w.raw(ts) == reference_raw(seen, ts, horizons)
        q = ts + data.draw(st.integers(-2 * DAY, 2 * DAY))
        assert np.array_equal(w.features(q), reference_features(seen, q, horizons))
    anchor = events[-1][0] if events else BASE_TS
    for off in query_offsets:
        now = anchor + off
        got = w.features(now)
        assert got.dtype == np.float32 and got.shape == (len(horizons) * N_VALUES,)
        assert np.array_equal(got, reference_features(seen, now, horizons))


@settings(max_examples=100, deadline=None)
@given(streams(), st.integers(0, 60), st.lists(st.integers(-8 * DAY, 8 * DAY), max_size=5))
def test_round_trip_mid_stream(stream, cut, query_offsets):
    """Encode/decode at any point, continue adding: identical to never having encoded."""
    horizons, events = stream
    a, b = RollingWindows(horizons), RollingWindows(horizons)
    for i, (ts, ti, cart, purchase) in enumerate(events):
        if i == cut:
            b = RollingWindows.from_bytes(b.to_bytes(), horizons)
            assert b == a
        a.add(ts, ti, cart, purchase)
        b.add(ts, ti, cart, purchase)
    b2 = RollingWindows.from_bytes(b.to_bytes(), horizons)
    assert b2 == a and b2.to_bytes() == a.to_bytes()
    anchor = events[-1][0] if events else BASE_TS
    for off in query_offsets:
        assert np.array_equal(b2.features(anchor + off), a.features(anchor + off))


def test_order_independent():
    """Same events in another arrival order (all within the rings) give identical state."""
    rng = np.random.default_rng(7)
    evs = [(BASE_TS + int(rng.integers(0, 3_000_000)), int(rng.integers(0, 8)), float(rng.integers(0, 99999)) / 100, 0.1)
           for _ in range(200)]
    a, b = RollingWindows(), RollingWindows()
    for e in evs:
        a.add(*e)
    for e in reversed(evs):
        b.add(*e)
    assert a == b and a.to_bytes() == b.to_bytes()


def test_late_event_beyond_short_horizon_counts_in_longer_one():
    w = RollingWindows()
    w.add(BASE_TS + 2 * 3_600_000, 0)  # head of the 1h ring moves 2 hours ahead
    w.add(BASE_TS, 3, cart_value_added=12.5)  # 2 h late: out of the 1h ring, inside 24h and 7d
    names = window_feature_names()
    f = dict(zip(names, w.features(BASE_TS + 2 * 3_600_000)))
    assert f["1h.add_to_cart"] == 0 and f["1h.page_view"] == 1
    assert f["24h.add_to_cart"] == 1 and f["24h.cart_value_added"] == np.float32(12.5)
    assert f["7d.add_to_cart"] == 1


def test_far_future_query_is_empty_and_empty_windows_are_zero():
    w = RollingWindows()
    assert not w.features(BASE_TS).any()
    w.add(BASE_TS, 7, purchase_amount=99.99)
    assert w.features(BASE_TS)[N_VALUES - 1] == np.float32(99.99)
    assert not w.features(BASE_TS + 8 * DAY).any()
    assert not w.features(BASE_TS - 1).any() or BASE_TS // 300_000 == (BASE_TS - 1) // 300_000


def test_names_and_layout():
    names = window_feature_names()
    assert len(names) == len(DEFAULT_HORIZONS) * len(WINDOW_VALUES) == 30
    assert names[0] == "1h.page_view" and names[-1] == "7d.purchase_amount"


def test_decode_rejects_other_horizons_and_garbage():
    w = RollingWindows()
    w.add(BASE_TS, 1)
    data = w.to_bytes()
    with pytest.raises(ValueError, match="different horizons"):
        RollingWindows.from_bytes(data, SMALL_HORIZONS)
    with pytest.raises(ValueError, match="unknown format 9"):
        RollingWindows.from_bytes(b"\x09" + data[1:])
    with pytest.raises(ValueError):
        RollingWindows.from_bytes(data[:-1])
    with pytest.raises(ValueError, match="trailing"):
        RollingWindows.from_bytes(data + b"\x00")


def test_horizon_validation():
    with pytest.raises(ValueError):
        Horizon("bad", 1000, 300)
