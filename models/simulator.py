"""Clickstream simulator with latent shopper intent and an exactly computable Bayes-optimal score.

Generative model (details and figures in docs/simulator.md):

- A catalog of categories (log-normal price levels, Zipf popularity) and items (price around the
  category level, Zipf popularity inside the category).
- Users with hidden traits: a return rate (sessions per day), a budget (which categories they shop),
  a small set of favourite categories, and a propensity class u in {low, mid, high}.
- Each session draws a latent intent z ~ pi(z | u, first session?). Given z the session is a Markov chain
  over observable states (last event type, number of cart lines 0..3) with absorbing `end` and
  `purchase`; z also sets the time gaps (truncated log-normal), the price sensitivity of item choice
  and the device. Everything else (categories, queries, quantities, which cart line is removed, the
  events after a purchase, when sessions start) does not depend on z or u, so it cancels out of the
  posterior.

Because every z-dependent factor has a closed-form likelihood, the simulator emits with each event
    p = P(purchase later in this session | this session so far, the user's earlier sessions)
      = sum_z P(z | ...) * h_z(state)
where h_z(state) = P(chain reaches purchase before end | z, state) solves a 28-state linear system and
P(z | ...) mixes over the user's class posterior, updated after each finished session. Sessions hold
at most one purchase, so "purchase later" is exactly the training label of prefixes cut at the first
purchase; p is 0 on the purchase and on the few browsing events after it.
"""
from __future__ import annotations

import heapq
import logging
import math
import random
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import accumulate

import numpy as np

from schemas.events import EVENT_TYPE_INDEX, EVENT_TYPES, ClickEvent

log = logging.getLogger(__name__)

INTENTS: tuple[str, ...] = (
    "browser",
    "researcher",
    "deal_hunter",
    "decided_buyer",
    "cart_abandoner",
    "returning_customer",
)
RETURNING = INTENTS.index("returning_customer")
DEVICES: tuple[str, ...] = ("desktop", "mobile", "tablet", "app")
USER_CLASSES: tuple[str, ...] = ("low", "mid", "high")

PV, PRV, SEARCH, ATC, RFC, WISH, CHECKOUT, PURCHASE = (EVENT_TYPE_INDEX[t] for t in EVENT_TYPES)
END = len(EVENT_TYPES)  # outcome index 8: the session ends
N_OUTCOMES = END + 1
N_TRANSIENT_TYPES = PURCHASE  # types 0..6 can be followed by something; purchase is absorbing
MAX_CART_LINES = 3
N_STATES = N_TRANSIENT_TYPES * (MAX_CART_LINES + 1)  # 28 transient states


def state_index(type_index: int, cart_lines: int) -> int:
    """Transient chain state after an event of `type_index` with `cart_lines` lines in the cart."""
    return type_index * (MAX_CART_LINES + 1) + cart_lines


# ---------------------------------------------------------------------------------- model parameters
# Hand-set so that sessions look plausible and purchases are a few percent of sessions; the only hard
# requirement for exactness is that every "end" weight is > 0 (the chain is absorbing).

# Population prior over intents, and per-class multipliers (raised to config.user_effect).
INTENT_PRIOR = (0.44, 0.19, 0.13, 0.045, 0.12, 0.075)
CLASS_PRIOR = (0.45, 0.40, 0.15)
CLASS_MULTIPLIER = (
    (1.25, 1.0, 1.0, 0.35, 1.0, 0.45),  # low
    (1.0, 1.0, 1.0, 1.0, 1.0, 1.0),  # mid
    (0.7, 1.0, 1.1, 2.6, 1.2, 2.2),  # high
)

# First event of a session: P(type | z) over (page_view, product_view, search).
INITIAL = (
    (0.60, 0.30, 0.10),
    (0.20, 0.30, 0.50),
    (0.30, 0.20, 0.50),
    (0.05, 0.35, 0.60),
    (0.35, 0.35, 0.30),
    (0.20, 0.60, 0.20),
)

