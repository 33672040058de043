"""UserState: steps against the window and session references, idempotence, versioned encoding."""
from __future__ import annotations

import dataclasses
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.history import UserHistory
from models.session import RecentEvent
from models.state import (BUDGET_BYTES, DEFLATED, DEFLATED_VERSION, MAGIC, VERSION, RecentIntent, StateConfig,
                          UserState, _encode_v3)
from models.windows import DEFAULT_HORIZONS, Horizon
from schemas.events import EVENT_TYPES, ClickEvent
from tests.unit.test_session import USER, click_from_bits, reference as session_reference
from tests.unit.test_windows import reference_features

FIXTURES = Path(__file__).parent / "state_fixtures"
BASE_TS = 1_700_000_000_000
SOURCE = "clickstream/3"


def window_tuple(ev: ClickEvent) -> tuple[int, int, float, float]:
    value = (ev.price or 0.0) * (1 if ev.quantity is None else ev.quantity)
    return (ev.ts, EVENT_TYPES.index(ev.type), value if ev.type == "add_to_cart" else 0.0,
            value if ev.type == "purchase" else 0.0)


def make_intent(i: int, source: str = SOURCE, model: str = "gru-2024-01") -> RecentIntent:
    return RecentIntent(source, 100 + i, (i + 1) / 7, BASE_TS + i, 1.0 / (i + 3), i + 1, 10.0 * i + 0.1,
                        tuple(range(i, i + len(EVENT_TYPES))), model)


@st.composite
def scenarios(draw):
    xs = draw(st.lists(st.integers(0, 2**63 - 1), max_size=50))
    ts, events = BASE_TS, []
    for i, x in enumerate(xs):
        ev, ts = click_from_bits(i, ts, x)
        events.append(ev)
    # per event: offset gap, whether to round-trip the state first, whether to set hidden / an intent
    extras = draw(st.lists(st.tuples(st.integers(1, 3), st.booleans(), st.booleans(), st.booleans()),
                           min_size=len(events), max_size=len(events)))
    return events, extras


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.sampled_from([DEFAULT_HORIZONS, (Horizon("1m", 60_000, 10_000),)]))
def test_steps_match_references_and_survive_encoding(scenario, horizons):
    events, extras = scenario
    config = StateConfig(horizons=horizons, recent_k=8)
    state = UserState.new(USER, config)
    expected_sessions = session_reference(events, config.session_gap_ms, config.recent_k)
    offset = 0
    rng = np.random.default_rng(len(events))
    for i, (ev, exp, (gap, roundtrip, set_hidden, add_intent)) in enumerate(zip(events, expected_sessions, extras)):
        if roundtrip:
            data = state.to_bytes()
            decoded = UserState.from_bytes(data, config)
            assert decoded == state and decoded.to_bytes() == data
            state = decoded
        offset += gap
        assert not state.is_applied(SOURCE, offset)
        step = state.apply(ev, SOURCE, offset)
        assert state.is_applied(SOURCE, offset) and state.applied[SOURCE] == offset
        assert np.array_equal(step.window_features,
                              reference_features([window_tuple(e) for e in events[:i + 1]], ev.ts, horizons))
        assert (step.new_session, step.prev_ts_ms, step.position) == (exp["new"], exp["prev_ts"], exp["n_events"] - 1)
        assert step.recent_event == RecentEvent.from_click(ev) and step.session is state.session
        s = state.session
        assert (s.session_id, s.start_ms, s.last_ms, s.n_events, s.cart_value, s.recent) == (
            exp["session_id"], exp["start_ms"], exp["last_ms"], exp["n_events"], exp["cart_value"], exp["recent"])
        if set_hidden:
            s.hidden = rng.standard_normal(64).astype(np.float32)
            s.hidden_version = f"m{i % 3}"
        if add_intent:
            state.remember_intent(make_intent(i, SOURCE, f"m{i % 2}"))
    final = UserState.from_bytes(state.to_bytes(), config)
    assert final == state


