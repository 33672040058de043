"""Training data: clicks -> per-session prefix sequences with purchase labels.

Each user's clicks are replayed in (ts, event_id) order through the same `UserState.apply` +
`features.step_values` / `stack_inputs` the streaming worker uses, so training inputs are exactly serving
inputs. Sessions are cut at their first purchase: the purchase and everything after it are excluded, and
every remaining prefix is labelled 1 if a purchase followed in that session. A session that opens with a
purchase has no prefix and is dropped.
Events after a cut still pass through the state (they move the user's rolling windows for later sessions).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
from tqdm import tqdm

from models.features import FeatureSpec, stack_inputs, step_values
from models.history import INPUT_NAMES as HISTORY_INPUT_NAMES
from models.history import N_INPUTS as N_HISTORY_INPUTS
from models.state import UserState
from models.windows import window_feature_names
from schemas.events import EVENT_TYPE_INDEX, EVENT_TYPES, N_EVENT_TYPES, ClickEvent

log = logging.getLogger(__name__)

_PURCHASE = EVENT_TYPE_INDEX["purchase"]


def agg_feature_names(spec: FeatureSpec) -> list[str]:
    """Columns of SessionDataset.agg: what a baseline sees about a prefix, without sequence order."""
    return (
        [f"n.{t}" for t in EVENT_TYPES]
        + ["n_events", "duration_s", "dt_s", "cart_value", "price", "n_distinct_items"]
        + ["win." + n for n in window_feature_names(spec.horizons)]
        + list(HISTORY_INPUT_NAMES)
    )


@dataclass
class SessionDataset:
    cat: list[np.ndarray] = field(default_factory=list)    # per session (T,3) int64
    num: list[np.ndarray] = field(default_factory=list)    # per session (T,Fn) float32
    roll: list[np.ndarray] = field(default_factory=list)   # per session (T,Fr) float32
    label: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))    # (S,)
    start_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (S,)
    user_id: list[str] = field(default_factory=list)
    event_ids: list[list[str]] = field(default_factory=list)  # per session, per step
    agg: list[np.ndarray] = field(default_factory=list)    # per session (T, n_agg) float32
    session_id: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.cat)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(c) for c in self.cat], dtype=np.int64)

    @property
    def n_steps(self) -> int:
        return int(self.lengths.sum())

    def subset(self, idx: Iterable[int]) -> "SessionDataset":
        idx = [int(i) for i in idx]
        return SessionDataset(
            cat=[self.cat[i] for i in idx],
            num=[self.num[i] for i in idx],
            roll=[self.roll[i] for i in idx],
            label=self.label[idx],
            start_ms=self.start_ms[idx],
            user_id=[self.user_id[i] for i in idx],
            event_ids=[self.event_ids[i] for i in idx],
            agg=[self.agg[i] for i in idx],
            session_id=[self.session_id[i] for i in idx] if self.session_id else [],
        )

    def step_labels(self) -> np.ndarray:
        """(n_steps,) each prefix's label, in session order then step order (matches flat arrays)."""
        return np.repeat(self.label, self.lengths)

    def flat_agg(self) -> np.ndarray:
        return np.concatenate(self.agg) if self.agg else np.zeros((0, 0), np.float32)

    def flat_event_ids(self) -> list[str]:
        return [e for ids in self.event_ids for e in ids]