# Per-intent weight of each outcome (PV, PRV, SEARCH, ATC, RFC, WISH, CHECKOUT, PURCHASE, END) ...
INTENT_WEIGHTS = (
    (1.00, 1.00, 0.30, 0.05, 0.30, 0.05, 0.05, 0.20, 0.55),  # browser
    (0.40, 2.00, 0.80, 0.12, 0.30, 0.35, 0.10, 0.35, 0.30),  # researcher
    (0.50, 1.50, 1.00, 0.30, 0.50, 0.15, 0.30, 0.50, 0.35),  # deal_hunter
    (0.20, 1.00, 0.30, 1.00, 0.10, 0.05, 1.00, 3.00, 0.15),  # decided_buyer
    (0.50, 1.20, 0.50, 0.70, 0.60, 0.20, 0.70, 0.10, 0.35),  # cart_abandoner
    (0.30, 1.20, 0.30, 0.60, 0.20, 0.10, 0.60, 1.20, 0.30),  # returning_customer
)
# ... times a shared affinity of the outcome to the previous event type (rows: previous type 0..6).
AFFINITY = (
    (1.0, 1.5, 1.0, 0.2, 0.5, 0.2, 0.8, 0.0, 1.0),  # page_view
    (0.6, 1.5, 0.6, 1.0, 0.5, 1.0, 0.6, 0.0, 1.0),  # product_view
    (0.3, 3.0, 0.8, 0.3, 0.1, 0.1, 0.2, 0.0, 1.0),  # search
    (0.6, 1.2, 0.6, 0.4, 0.6, 0.2, 2.0, 0.0, 1.0),  # add_to_cart
    (0.6, 1.0, 0.5, 0.5, 0.5, 0.2, 1.0, 0.0, 1.2),  # remove_from_cart
    (0.6, 1.5, 0.6, 0.6, 0.2, 0.3, 0.4, 0.0, 1.0),  # add_to_wishlist
    (0.3, 0.4, 0.1, 0.2, 0.6, 0.05, 0.2, 1.0, 1.0),  # begin_checkout (the only way to purchase)
)

# Gap before an event, in seconds: log-normal with location GAP_MU[z] + GAP_TYPE_SHIFT[type], scale
# GAP_SIGMA[z], truncated below SimConfig.max_gap_s so sessions never hold a 30-minute silence.
GAP_MU = (2.6, 3.8, 3.2, 2.9, 3.3, 3.0)
GAP_SIGMA = (0.9, 1.0, 0.9, 0.7, 1.0, 0.8)
GAP_TYPE_SHIFT = (0.0, 0.3, 0.0, 0.0, -0.3, -0.3, 0.3, 0.8)

# Price sensitivity: an item is chosen inside its category with weight popularity * exp(-beta * r),
# r = log(price / category median price).
PRICE_BETA = (0.0, -0.3, 1.8, 0.2, 0.6, 0.0)

DEVICE_PROBS = (
    (0.25, 0.60, 0.10, 0.05),
    (0.55, 0.30, 0.10, 0.05),
    (0.35, 0.45, 0.05, 0.15),
    (0.40, 0.30, 0.05, 0.25),
    (0.30, 0.55, 0.10, 0.05),
    (0.30, 0.30, 0.05, 0.35),
)

# z-independent parts of the process.
STAY_IN_CATEGORY = 0.7  # a product view stays in the current category
SEARCH_NEW_CATEGORY = 0.6
QUANTITY_CUM = (0.85, 0.95, 1.0)  # quantity 1, 2, 3
POST_PURCHASE_CUM = (0.5, 0.8, 1.0)  # 0, 1 or 2 browsing events after a purchase
HOUR_WEIGHTS = (2, 1, 1, 1, 1, 1, 2, 3, 4, 5, 6, 6, 7, 7, 6, 6, 6, 6, 7, 8, 9, 9, 7, 4)

_NOUNS = (
    "shoes", "jacket", "headphones", "laptop", "phone case", "coffee maker", "sofa", "lamp", "backpack",
    "watch", "camera", "blender", "desk", "chair", "t-shirt", "jeans", "dress", "sneakers", "monitor",
    "keyboard", "mouse", "tent", "bicycle", "helmet", "perfume", "shampoo", "vacuum", "kettle", "toaster",
    "rug", "pillow", "blanket", "towel", "sunglasses", "wallet", "belt", "scarf", "gloves", "boots",
    "speaker", "tablet", "charger", "printer", "router", "drill", "paint", "plant pot", "cookware",
    "knife set", "yoga mat", "dumbbells", "toy car", "puzzle", "board game", "novel", "notebook", "pen",
    "guitar", "vinyl", "stroller",
)
_ADJECTIVES = ("", "", "", "cheap", "best", "wireless", "black", "large", "kids", "premium", "sale", "new")