def test_apply_refuses_applied_offsets_and_leaves_state_untouched():
    state = UserState.new(USER)
    e1 = ClickEvent("a", USER, BASE_TS, "add_to_cart", price=5.0)
    e2 = ClickEvent("b", USER, BASE_TS + 1000, "add_to_cart", price=7.0)
    state.apply(e1, SOURCE, 10)
    before = state.to_bytes()
    for off in (10, 9, 0):
        assert state.is_applied(SOURCE, off)
        with pytest.raises(ValueError, match="already applied"):
            state.apply(e2, SOURCE, off)
    assert state.to_bytes() == before
    assert not state.is_applied("clickstream/4", 10)  # offsets are per source partition
    state.apply(e2, "clickstream/4", 10)
    assert state.session.cart_value == 12.0 and state.applied == {SOURCE: 10, "clickstream/4": 10}
    with pytest.raises(ValueError, match="both source and offset"):
        state.apply(e2, SOURCE)
    with pytest.raises(ValueError, match="user"):
        state.apply(ClickEvent("c", "someone-else", BASE_TS, "page_view"), SOURCE, 11)
    state.apply(e2)  # offline use without offsets is allowed (and not idempotent)
    assert state.session.n_events == 3


def test_remember_intent_keeps_last_four_and_finds_them():
    state = UserState.new(USER)
    for i in range(6):
        state.remember_intent(make_intent(i))
    assert [it.offset for it in state.recent_intents] == [102, 103, 104, 105]
    assert state.find_intent(SOURCE, 104) == make_intent(4)
    assert state.find_intent(SOURCE, 101) is None and state.find_intent("other/0", 104) is None


def test_round_trip_is_bit_exact_for_hidden_and_floats():
    state = UserState.new(USER)
    state.apply(ClickEvent("a", USER, BASE_TS, "add_to_cart", item_id="x", price=0.1, quantity=3), SOURCE, 0)
    hidden = np.array([0.1, -0.0, np.float32(1e-45), -3.4e38, np.inf], dtype=np.float32)
    state.session.hidden, state.session.hidden_version = hidden, "v7"
    state.remember_intent(make_intent(0))
    back = UserState.from_bytes(state.to_bytes())
    assert back.session.hidden.tobytes() == hidden.tobytes() and back.session.hidden.dtype == np.float32
    assert back.session.cart_value == state.session.cart_value == 0.1 * 3
    assert back.recent_intents[0].p_purchase == 1 / 7 and back == state
    state.session.hidden = hidden.astype(np.float64)
    with pytest.raises(ValueError, match="float32"):
        state.to_bytes()


