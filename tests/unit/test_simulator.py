"""Simulator: determinism, plausible event streams, and a Bayes-optimal score that is really calibrated."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

import math

from models.simulator import (
    DEVICES,
    END,
    EVENT_TYPE_INDEX,
    CLASS_PRIOR,
    INTENT_PRIOR,
    INTENTS,
    PURCHASE,
    SimConfig,
    Simulator,
    absorption_probabilities,
    build_intent_model,
    simulate,
    state_index,
)
from schemas.events import EVENT_TYPES

GAP_MS = 30 * 60 * 1000


@pytest.fixture(scope="module")
def run():
    """~7k sessions: enough for calibration bins with a few hundred positives, a few seconds to build."""
    sim = Simulator(SimConfig(n_users=1500, n_days=14, seed=5))
    pairs = list(sim.events())
    sessions: dict[str, list] = defaultdict(list)
    for ev, p in pairs:
        sessions[ev.session_id].append((ev, p))
    return sim, pairs, sessions


def _prefix_rows(sim, sessions):
    """One row per pre-purchase prefix: (session number, p_optimal, naive score, label, device, type)."""
    rows = []
    for k, evs in enumerate(sessions.values()):
        types = [ev.type for ev, _ in evs]
        label = "purchase" in types
        cut = types.index("purchase") if label else len(types)
        cart = 0
        for ev, p in evs[:cut]:
            cart += (ev.type == "add_to_cart") - (ev.type == "remove_from_cart")
            s = state_index(EVENT_TYPE_INDEX[ev.type], cart)
            naive = float(np.dot(INTENT_PRIOR, sim.model.absorb[:, s]))  # ignores what the prefix says about z
            rows.append((k, p, naive, int(label), ev.device, ev.type))
    return rows


def _calibration_z(score, label, cluster, n_bins=10):
    """Per equal-mass bin of the score, sum(label - score) divided by its standard deviation if the score
    were calibrated. The prefixes of one session share a label, so each session counts as one draw:
    with n prefixes in the bin and mean score m, its sum varies like n * (Bernoulli(m) - m)."""
    order = np.argsort(score, kind="stable")
    out = []
    for idx in np.array_split(order, n_bins):
        resid = label[idx] - score[idx]
        n = np.bincount(cluster[idx])
        m = np.bincount(cluster[idx], weights=score[idx])[n > 0] / n[n > 0]
        var = np.sum(n[n > 0] ** 2 * m * (1.0 - m))
        out.append(resid.sum() / max(np.sqrt(var), 1e-12))
    return np.array(out)


def test_deterministic_for_a_seed():
    cfg = SimConfig(n_users=60, n_days=5, seed=11)
    a = list(simulate(cfg))
    b = list(simulate(cfg))
    assert a and a == b
    c = list(simulate(SimConfig(n_users=60, n_days=5, seed=12)))
    assert c != a


def test_events_are_time_ordered_and_well_formed(run):
    _, pairs, sessions = run
    ts = [ev.ts for ev, _ in pairs]
    assert ts == sorted(ts)
    assert len({ev.event_id for ev, _ in pairs}) == len(pairs)
    seen_types = set()
    for evs in sessions.values():
        cart = 0
        purchases = 0
        for ev, _ in evs:
            seen_types.add(ev.type)
            assert ev.type in EVENT_TYPES
            assert ev.device is not None
            if ev.type == "search":
                assert ev.query
            if ev.type in ("product_view", "add_to_cart", "remove_from_cart", "add_to_wishlist"):
                assert ev.item_id and ev.category_id and ev.price > 0
            if ev.type == "add_to_cart":
                assert ev.quantity >= 1
                cart += 1
            if ev.type == "remove_from_cart":
                assert cart > 0, "removed from an empty cart"
                cart -= 1
            if ev.type == "begin_checkout":
                assert cart > 0, "checkout with an empty cart"
            if ev.type == "purchase":
                purchases += 1
                assert ev.price > 0
        assert purchases <= 1
    assert seen_types == set(EVENT_TYPES)


def test_thirty_minute_sessionization_recovers_session_ids(run):
    _, pairs, _ = run
    by_user: dict[str, list] = defaultdict(list)
    for ev, _ in pairs:
        by_user[ev.user_id].append(ev)
    returning_users = 0
    for evs in by_user.values():
        returning_users += len({ev.session_id for ev in evs}) > 1
        for prev, cur in zip(evs, evs[1:]):
            gap = cur.ts - prev.ts
            if cur.session_id == prev.session_id:
                assert 0 < gap < GAP_MS
            else:
                assert gap > GAP_MS
    assert returning_users > len(by_user) // 2  # users come back over the days


def test_probabilities_are_zero_at_and_after_the_purchase(run):
    _, _, sessions = run
    n_buyers = 0
    for evs in sessions.values():
        types = [ev.type for ev, _ in evs]
        ps = [p for _, p in evs]
        assert all(0.0 <= p <= 1.0 for p in ps)
        if "purchase" in types:
            n_buyers += 1
            cut = types.index("purchase")
            assert all(p > 0.0 for p in ps[:cut])
            assert all(p == 0.0 for p in ps[cut:])
    rate = n_buyers / len(sessions)
    assert 0.01 < rate < 0.15, f"purchase rate per session {rate:.3f} is not 'a few percent'"


def test_optimal_score_is_calibrated_and_a_naive_one_is_not(run):
    sim, _, sessions = run
    rows = _prefix_rows(sim, sessions)
    cluster = np.array([r[0] for r in rows])
    p = np.array([r[1] for r in rows])
    naive = np.array([r[2] for r in rows])
    y = np.array([r[3] for r in rows], dtype=float)
    assert y.sum() > 300
    z_opt = _calibration_z(p, y, cluster)
    assert np.all(np.abs(z_opt) < 4.0), z_opt
    assert abs(_calibration_z(p, y, cluster, n_bins=1)[0]) < 4.0
    # The same check has the power to reject a posterior that ignores the evidence in the prefix.
    assert np.max(np.abs(_calibration_z(naive, y, cluster))) > 6.0


def test_optimal_score_is_calibrated_within_groups(run):
    """A true posterior is calibrated inside any group defined by the prefix (device, last event type)."""
    sim, _, sessions = run
    rows = _prefix_rows(sim, sessions)
    for col in (4, 5):
        for value in sorted({r[col] for r in rows}):
            sel = [r for r in rows if r[col] == value]
            y = np.array([r[3] for r in sel], dtype=float)
            if y.sum() < 30:
                continue
            z = _calibration_z(np.array([r[1] for r in sel]), y, np.array([r[0] for r in sel]), n_bins=3)
            assert np.all(np.abs(z) < 4.0), (value, z)


def test_absorption_probabilities_match_monte_carlo():
    model = build_intent_model()
    rng = np.random.default_rng(0)
    z = INTENTS.index("cart_abandoner")
    start = state_index(EVENT_TYPE_INDEX["add_to_cart"], 1)
    n, hits = 20_000, 0
    for _ in range(n):
        s = start
        while True:
            o = rng.choice(END + 1, p=model.trans[z, s])
            if o in (END, PURCHASE):
                hits += o == PURCHASE
                break
            c = s % 4 + (o == EVENT_TYPE_INDEX["add_to_cart"]) - (o == EVENT_TYPE_INDEX["remove_from_cart"])
            s = state_index(o, c)
    h = model.absorb[z, start]
    se = np.sqrt(h * (1 - h) / n)
    assert abs(hits / n - h) < 4 * se + 1e-4
    assert np.allclose(absorption_probabilities(model.trans[z]), model.absorb[z])


def test_intent_signal_and_knobs():
    model = build_intent_model()
    checkout = state_index(EVENT_TYPE_INDEX["begin_checkout"], 1)
    browse = state_index(EVENT_TYPE_INDEX["page_view"], 0)
    assert np.all(model.absorb[:, checkout] > model.absorb[:, browse])
    decided, browser = INTENTS.index("decided_buyer"), INTENTS.index("browser")
    assert model.absorb[decided, browse] > 10 * model.absorb[browser, browse]
    # With no user or device effect the stream is still produced and scored.
    pairs = list(simulate(SimConfig(n_users=40, n_days=3, seed=3, user_effect=0.0, device_effect=0.0)))
    assert pairs and all(0.0 <= p <= 1.0 for _, p in pairs)


def test_score_recomputed_from_observable_events_only():
    """An independent, scalar re-implementation of the posterior that sees only the emitted events (not the
    simulator's hidden draws) gives the same numbers, including what a user's earlier sessions say
    about their propensity class."""
    sim = Simulator(SimConfig(n_users=150, n_days=10, seed=9))
    m, cat = sim.model, sim.catalog
    sessions: dict[str, list] = defaultdict(list)
    for ev, p in sim.events():
        sessions[ev.session_id].append((ev, p))
    class_post: dict[str, np.ndarray] = {}  # user -> P(class | finished sessions)
    checked = 0
    for evs in sessions.values():  # sessions of a user appear in time order (dict keeps first-seen order)
        user = evs[0][0].user_id
        first = user not in class_post
        w_class = class_post.get(user, np.array(CLASS_PRIOR))
        pz_k = sim.prior[:, int(first)]  # (K, Z)
        prior = w_class @ pz_k
        loglik = np.zeros(len(INTENTS))
        state, cart, have_item, prev_ts = None, 0, False, None
        for ev, p in evs:
            t = EVENT_TYPE_INDEX[ev.type]
            for z in range(len(INTENTS)):
                if state is None:
                    loglik[z] += m.log_initial[z, t] + m.log_device[z, DEVICES.index(ev.device)]
                else:
                    x = math.log((ev.ts - prev_ts) / 1000.0)
                    mu, sig = m.gap_mu[z, t], m.gap_sigma[z]
                    lognorm = math.log(0.5 * math.erfc(-(m.log_max_gap - mu) / sig / math.sqrt(2)))
                    loglik[z] += m.log_trans[z, state, t] - 0.5 * ((x - mu) / sig) ** 2 - math.log(sig) - lognorm
                fresh = ev.type == "product_view" or (ev.type in ("add_to_cart", "add_to_wishlist") and not have_item)
                if fresh:
                    item, c = int(ev.item_id[1:]), int(ev.category_id[1:])
                    loglik[z] += -m.beta[z] * cat.rel_log_price[item] - cat.log_norm[z, c]
            have_item |= ev.type in ("product_view", "add_to_cart", "add_to_wishlist")
            cart += (ev.type == "add_to_cart") - (ev.type == "remove_from_cart")
            prev_ts = ev.ts
            if ev.type == "purchase":
                assert p == 0.0
                break
            state = state_index(t, cart)
            with np.errstate(divide="ignore"):
                w = np.exp(loglik - loglik.max()) * prior
            expected = float(np.dot(w / w.sum(), m.absorb[:, state]))
            assert p == pytest.approx(expected, rel=1e-9, abs=1e-12)
            checked += 1
        else:
            loglik += m.log_trans[:, state, END]  # the session ended without a purchase
        lik_k = pz_k @ np.exp(loglik - loglik.max())
        class_post[user] = w_class * lik_k / np.dot(w_class, lik_k)
    assert checked > 1000
    moved = max(float(np.abs(v - np.array(CLASS_PRIOR)).max()) for v in class_post.values())
    assert moved > 0.2  # histories do move the class belief


def test_simulate_command_writes_decodable_jsonl_with_scores(tmp_path, capsys):
    import argparse

    import orjson

    from models import data_cli
    from models.loaders import load

    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers())
    out = tmp_path / "sim.jsonl"
    args = parser.parse_args(["simulate", "--users", "30", "--days", "3", "--seed", "4", "--out", str(out), "--stats"])
    assert args.func(args) == 0
    expected = list(simulate(SimConfig(n_users=30, n_days=3, seed=4)))
    res = load(out, "jsonl")
    assert res.bad_rows == 0 and res.events == [ev for ev, _ in expected]
    scores = [orjson.loads(line)["_p_optimal"] for line in out.read_bytes().splitlines()]
    assert scores == [p for _, p in expected]
    assert "optimal ROC AUC" in capsys.readouterr().out