@dataclass(frozen=True)
class SimConfig:
    n_users: int = 10_000
    n_days: int = 14
    seed: int = 0
    start_ms: int = 1_704_067_200_000  # 2024-01-01T00:00:00Z
    n_categories: int = 60
    n_items: int = 5_000
    sessions_per_day: float = 0.25  # median user return rate (log-normal across users)
    user_effect: float = 1.0  # 0: intents independent of the user (population prior for everyone)
    device_effect: float = 1.0  # 0: device independent of the intent (uniform over DEVICES)
    max_gap_s: float = 29 * 60.0  # within-session gaps stay below the 30-min sessionization gap
    min_session_gap_s: float = 31 * 60.0  # silence between two sessions of one user


# ---------------------------------------------------------------------------------------- the model


@dataclass
class IntentModel:
    """Everything z-dependent, in array form (Z = number of intents, S = N_STATES)."""

    trans: np.ndarray  # (Z, S, N_OUTCOMES) transition probabilities
    log_trans: np.ndarray
    log_initial: np.ndarray  # (Z, N_EVENT_TYPES) first-event type
    absorb: np.ndarray  # (Z, S) h_z(s) = P(purchase before end | z, s)
    log_device: np.ndarray  # (Z, len(DEVICES))
    gap_mu: np.ndarray  # (Z, N_EVENT_TYPES) location of log gap (seconds) before an event of a type
    gap_sigma: np.ndarray  # (Z,)
    gap_log_norm_sigma: np.ndarray  # (Z, N_EVENT_TYPES) log sigma + log P(gap < max_gap) (untruncated)
    beta: np.ndarray  # (Z,)
    log_max_gap: float
    cum_trans: list[list[list[float]]] = field(repr=False)  # (Z, S) cumulative rows for sampling


def build_intent_model(config: SimConfig = SimConfig()) -> IntentModel:
    n_z = len(INTENTS)
    trans = np.zeros((n_z, N_STATES, N_OUTCOMES))
    for z in range(n_z):
        for t in range(N_TRANSIENT_TYPES):
            for c in range(MAX_CART_LINES + 1):
                w = np.array(INTENT_WEIGHTS[z]) * np.array(AFFINITY[t])
                if c == 0:  # nothing to remove or pay for
                    w[RFC] = w[CHECKOUT] = w[PURCHASE] = 0.0
                if c == MAX_CART_LINES:
                    w[ATC] = 0.0
                trans[z, state_index(t, c)] = w / w.sum()
    absorb = np.zeros((n_z, N_STATES))
    for z in range(n_z):
        absorb[z] = absorption_probabilities(trans[z])
    initial = np.zeros((n_z, len(EVENT_TYPES)))
    initial[:, [PV, PRV, SEARCH]] = INITIAL
    gap_mu = np.array(GAP_MU)[:, None] + np.array(GAP_TYPE_SHIFT)[None, :]
    gap_sigma = np.array(GAP_SIGMA)
    log_max_gap = math.log(config.max_gap_s)
    gap_log_norm = np.vectorize(_log_ndtr)((log_max_gap - gap_mu) / gap_sigma[:, None])
    gap_log_norm_sigma = gap_log_norm + np.log(gap_sigma)[:, None]
    with np.errstate(divide="ignore"):
        log_trans = np.log(trans)
        log_initial = np.log(initial)
    cum = [[_cumulative(trans[z, s]) for s in range(N_STATES)] for z in range(n_z)]
    return IntentModel(
        trans=trans, log_trans=log_trans, log_initial=log_initial, absorb=absorb,
        log_device=np.log(device_probs(config)), gap_mu=gap_mu, gap_sigma=gap_sigma,
        gap_log_norm_sigma=gap_log_norm_sigma, beta=np.array(PRICE_BETA), log_max_gap=log_max_gap, cum_trans=cum,
    )