def time_split(ds: SessionDataset, val_frac: float = 0.15, test_frac: float = 0.15
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Session indices for train / validation / test by session start time (oldest first).

    Ties are broken by user id so the split is deterministic for any input order.
    """
    order = sorted(range(len(ds)), key=lambda i: (int(ds.start_ms[i]), ds.user_id[i]))
    n = len(order)
    n_test = int(round(n * test_frac))
    n_val = int(round(n * val_frac))
    n_train = n - n_val - n_test
    o = np.array(order, dtype=np.int64)
    return o[:n_train], o[n_train:n_train + n_val], o[n_train + n_val:]


class _Open:
    """The session being collected for one user."""

    __slots__ = ("session_id", "start_ms", "cut", "label", "values", "ids", "agg", "counts", "items")

    def __init__(self, session_id: str, start_ms: int):
        self.session_id = session_id
        self.start_ms = start_ms
        self.cut = False
        self.label = 0
        self.values: list = []  # features.StepValues per prefix, stacked when the session closes
        self.ids: list[str] = []
        self.agg: list = []
        self.counts = [0] * N_EVENT_TYPES
        self.items: set[int] = set()


def build_dataset(events: Iterable[ClickEvent], spec: FeatureSpec, *, progress: bool = True) -> SessionDataset:
    """Group by user, replay each user's clicks in (ts, event_id) order, collect labelled prefixes."""
    by_user: dict[str, list[ClickEvent]] = defaultdict(list)
    n_events = 0
    for ev in events:
        by_user[ev.user_id].append(ev)
        n_events += 1
    ds = SessionDataset()
    labels: list[int] = []
    starts: list[int] = []

    def close(s: _Open | None) -> None:
        if s is None or not s.values:
            return  # no prefix: empty, or opened with a purchase
        cat, num, roll = stack_inputs(s.values, spec)
        ds.cat.append(cat)
        ds.num.append(num)
        ds.roll.append(roll)
        # the lifetime inputs close each agg row, as the GRU's head gets them
        ds.agg.append(np.concatenate((np.array(s.agg, dtype=np.float32), roll[:, -N_HISTORY_INPUTS:]), axis=1))
        ds.event_ids.append(s.ids)
        ds.user_id.append(uid)
        ds.session_id.append(s.session_id)
        labels.append(s.label)
        starts.append(s.start_ms)

    bar = tqdm(total=n_events, desc="featurize", unit="ev", disable=not progress, mininterval=1.0)
    for uid in sorted(by_user):  # sorted: the same dataset for any input order
        evs = by_user[uid]
        evs.sort(key=lambda e: (e.ts, e.event_id))
        state = UserState.new(uid)
        cur: _Open | None = None
        for ev in evs:
            step = state.apply(ev)
            values = step_values(step, spec)  # now, while the session still holds this click's events
            sess = step.session
            if step.new_session or cur is None:
                close(cur)
                cur = _Open(sess.session_id, sess.start_ms)
            if cur.cut:
                continue
            t = step.recent_event.type_index
            if t == _PURCHASE:
                cur.cut, cur.label = True, 1
                continue
            cur.counts[t] += 1
            if step.recent_event.item_hash:
                cur.items.add(step.recent_event.item_hash)
            prev = step.prev_ts_ms
            cur.values.append(values)
            cur.ids.append(ev.event_id)
            cur.agg.append(
                cur.counts
                + [
                    step.position + 1,
                    max(0, ev.ts - sess.start_ms) / 1000.0,
                    0.0 if prev is None else max(0, ev.ts - prev) / 1000.0,
                    sess.cart_value,
                    step.recent_event.price,
                    len(cur.items),
                ]
                + step.window_features.tolist()
            )
        close(cur)
        bar.update(len(evs))
    bar.close()
    ds.label = np.array(labels, dtype=np.int8)
    ds.start_ms = np.array(starts, dtype=np.int64)
    log.info("dataset: %d events, %d users -> %d sessions (%.1f%% positive), %d prefixes",
             n_events, len(by_user), len(ds), 100.0 * ds.label.mean() if len(ds) else 0.0, ds.n_steps)
    return ds


@dataclass
class Packed:
    """A dataset flattened to contiguous arrays (one row per prefix) for fast padded batching."""

    cat: np.ndarray       # (N,3) int64
    num: np.ndarray       # (N,Fn) float32
    roll: np.ndarray      # (N,Fr) float32
    offsets: np.ndarray   # (S,) first row of each session
    lengths: np.ndarray   # (S,)
    label: np.ndarray     # (S,) float32

    @classmethod
    def from_dataset(cls, ds: SessionDataset) -> "Packed":
        lengths = ds.lengths
        offsets = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64) if len(ds) else lengths
        return cls(
            cat=np.concatenate(ds.cat) if len(ds) else np.zeros((0, 3), np.int64),
            num=np.concatenate(ds.num) if len(ds) else np.zeros((0, 0), np.float32),
            roll=np.concatenate(ds.roll) if len(ds) else np.zeros((0, 0), np.float32),
            offsets=offsets,
            lengths=lengths,
            label=ds.label.astype(np.float32),
        )

    def batch(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Padded (B,T,·) arrays for sessions `idx`: cat, num, roll, lengths, labels (B,)."""
        lengths = self.lengths[idx]
        T = int(lengths.max())
        t = np.arange(T)
        mask = t[None, :] < lengths[:, None]                          # (B,T)
        rows = np.where(mask, self.offsets[idx][:, None] + t[None, :], 0)
        cat = self.cat[rows]
        num = self.num[rows]
        roll = self.roll[rows]
        cat[~mask] = 0
        num[~mask] = 0.0
        roll[~mask] = 0.0
        return cat, num, roll, lengths, self.label[idx]