def test_versions_and_corruption_give_clear_errors():
    data = golden_state().to_bytes()
    assert data[:2] == MAGIC and data[2] == VERSION
    with pytest.raises(ValueError, match=f"version {DEFLATED_VERSION + 1} is newer than this code"):
        UserState.from_bytes(data[:2] + bytes([DEFLATED_VERSION + 1]) + data[3:])
    with pytest.raises(ValueError, match="version 0 is no longer readable"):
        UserState.from_bytes(data[:2] + b"\x00" + data[3:])
    with pytest.raises(ValueError, match="not a user state record"):
        UserState.from_bytes(b'{"user_id": "u1"}')
    for cut in (3, len(data) // 2, len(data) - 1):
        with pytest.raises(ValueError):
            UserState.from_bytes(data[:cut])
    with pytest.raises(ValueError, match="trailing"):
        UserState.from_bytes(data + b"\x00")
    with pytest.raises(ValueError, match="different horizons"):
        UserState.from_bytes(data, StateConfig(horizons=DEFAULT_HORIZONS[:2]))


def test_full_session_record_fits_budget():
    """K=32 recent clicks with every field, H=64, 4 intents: a busy but real user stays <= 2 KiB."""
    state = UserState.new(USER)
    for i in range(40):
        state.apply(ClickEvent(f"e{i}", USER, BASE_TS + 50_000 * i, EVENT_TYPES[i % 8], session_id="web-0123456789",
                               item_id=f"sku-{i}", category_id=f"cat-{i % 5}", price=10.0 + i, quantity=1 + i % 3),
                    SOURCE, i)
        state.remember_intent(make_intent(i))
    state.session.hidden = np.ones(64, np.float32)
    state.session.hidden_version = "gru-20240101-abcdef12"
    assert len(state.session.recent) == 32
    data = state.to_bytes()
    assert len(data) <= 2048
    assert UserState.from_bytes(data) == state


def golden_state() -> UserState:
    """A fixed state touching every field of the layout; its v1 bytes are checked in."""
    state = UserState.new(USER)
    clicks = [
        ClickEvent("g0", USER, BASE_TS, "product_view", item_id="sku-1", category_id="c", price=25.5),
        ClickEvent("g1", USER, BASE_TS + 40_000, "add_to_cart", item_id="sku-1", price=25.5, quantity=2),
        ClickEvent("g2", USER, BASE_TS + 20_000, "search"),  # late
        ClickEvent("g3", USER, BASE_TS + 4 * 3_600_000, "page_view", session_id="web-77"),
        ClickEvent("g4", USER, BASE_TS + 4 * 3_600_000 + 5_000, "purchase", session_id="web-77",
                   item_id="sku-2", price=9.99, quantity=0),
    ]
    for i, ev in enumerate(clicks):
        state.apply(ev, SOURCE, 1000 + i)
    state.apply(ClickEvent("g5", USER, BASE_TS + 5 * 3_600_000, "remove_from_cart", price=1.0), "clickstream/0", 7)
    state.session.hidden = np.linspace(-1, 1, 64, dtype=np.float32)
    state.session.hidden_version = "gru-2024-01"
    for i in range(5):
        state.remember_intent(make_intent(i, SOURCE if i % 2 else "clickstream/0"))
    return state


def test_checked_in_v1_record_still_loads():
    """v1 records (before the lifetime history) still load, with an empty history; nothing else changes."""
    data = (FIXTURES / "user_state_v1.bin").read_bytes()
    assert data[2] == 1
    old = UserState.from_bytes(data)
    assert old.history == UserHistory() and old.history.is_empty()
    expected = golden_state()
    assert not expected.history.is_empty()
    expected.history = UserHistory()
    assert old == expected
    # a migrated record is written as the current version and reads back unchanged
    assert UserState.from_bytes(old.to_bytes()) == old and old.to_bytes()[2] == VERSION


def test_checked_in_v2_record_still_loads():
    """A future layout change must keep reading v2 records (or this test documents the break)."""
    data = (FIXTURES / "user_state_v2.bin").read_bytes()
    assert data[2] == 2
    state = UserState.from_bytes(data)
    assert state == golden_state() and state.history.finished[0] == 2  # two finished sessions
    assert UserState.from_bytes(state.to_bytes()) == state and state.to_bytes()[2] == VERSION


def test_checked_in_v3_record_still_loads():
    """A future layout change must keep reading v3 records (or this test documents the break)."""
    data = (FIXTURES / "user_state_v3.bin").read_bytes()
    assert data[2] == 3
    assert UserState.from_bytes(data) == golden_state()
    if VERSION == 3:
        assert golden_state().to_bytes() == data


def worker_intents(n: int, per_batch: int = 7) -> list[RecentIntent]:
    """Intents as the worker makes them: float32 scores, cents, a batch's scoring time and latency shared."""
    out = []
    for i in range(n):
        batch = i // per_batch
        p = float(np.float32(np.sin(i) ** 2))
        out.append(RecentIntent(SOURCE, 5_000_000 + 3 * i, p, BASE_TS + 180 * batch, round(40 + 13.7 * batch, 3),
                                i + 1, round(19.99 * (i % 5), 2), tuple((i + j) % 9 for j in range(len(EVENT_TYPES))),
                                "gru-2024-01"))
    return out


def test_intents_round_trip_exactly_in_their_short_forms_and_take_few_bytes():
    """v3 writes a batch's shared fields once and the numbers in short forms when that is exact: a
    state keeps every intent not yet delivered, so under load these dominate the record."""
    state = UserState.new(USER)
    bare = len(state.to_bytes())
    state.recent_intents = worker_intents(60)
    data = state.to_bytes()
    assert UserState.from_bytes(data) == state
    assert (len(data) - bare) / 60 <= 20  # v2 took 57 B an intent here

    # what the short forms cannot hold exactly still comes back bit for bit, only longer
    odd = worker_intents(6)
    odd[1] = dataclasses.replace(odd[1], cart_value=-0.0, latency_ms=-0.0)  # round(-1e-17, 2) is -0.0
    odd[2] = dataclasses.replace(odd[2], source="clickstream/1", offset=3, recent_counts=(1, 2))  # offset goes back
    odd[3] = dataclasses.replace(odd[3], p_purchase=1 / 7, cart_value=0.1 * 3, model_version="m2")
    odd[4] = dataclasses.replace(odd[4], cart_value=float("inf"), offset=2**63 - 1, scored_at=-(2**62))
    state.recent_intents = odd
    back = UserState.from_bytes(state.to_bytes()).recent_intents
    assert back == odd
    for a, b in zip(back, odd):
        assert struct.pack("<ddd", a.p_purchase, a.cart_value, a.latency_ms) == struct.pack(
            "<ddd", b.p_purchase, b.cart_value, b.latency_ms)


def busy_state(n_intents: int = 100) -> UserState:
    """The golden state with as many intents in delivery as a saturated worker's busiest users."""
    state = golden_state()
    state.recent_intents = worker_intents(n_intents)
    return state


def test_a_record_over_the_budget_is_deflated_and_reads_back_the_same():
    state = busy_state()
    plain = bytearray(MAGIC) + bytes((VERSION,))
    _encode_v3(state, plain)
    assert len(plain) > BUDGET_BYTES  # what v3 alone writes for it: ~2.3 KiB
    data = state.to_bytes()
    assert data[:2] == MAGIC and data[2] == DEFLATED_VERSION | DEFLATED and len(data) <= BUDGET_BYTES
    assert UserState.from_bytes(data) == state
    # a state within the budget is written as it is
    small = golden_state().to_bytes()
    assert small[2] == VERSION and len(small) <= BUDGET_BYTES


def test_a_deflated_record_that_does_not_inflate_is_a_clear_error():
    data = busy_state().to_bytes()
    for bad in (data[:-10], data[:40] + bytes(len(data) - 40)):
        with pytest.raises(ValueError, match="does not inflate"):
            UserState.from_bytes(bad)


def test_checked_in_deflated_v3_record_still_loads():
    """Deflated records written now must keep loading (or this test documents the break)."""
    data = (FIXTURES / "user_state_v3_deflated.bin").read_bytes()
    assert data[2] == 3 | DEFLATED
    assert UserState.from_bytes(data) == busy_state()


def test_checked_in_deflated_v4_record_still_loads():
    data = (FIXTURES / "user_state_v4_deflated.bin").read_bytes()
    assert data[2] == 4 | DEFLATED
    assert UserState.from_bytes(data) == busy_state()
    if DEFLATED_VERSION == 4:
        assert busy_state().to_bytes() == data


def shopper_intents(n: int) -> list[RecentIntent]:
    """Intents of a shopper clicking fast: each click adds one to one of the hour's counts."""
    counts = [0] * len(EVENT_TYPES)
    out = []
    for i, intent in enumerate(worker_intents(n)):
        counts[(i * i) % 3] += 1  # mostly views, some searches and cart adds
        out.append(dataclasses.replace(intent, recent_counts=tuple(counts)))
    return out


def test_records_over_the_budget_write_counts_as_changes_which_deflate_smaller_and_read_back_exactly():
    """Over the budget (many intents in delivery), each intent's counts are written as the change from the
    intent before (v4): the record deflates smaller than v3's, with every count read back as it was."""
    state = busy_state(150)
    state.recent_intents = shopper_intents(150)
    data = state.to_bytes()
    assert data[2] == 4 | DEFLATED and UserState.from_bytes(data) == state

    v3 = bytearray(MAGIC) + bytes((3,))  # the same state in v3, as it was written before
    _encode_v3(state, v3)
    assert UserState.from_bytes(bytes(v3)) == state
    assert len(data) < 3 + len(zlib.compress(v3[3:], 6)) - 150  # over a byte an intent smaller

    # rows of different lengths, and counts that fall (clicks leaving the hour), come back too
    odd = shopper_intents(5)
    odd[1] = dataclasses.replace(odd[1], recent_counts=(7,))
    odd[2] = dataclasses.replace(odd[2], recent_counts=(0, 3, 1, 0, 9, 2, 0, 0, 5))
    odd[3] = dataclasses.replace(odd[3], recent_counts=())
    state.recent_intents = odd + shopper_intents(150)  # still over the budget: v4
    data = state.to_bytes()
    assert data[2] == 4 | DEFLATED and UserState.from_bytes(data).recent_intents == state.recent_intents


if __name__ == "__main__" and sys.argv[1:] == ["--write-fixture"]:
    FIXTURES.mkdir(exist_ok=True)
    (FIXTURES / f"user_state_v{VERSION}.bin").write_bytes(golden_state().to_bytes())
    (FIXTURES / f"user_state_v{DEFLATED_VERSION}_deflated.bin").write_bytes(busy_state().to_bytes())