def device_probs(config: SimConfig) -> np.ndarray:
    """(Z, len(DEVICES)) P(device | z), blended toward uniform by 1 - config.device_effect."""
    e = config.device_effect
    return (1.0 - e) / len(DEVICES) + e * np.array(DEVICE_PROBS)


def absorption_probabilities(trans: np.ndarray) -> np.ndarray:
    """h(s) = P(reach purchase before end | s) for one intent: solve (I - Q) h = r.

    Q[s, s'] moves between transient states (the cart count follows add/remove), r[s] = P(s -> purchase).
    """
    q = np.zeros((N_STATES, N_STATES))
    for s in range(N_STATES):
        c = s % (MAX_CART_LINES + 1)
        for o in range(N_TRANSIENT_TYPES):
            p = trans[s, o]
            if p == 0.0:
                continue
            c2 = c + 1 if o == ATC else c - 1 if o == RFC else c
            q[s, state_index(o, c2)] += p
    return np.linalg.solve(np.eye(N_STATES) - q, trans[:, PURCHASE])


def _cumulative(p) -> list[float]:
    """Cumulative sums for bisect sampling, with the tail pinned to 1.0 so that rounding can never
    select an outcome of probability 0 (random() < 1 always lands at or before the last positive one)."""
    p = [float(v) for v in p]
    cum = list(accumulate(p))
    last = max(i for i, v in enumerate(p) if v > 0)
    for j in range(last, len(cum)):
        cum[j] = 1.0
    return cum


def _log_ndtr(x: float) -> float:
    """log Phi(x), accurate in the tails we use (x > -30)."""
    return math.log(0.5 * math.erfc(-x / math.sqrt(2.0)))


def intent_prior(config: SimConfig) -> np.ndarray:
    """(K, 2, Z) pi(z | class k, first session?); returning customers never appear on a first visit."""
    base = np.array(INTENT_PRIOR)
    mult = np.array(CLASS_MULTIPLIER) ** config.user_effect
    prior = base[None, :] * mult
    out = np.zeros((len(USER_CLASSES), 2, len(INTENTS)))
    for first in (0, 1):
        p = prior.copy()
        if first:
            p[:, RETURNING] = 0.0
        out[:, first] = p / p.sum(axis=1, keepdims=True)
    return out


# ---------------------------------------------------------------------------------------- catalog


@dataclass
class Catalog:
    names: list[str]  # per category
    cat_pop: np.ndarray  # (C,) category popularity (sums to 1)
    log_median: np.ndarray  # (C,) log median price per category
    items: list[list[int]]  # per category: global item indices
    price: np.ndarray  # (I,) item price
    rel_log_price: np.ndarray  # (I,) log(price / category median)
    cum_item: list[list[list[float]]]  # (Z, C) cumulative item weights for sampling
    log_norm: np.ndarray  # (Z, C) log sum of item weights (popularity * exp(-beta r))
    log_pop: np.ndarray  # (I,) log popularity within its category (z-independent, not needed for p)


def build_catalog(config: SimConfig, rng: np.random.Generator) -> Catalog:
    n_c = config.n_categories
    names = [_NOUNS[i % len(_NOUNS)] + ("" if i < len(_NOUNS) else f" {i // len(_NOUNS) + 1}") for i in range(n_c)]
    cat_pop = 1.0 / np.arange(1, n_c + 1) ** 0.9
    cat_pop = rng.permutation(cat_pop / cat_pop.sum())
    log_median = rng.normal(3.4, 1.0, n_c)  # median ~ $30, spread over two orders of magnitude
    sizes = np.maximum(5, np.round(config.n_items * rng.dirichlet(np.full(n_c, 2.0)))).astype(int)
    items: list[list[int]] = []
    prices, rel, log_pop = [], [], []
    for c in range(n_c):
        start = len(prices)
        r = rng.normal(0.0, 0.5, sizes[c])
        p = np.round(np.exp(log_median[c] + r), 0) - 0.01  # shop prices end in .99
        p = np.round(np.maximum(p, 0.99), 2)
        pop = rng.permutation(1.0 / np.arange(1, sizes[c] + 1) ** 1.1)
        prices.extend(p)
        rel.extend(np.log(p) - log_median[c])  # r from the shown price, so the posterior can recompute it
        log_pop.extend(np.log(pop / pop.sum()))
        items.append(list(range(start, len(prices))))
    price = np.array(prices)
    rel_log_price = np.array(rel)
    log_pop_arr = np.array(log_pop)
    betas = np.array(PRICE_BETA)
    log_norm = np.zeros((len(INTENTS), n_c))
    cum_item: list[list[list[float]]] = []
    for z in range(len(INTENTS)):
        rows = []
        for c in range(n_c):
            idx = items[c]
            w = np.exp(log_pop_arr[idx] - betas[z] * rel_log_price[idx])
            log_norm[z, c] = math.log(w.sum())
            rows.append(_cumulative(w / w.sum()))
        cum_item.append(rows)
    return Catalog(names, cat_pop, log_median, items, price, rel_log_price, cum_item, log_norm, log_pop_arr)


