"""Sessionizer against a reference that recomputes every session from its full list of events."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models.ids import stable_hash
from models.session import RECENT_K, SESSION_GAP_MS, RecentEvent, Session, sessionize, to_float32
from schemas.events import EVENT_TYPES, ClickEvent

BASE_TS = 1_700_000_000_000
USER = "u1"


def reference(events: list[ClickEvent], gap_ms: int, k: int) -> list[dict]:
    """After each event: the expected session, recomputed from scratch from the events it holds."""
    sessions: list[tuple[str, list[ClickEvent]]] = []
    out = []
    for ev in events:
        if not sessions:
            new = True
        elif ev.session_id is not None:
            new = ev.session_id != sessions[-1][0]
        else:
            new = ev.ts - max(e.ts for e in sessions[-1][1]) > gap_ms
        if new:
            sessions.append((ev.session_id or f"{USER}:{ev.ts}", []))
        sid, evs = sessions[-1]
        evs.append(ev)
        cart = 0.0
        for e in evs:
            value = (e.price or 0.0) * (e.quantity if e.quantity is not None else 1)
            if e.type == "add_to_cart":
                cart += value
            elif e.type == "remove_from_cart":
                cart = max(0.0, cart - value)
            elif e.type == "purchase":
                cart = 0.0
        out.append(dict(
            new=new, session_id=sid, start_ms=evs[0].ts, last_ms=max(e.ts for e in evs), n_events=len(evs),
            cart_value=cart, recent=[RecentEvent.from_click(e) for e in evs[-k:]],
            prev_ts=evs[-2].ts if len(evs) > 1 else None,
        ))
    return out


SESSION_IDS = (None, None, None, None, None, "s-a", "s-b", f"{USER}:{BASE_TS}")


def click_from_bits(i: int, ts: int, x: int) -> tuple[ClickEvent, int]:
    """One click from the bits of a random integer (one hypothesis draw per click keeps generation fast)."""
    kind, step = x & 3, (x >> 2) & 0x3FFFFF  # step < 4.2M ms
    ts += (step % 120_000, -(step % 3_600_000), SESSION_GAP_MS - 2 + step % 5, step + SESSION_GAP_MS)[kind]
    cents = (x >> 36) & 0x1FFFF
    price_kind = (x >> 33) & 7
    price = None if price_kind < 2 else (cents / 100 if price_kind < 6 else cents / 7)
    q = (x >> 53) & 7
    ev = ClickEvent(
        event_id=f"e{i}", user_id=USER, ts=ts, type=EVENT_TYPES[(x >> 24) & 7],
        session_id=SESSION_IDS[(x >> 27) & 7],
        item_id=(None, "i1", "i2", "i3")[(x >> 30) & 3],
        category_id=(None, "c1")[(x >> 32) & 1],
        price=price,
        quantity=None if q < 2 else q - 2,
    )
    return ev, ts


@st.composite
def click_streams(draw, max_size=80):
    ts = BASE_TS
    events = []
    for i, x in enumerate(draw(st.lists(st.integers(0, 2**63 - 1), max_size=max_size))):
        ev, ts = click_from_bits(i, ts, x)
        events.append(ev)
    return events


@settings(max_examples=300, deadline=None)
@given(click_streams(), st.sampled_from([SESSION_GAP_MS, 60_000]), st.sampled_from([RECENT_K, 1, 5]))
def test_matches_reference(events, gap_ms, k):
    expected = reference(events, gap_ms, k)
    session = None
    for ev, exp in zip(events, expected):
        recent = RecentEvent.from_click(ev)
        session, new, prev_ts = sessionize(session, USER, ev, recent, gap_ms, k)
        assert new == exp["new"] and prev_ts == exp["prev_ts"]
        got = dict(session_id=session.session_id, start_ms=session.start_ms, last_ms=session.last_ms,
                   n_events=session.n_events, cart_value=session.cart_value, recent=session.recent)
        assert got == {key: exp[key] for key in got}
        assert len(session.recent) <= k


def test_recent_event_from_click():
    ev = ClickEvent("e", USER, BASE_TS, "add_to_cart", item_id="sku-9", category_id="shoes", price=19.99, quantity=2)
    r = RecentEvent.from_click(ev)
    assert (r.ts_ms, r.type_index, r.quantity) == (BASE_TS, EVENT_TYPES.index("add_to_cart"), 2)
    assert r.item_hash == stable_hash("sku-9") != 0 and r.category_hash == stable_hash("shoes")
    assert r.price == float(np.float32(19.99)) and r.price != 19.99  # float32-rounded, stable under encoding
    bare = RecentEvent.from_click(ClickEvent("e", USER, BASE_TS, "page_view"))
    assert (bare.item_hash, bare.category_hash, bare.price, bare.quantity) == (0, 0, 0.0, 1)
    assert to_float32(0.1) == float(np.float32(0.1))


def test_gap_boundary_and_late_events():
    def click(ts, type_="page_view", sid=None):
        return ClickEvent(f"e{ts}", USER, ts, type_, session_id=sid)

    s, new, _ = sessionize(None, USER, click(BASE_TS), RecentEvent.from_click(click(BASE_TS)))
    assert new and s.session_id == f"{USER}:{BASE_TS}"
    for ts, expect_new in [(BASE_TS + SESSION_GAP_MS, False), (BASE_TS - 10 * SESSION_GAP_MS, False),
                           (BASE_TS + 2 * SESSION_GAP_MS + 1, True)]:
        s, new, _ = sessionize(s, USER, click(ts), RecentEvent.from_click(click(ts)))
        assert new == expect_new
    assert s.start_ms == BASE_TS + 2 * SESSION_GAP_MS + 1
    # an explicit id keeps the session across any gap, and a different one cuts it at once
    e1 = click(BASE_TS + 10**9, sid="X")
    s, new, _ = sessionize(s, USER, e1, RecentEvent.from_click(e1))
    e2 = click(BASE_TS + 2 * 10**9, sid="X")
    s2, new2, prev = sessionize(s, USER, e2, RecentEvent.from_click(e2))
    assert new and not new2 and s2 is s and prev == e1.ts and s.session_id == "X"


def test_session_equality_includes_hidden_bits():
    a = Session("s", 1, 2, 1, 0.0, hidden=np.zeros(4, np.float32))
    b = Session("s", 1, 2, 1, 0.0, hidden=np.zeros(4, np.float32))
    assert a == b
    b.hidden[2] = np.float32(1e-30)
    assert a != b
    assert a != Session("s", 1, 2, 1, 0.0)