# ---------------------------------------------------------------------------------------- users


@dataclass
class _User:
    index: int
    user_class: int  # hidden propensity class
    cat_ids: list[int]  # favourite categories
    cat_cum: list[float]
    starts: list[int]  # planned session starts (ms), sorted
    n_done: int = 0
    last_ms: int = 0
    class_post: np.ndarray | None = None  # the observer's P(class | finished sessions)


def _build_users(config: SimConfig, catalog: Catalog, rng: np.random.Generator) -> list[_User]:
    n = config.n_users
    rate = config.sessions_per_day * np.exp(rng.normal(0.0, 0.8, n))  # loyalty: sessions per day
    budget = rng.normal(3.4, 0.8, n)  # log price level the user is comfortable with
    classes = rng.choice(len(USER_CLASSES), size=n, p=CLASS_PRIOR)
    n_sessions = rng.poisson(rate * config.n_days)
    hour_p = np.array(HOUR_WEIGHTS, dtype=float) / sum(HOUR_WEIGHTS)
    day_ms, hour_ms = 86_400_000, 3_600_000
    users = []
    for i in range(n):
        # Category taste: popular categories near the user's budget, 3..8 favourites.
        affinity = catalog.cat_pop * np.exp(-((catalog.log_median - budget[i]) ** 2) / 2.0)
        k = int(rng.integers(3, 9))
        fav = rng.choice(len(affinity), size=k, replace=False, p=affinity / affinity.sum())
        w = rng.dirichlet(np.ones(k))
        m = int(n_sessions[i])
        days = rng.integers(0, config.n_days, m)
        hours = rng.choice(24, size=m, p=hour_p)
        offs = rng.integers(0, hour_ms, m)
        starts = sorted((config.start_ms + days * day_ms + hours * hour_ms + offs).tolist())
        users.append(_User(i, int(classes[i]), fav.tolist(), _cumulative(w), starts))
    return users


# ---------------------------------------------------------------------------------------- simulation


class Simulator:
    """Generates the event stream; `events()` yields (ClickEvent, p_optimal) in time order."""

    def __init__(self, config: SimConfig):
        self.config = config
        np_rng = np.random.default_rng(config.seed)
        self.rng = random.Random(config.seed)
        self.model = build_intent_model(config)
        self.catalog = build_catalog(config, np_rng)
        self.users = _build_users(config, self.catalog, np_rng)
        self.prior = intent_prior(config)  # (K, 2, Z)
        self.n_sessions = sum(len(u.starts) for u in self.users)
        self._cum_initial = [_cumulative(r) for r in np.exp(self.model.log_initial)]
        self._cum_device = [_cumulative(r) for r in np.exp(self.model.log_device)]
        self._true_prior_cum = [[_cumulative(self.prior[k, f]) for f in (0, 1)]
                                for k in range(len(USER_CLASSES))]
        self._item_cat = [0] * len(self.catalog.price)
        for c, idx in enumerate(self.catalog.items):
            for i in idx:
                self._item_cat[i] = c

    def events(self) -> Iterator[tuple[ClickEvent, float]]:
        pending: list[tuple[int, int, ClickEvent, float]] = []  # (ts, seq, event, p)
        users_heap = [(u.starts[0], u.index) for u in self.users if u.starts]
        heapq.heapify(users_heap)
        seq = 0
        while users_heap:
            start, ui = heapq.heappop(users_heap)
            # Nothing generated later can be earlier than `start`, so older events are final.
            while pending and pending[0][0] < start:
                _, _, ev, p = heapq.heappop(pending)
                yield ev, p
            user = self.users[ui]
            for ev, p in self._session(user, start):
                heapq.heappush(pending, (ev.ts, seq, ev, p))
                seq += 1
            user.n_done += 1
            if user.n_done < len(user.starts):
                nxt = max(user.starts[user.n_done], user.last_ms + int(self.config.min_session_gap_s * 1000))
                heapq.heappush(users_heap, (nxt, ui))
        while pending:
            _, _, ev, p = heapq.heappop(pending)
            yield ev, p

    # -- one session -------------------------------------------------------------------------------

    def _session(self, user: _User, start: int) -> list[tuple[ClickEvent, float]]:
        rng, model, cat = self.rng, self.model, self.catalog
        first = 1 if user.n_done == 0 else 0
        z = bisect_right(self._true_prior_cum[user.user_class][first], rng.random())
        device = bisect_right(self._cum_device[z], rng.random())
        uid = f"u{user.index}"
        sid = f"{uid}-s{user.n_done}"
        prefix = f"sim{self.config.seed}-{uid}-{user.n_done}-"

        # Observed quantities the posterior needs, one entry per event up to and including a purchase.
        types: list[int] = []
        prev_states: list[int] = []  # state before the event (-1 for the first)
        log_gaps: list[float] = []  # log seconds (0 for the first)
        draw_cat: list[int] = []  # category of a fresh item draw, -1 if the item was not drawn
        draw_rel: list[float] = []
        states: list[int] = []  # state after the event

        events: list[ClickEvent] = []
        ts = start
        cur_cat: int | None = None
        last_item: int | None = None
        cart: list[tuple[int, float, int]] = []  # (item, price, quantity)
        s = -1
        while True:
            if s < 0:
                o = bisect_right(self._cum_initial[z], rng.random())
            else:
                o = bisect_right(model.cum_trans[z][s], rng.random())
            if o == END:
                break
            lg = 0.0
            if s >= 0:
                lg = self._gap(model.gap_mu[z, o], model.gap_sigma[z])
                ts += max(1, round(math.exp(lg) * 1000))
                lg = math.log((ts - events[-1].ts) / 1000.0)  # the gap an observer sees (whole ms)
            item = category = query = quantity = price = None
            dc, dr = -1, 0.0
            if o == PV:
                if cur_cat is not None and rng.random() < 0.5:
                    category = cur_cat
            elif o == SEARCH:
                if cur_cat is None or rng.random() < SEARCH_NEW_CATEGORY:
                    cur_cat = self._user_category(user)
                category = cur_cat
                query = self._query(cur_cat)
            elif o in (PRV, ATC, WISH):
                if o == PRV or last_item is None:  # a fresh draw: its price carries information on z
                    if cur_cat is None or (o == PRV and rng.random() >= STAY_IN_CATEGORY):
                        cur_cat = self._user_category(user)
                    row = cat.cum_item[z][cur_cat]
                    item = cat.items[cur_cat][bisect_right(row, rng.random())]
                    dc, dr = cur_cat, float(cat.rel_log_price[item])
                    last_item = item
                else:
                    item = last_item
                category = self._category_of(item)
                price = float(cat.price[item])
                if o == ATC:
                    quantity = 1 + bisect_right(QUANTITY_CUM, rng.random())
                    cart.append((item, price, quantity))
            elif o == RFC:
                item, price, quantity = cart.pop(rng.randrange(len(cart)))
                category = self._category_of(item)
            elif o == PURCHASE:
                price = round(sum(p * q for _, p, q in cart), 2)
                quantity = 1
            events.append(ClickEvent(
                event_id=prefix + str(len(events)), user_id=uid, ts=ts, type=EVENT_TYPES[o], session_id=sid,
                item_id=None if item is None else f"i{item}",
                category_id=None if category is None else f"c{category}",
                price=price, quantity=quantity, query=query, device=DEVICES[device],
            ))
            types.append(o)
            prev_states.append(s)
            log_gaps.append(lg)
            draw_cat.append(dc)
            draw_rel.append(dr)
            if o == PURCHASE:
                states.append(-1)
                break
            s = state_index(o, len(cart))
            states.append(s)
        purchased = bool(types) and types[-1] == PURCHASE
        scores = self._posterior(user, first, device, types, prev_states, log_gaps, draw_cat, draw_rel, states)
        out = list(zip(events, scores))
        if purchased:  # a little browsing after the purchase; z-independent, p = 0
            for _ in range(bisect_right(POST_PURCHASE_CUM, rng.random())):
                ts += max(1, round(math.exp(self._gap(3.0, 1.0)) * 1000))
                o = PV if rng.random() < 0.6 else PRV
                item = None
                if o == PRV:
                    c = self._user_category(user)
                    item = cat.items[c][rng.randrange(len(cat.items[c]))]
                out.append((ClickEvent(
                    event_id=prefix + str(len(out)), user_id=uid, ts=ts, type=EVENT_TYPES[o], session_id=sid,
                    item_id=None if item is None else f"i{item}",
                    category_id=None if item is None else f"c{self._category_of(item)}",
                    price=None if item is None else float(cat.price[item]), device=DEVICES[device],
                ), 0.0))
        user.last_ms = ts
        return out

    def _posterior(self, user, first, device, types, prev_states, log_gaps, draw_cat, draw_rel, states):
        """Bayes-optimal P(purchase later | prefix, earlier sessions) for each event; updates the user."""
        model = self.model
        if user.class_post is None:
            user.class_post = np.array(CLASS_PRIOR)
        pz_k = self.prior[:, first, :]  # (K, Z) pi(z | class, first?)
        with np.errstate(divide="ignore"):
            log_prior_z = np.log(user.class_post @ pz_k)  # (Z,) P(z | earlier sessions)
        t = np.array(types)
        ll = np.empty((len(INTENTS), len(t)))
        ll[:, 0] = model.log_initial[:, t[0]] + model.log_device[:, device]
        if len(t) > 1:
            sp = np.array(prev_states[1:])
            tn = t[1:]
            # truncated normal log density of the log gap; the Jacobian 1/gap does not depend on z
            zscore = (np.array(log_gaps[1:]) - model.gap_mu[:, tn]) / model.gap_sigma[:, None]
            ll[:, 1:] = model.log_trans[:, sp, tn] - 0.5 * zscore**2 - model.gap_log_norm_sigma[:, tn]
        dc = np.array(draw_cat)
        drawn = dc >= 0
        if drawn.any():
            rel = np.array(draw_rel)[drawn]
            ll[:, drawn] -= model.beta[:, None] * rel + self.catalog.log_norm[:, dc[drawn]]
        cum = np.cumsum(ll, axis=1)
        post = cum + log_prior_z[:, None]
        post = np.exp(post - post.max(axis=0))
        st = np.array(states)
        h = model.absorb[:, np.maximum(st, 0)]
        scores = (post * h).sum(axis=0) / post.sum(axis=0)
        scores[st < 0] = 0.0  # the purchase itself: nothing can follow
        # Session finished: add P(end | z, last state) unless it ended in a purchase, then update the class.
        total = cum[:, -1]
        if t[-1] != PURCHASE:
            total = total + model.log_trans[:, st[-1], END]
        lik_k = pz_k @ np.exp(total - total.max())  # (K,) P(session | class), up to a common factor
        cp = user.class_post * lik_k
        user.class_post = cp / cp.sum()
        return np.clip(scores, 0.0, 1.0).tolist()

    # -- small z-independent helpers ------------------------------------------------------------------

    def _gap(self, mu: float, sigma: float) -> float:
        """A log-normal gap (log seconds) truncated below max_gap_s, by rejection."""
        lmax = self.model.log_max_gap
        while True:
            x = self.rng.gauss(mu, sigma)
            if x < lmax:
                return x

    def _user_category(self, user: _User) -> int:
        return user.cat_ids[bisect_right(user.cat_cum, self.rng.random())]

    def _category_of(self, item: int) -> int:
        return self._item_cat[item]

    def _query(self, c: int) -> str:
        adj = _ADJECTIVES[self.rng.randrange(len(_ADJECTIVES))]
        name = self.catalog.names[c]
        return f"{adj} {name}" if adj else name


def simulate(config: SimConfig) -> Iterator[tuple[ClickEvent, float]]:
    """Events of all users in time order, each with its Bayes-optimal P(purchase later in this session)."""
    return Simulator(config).events()
