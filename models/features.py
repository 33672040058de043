"""Featurization: THE one path from a click to model inputs, for training and for serving.

After `UserState.apply`, `step_values(step, spec)` takes a click's inputs as plain numbers and
`stack_inputs` turns many clicks' values into model arrays in one numpy pass (`advance` / `step_input`
do both for one click). `dataset.build_dataset`, `offline` and the streaming worker all go this way,
so training and serving cannot drift.
`event_inputs` recomputes an event's GRU inputs from a compact `RecentEvent`, which is how the worker
rebuilds a hidden state from `Session.recent` when the model version changes.

Inputs per event:
- cat  (3,) int64: event type index, hashed item bucket, hashed category bucket (0 = absent)
- num  (n_numeric,) float32: NUMERIC_NAMES below (GRU input, next to the embeddings)
- roll (n_rolling,) float32: head-only inputs, so a hidden state depends on the session's own events and
  nothing else: log1p of the user's rolling-window features; log1p of the same windows without this
  session's own events ("history": what earlier sessions did, which the GRU cannot see); the event's
  context (device one-hot); the user's lifetime summary of finished sessions (models.history: how many,
  how many bought / carted / reached checkout, event counts, devices, pace), which outlives the 7-day
  windows and tells a first visit from a return.

Featurization is stateless: no fitted statistics here. Mean/std normalization is fitted on the training
set and lives inside the model as buffers (see models.gru), so it travels with the weights.
Time features come from the event's own timestamp (UTC), never from the wall clock, so replay == live.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from typing import TYPE_CHECKING, NamedTuple, Sequence

import numpy as np

from models.history import DEVICE_SLOTS, device_index
from models.history import INPUT_NAMES as HISTORY_INPUT_NAMES
from models.history import N_INPUTS as N_HISTORY_INPUTS
from models.history import EMPTY_FINISHED, history_inputs_rows
from models.ids import bucket
from models.windows import DEFAULT_HORIZONS, N_VALUES, Horizon, window_feature_names
from schemas.events import EVENT_TYPE_INDEX, N_EVENT_TYPES

if TYPE_CHECKING:  # pragma: no cover
    from models.session import RecentEvent
    from models.state import Step, UserState
    from schemas.events import ClickEvent

# Bump FEATURE_CODE_VERSION whenever the meaning of any input changes: it is part of the spec hash,
# so a model trained on the old featurization refuses to load against the new code.
FEATURE_CODE_VERSION = "f2"  # f2: + lifetime history inputs (models.history) at the end of roll

NUMERIC_NAMES: tuple[str, ...] = (
    "log_dt_s",        # log1p(seconds since the previous event in the session); 0 for the first
    "is_first",        # 1 for the session's first event
    "log_price",       # log1p(price); 0 when absent
    "has_price",       # 1 when a positive price is present
    "log_position",    # log1p(0-based position in session)
    "log_quantity",    # log1p(quantity), quantity 1 when absent
    "hour_sin",        # hour of day (UTC, event time) on the unit circle
    "hour_cos",
    "dow_sin",         # day of week (UTC, event time) on the unit circle
    "dow_cos",
)

_ADD_TO_CART = EVENT_TYPE_INDEX["add_to_cart"]
_PURCHASE = EVENT_TYPE_INDEX["purchase"]

# Head-only context of the current event: a device one-hot (per-session in practice; absent -> "none"),
# in models.history's device slots, so the lifetime device fractions and this one-hot line up.
CONTEXT_NAMES: tuple[str, ...] = tuple(f"device.{d}" for d in DEVICE_SLOTS)

_DAY_MS = 86_400_000
_WEEK_MS = 7 * _DAY_MS
_TWO_PI = 2.0 * math.pi


def _horizons_to_json(horizons: tuple[Horizon, ...]) -> list[list]:
    return [[h.name, int(h.length_ms), int(h.bucket_ms)] for h in horizons]


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that decides what a model's inputs mean. Its hash is checked when a model loads."""

    n_item_buckets: int = 50_000
    n_category_buckets: int = 5_000
    horizons: tuple = DEFAULT_HORIZONS
    version: str = FEATURE_CODE_VERSION

    @property
    def n_types(self) -> int:
        return N_EVENT_TYPES

    @property
    def n_numeric(self) -> int:
        return len(NUMERIC_NAMES)

    @property
    def numeric_names(self) -> list[str]:
        return list(NUMERIC_NAMES)

    @property
    def rolling_names(self) -> list[str]:
        """Names of StepInput.roll: the transformed window features, the context one-hot, the lifetime
        history inputs."""
        names = window_feature_names(self.horizons)
        return (["log1p." + n for n in names] + ["log1p.hist." + n for n in names] + list(CONTEXT_NAMES)
                + list(HISTORY_INPUT_NAMES))

    @property
    def n_rolling(self) -> int:
        return _n_rolling(self.horizons)

    def to_dict(self) -> dict:
        return {
            "n_item_buckets": self.n_item_buckets,
            "n_category_buckets": self.n_category_buckets,
            "horizons": _horizons_to_json(self.horizons),
            "version": self.version,
            "numeric_names": self.numeric_names,
            "rolling_names": self.rolling_names,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        return cls(
            n_item_buckets=int(d["n_item_buckets"]),
            n_category_buckets=int(d["n_category_buckets"]),
            horizons=tuple(Horizon(str(n), int(l), int(b)) for n, l, b in d["horizons"]),
            version=str(d["version"]),
        )

    def spec_hash(self) -> str:
        """sha256 (16 hex) over the spec *and* the input names this code produces, so a code change
        that renames or adds an input also changes the hash."""
        blob = json.dumps(
            {**self.to_dict(), "code_version": FEATURE_CODE_VERSION}, sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@lru_cache(maxsize=16)
def _n_rolling(horizons: tuple) -> int:
    return 2 * len(window_feature_names(horizons)) + len(CONTEXT_NAMES) + len(HISTORY_INPUT_NAMES)


@dataclass(frozen=True, slots=True)
class StepInput:
    cat: np.ndarray   # int64 (3,)
    num: np.ndarray   # float32 (n_numeric,)
    roll: np.ndarray  # float32 (n_rolling,)


class StepValues(NamedTuple):
    """One click's inputs as plain numbers, taken right after `UserState.apply` (see step_values);
    `stack_inputs` turns many of them into model arrays at once (numpy per batch, not per click)."""

    cat: tuple[int, int, int]
    num: tuple[float, ...]          # NUMERIC_NAMES
    window_features: np.ndarray     # Step.window_features
    session_values: list[float]     # this session's own share of them (session_window_values)
    device: int                     # device_index of the click
    history: np.ndarray | None      # Step.history


def event_values(
    recent: "RecentEvent", prev_ts_ms: int | None, position: int, spec: FeatureSpec
) -> tuple[tuple[int, int, int], tuple[float, ...]]:
    """GRU inputs of one event from its compact copy, as numbers: (cat, num) before the arrays."""
    cat = (
        recent.type_index,
        bucket(recent.item_hash, spec.n_item_buckets),
        bucket(recent.category_hash, spec.n_category_buckets),
    )
    ts = recent.ts_ms
    if prev_ts_ms is None:
        log_dt, is_first = 0.0, 1.0
    else:  # late events (ts < previous) count as simultaneous
        log_dt, is_first = math.log1p(max(0, ts - prev_ts_ms) / 1000.0), 0.0
    price = float(recent.price) if recent.price and recent.price > 0 else 0.0
    qty = recent.quantity if recent.quantity and recent.quantity > 0 else 1
    hour = _TWO_PI * (ts % _DAY_MS) / _DAY_MS
    dow = _TWO_PI * (ts % _WEEK_MS) / _WEEK_MS
    num = (
        log_dt,
        is_first,
        math.log1p(price),
        1.0 if price > 0 else 0.0,
        math.log1p(position),
        math.log1p(qty),
        math.sin(hour),
        math.cos(hour),
        math.sin(dow),
        math.cos(dow),
    )
    return cat, num


def event_inputs(
    recent: "RecentEvent", prev_ts_ms: int | None, position: int, spec: FeatureSpec
) -> tuple[np.ndarray, np.ndarray]:
    """GRU inputs of one event from its compact copy; also used to rebuild hidden states."""
    cat, num = event_values(recent, prev_ts_ms, position, spec)
    return np.array(cat, dtype=np.int64), np.array(num, dtype=np.float32)


def session_window_values(events: "Sequence[RecentEvent]", now_ms: int, horizons: tuple) -> list[float]:
    """What `events` (this session's clicks) contribute to RollingWindows.features(now_ms), same layout
    and same bucket rule (b(now) - n < b(ts) <= b(now)); money from the stored float32 prices."""
    if not events:
        return [0.0] * (len(horizons) * N_VALUES)
    times = [r.ts_ms for r in events]
    oldest, newest = min(times), max(times)
    out: list[float] = []
    every = None  # the values of all the events, for each horizon that holds them all (the common case)
    for h in horizons:
        size = h.bucket_ms
        bn = now_ms // size
        # b(now) - n < ts // size <= b(now), as bounds on ts
        first_ms, end_ms = (bn - h.length_ms // size + 1) * size, (bn + 1) * size
        if first_ms <= oldest and newest < end_ms:
            if every is None:
                every = _values_of(events)
            out += every
        else:
            out += _values_of([r for r in events if first_ms <= r.ts_ms < end_ms])
    return out


def _values_of(events: "Sequence[RecentEvent]") -> list[float]:
    """One horizon's N_VALUES for `events`: counts per type, then the cart and purchase money (summed in
    event order, so any subset sums exactly as RollingWindows-style filtering would)."""
    values = [0.0] * N_VALUES
    for r in events:
        t = r.type_index
        values[t] += 1.0
        if t == _ADD_TO_CART:
            values[N_EVENT_TYPES] += r.price * r.quantity
        elif t == _PURCHASE:
            values[N_EVENT_TYPES + 1] += r.price * r.quantity
    return values


def rolling_inputs(
    window_features: np.ndarray,
    spec: FeatureSpec,
    device: str | None = None,
    session_values: "np.ndarray | Sequence[float] | None" = None,
    history: np.ndarray | None = None,
) -> np.ndarray:
    """Head inputs (n_rolling,): log1p of raw RollingWindows.features() (heavy-tailed counts and sums);
    log1p of the windows minus `session_values` (this session's own share, see session_window_values;
    None = no session events); the one-hot device context of the event being scored; the lifetime
    inputs from `history` (Step.history, the user's finished-session summary; None = no history)."""
    wf = np.asarray(window_features, dtype=np.float32)[None]
    own = None if session_values is None else np.asarray(session_values, dtype=np.float32)[None]
    return _rolling_rows(wf, own, [device_index(device)], [history], spec)[0]


def _rolling_rows(wf: np.ndarray, own: np.ndarray | None, devices: Sequence[int],
                  histories: Sequence[np.ndarray | None], spec: FeatureSpec) -> np.ndarray:
    """rolling_inputs of N clicks at once: wf and own (N, n) float32, devices their device slots."""
    n_rows, n = wf.shape
    out = np.zeros((n_rows, spec.n_rolling), dtype=np.float32)
    wf = np.maximum(wf, 0.0)
    out[:, :n] = np.log1p(wf)
    hist = wf if own is None else np.maximum(wf - own, 0.0)
    out[:, n:2 * n] = np.log1p(hist)
    out[np.arange(n_rows), 2 * n + np.asarray(devices, dtype=np.intp)] = 1.0
    k = 2 * n + len(CONTEXT_NAMES)
    out[:, k:k + N_HISTORY_INPUTS] = _history_rows(histories)
    return out


def _history_rows(histories: Sequence[np.ndarray | None]) -> np.ndarray:
    """history_inputs of each click's Step.history. That is one array for all the clicks of a session,
    so a batch computes each distinct one once."""
    distinct: dict[int, int] = {}  # id(history) -> its row in `summaries`
    summaries, which = [], []
    for h in histories:
        row = distinct.get(id(h))
        if row is None:
            row = distinct[id(h)] = len(summaries)
            summaries.append(EMPTY_FINISHED if h is None else h)
        which.append(row)
    return history_inputs_rows(np.array(summaries, dtype=np.float64))[which]


def session_events_upto(step: "Step") -> "list[RecentEvent]":
    """This session's recent events up to and including the step's own event, found by position so the
    answer stays right if later clicks of the session were applied before featurizing this step."""
    sess = step.session
    first_pos = sess.n_events - len(sess.recent)
    return sess.recent[: max(0, step.position - first_pos + 1)]


def step_values(step: "Step", spec: FeatureSpec) -> StepValues:
    """The click's inputs as numbers. Take them before the session moves on by more than RECENT_K
    clicks (its own events must still be in Session.recent); `stack_inputs` makes the arrays."""
    cat, num = event_values(step.recent_event, step.prev_ts_ms, step.position, spec)
    own = session_window_values(session_events_upto(step), step.event.ts, spec.horizons)
    return StepValues(cat, num, step.window_features, own, device_index(step.event.device), step.history)


def stack_inputs(values: Sequence[StepValues], spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model inputs of N clicks: cat (N,3) int64, num (N,Fn) float32, roll (N,Fr) float32; row i is
    exactly step_input of values[i] (the numpy work is done once for all rows)."""
    n_rows, n_windows = len(values), len(spec.horizons) * N_VALUES
    # Each from one flat list: numpy takes that twice as fast as a list of rows (bench/bench_core.py).
    flat = chain.from_iterable
    cat = np.array(list(flat(v.cat for v in values)), dtype=np.int64).reshape(n_rows, 3)
    num = np.array(list(flat(v.num for v in values)), dtype=np.float32).reshape(n_rows, spec.n_numeric)
    wf = np.array([v.window_features for v in values], dtype=np.float32).reshape(n_rows, n_windows)
    own = np.array(list(flat(v.session_values for v in values)), dtype=np.float32).reshape(n_rows, n_windows)
    roll = _rolling_rows(wf, own, [v.device for v in values], [v.history for v in values], spec)
    return cat, num, roll


def step_input(step: "Step", spec: FeatureSpec) -> StepInput:
    """Model inputs for the click that produced `step`: stack_inputs of its step_values alone."""
    cat, num, roll = stack_inputs([step_values(step, spec)], spec)
    return StepInput(cat[0], num[0], roll[0])


def advance(
    state: "UserState",
    event: "ClickEvent",
    spec: FeatureSpec,
    source: str | None = None,
    offset: int | None = None,
) -> tuple["Step", StepInput]:
    """Apply `event` to `state` (mutates it) and featurize it."""
    step = state.apply(event, source, offset)
    return step, step_input(step, spec)


def session_event_inputs(
    recent: list["RecentEvent"], first_position: int, first_prev_ts_ms: int | None, spec: FeatureSpec
) -> tuple[np.ndarray, np.ndarray]:
    """Stacked GRU inputs for consecutive events (e.g. Session.recent), oldest first.

    `first_position` is the session position of recent[0] (n_events - len(recent)); `first_prev_ts_ms`
    the ts of the event before it (None when recent[0] opened the session). Returns cat (T,3), num (T,Fn).
    """
    cats, nums = [], []
    prev = first_prev_ts_ms
    for i, r in enumerate(recent):
        c, n = event_values(r, prev, first_position + i, spec)
        cats.append(c)
        nums.append(n)
        prev = r.ts_ms  # Step.prev_ts_ms is the previous event's own ts (see models.session.sessionize)
    return (np.array(cats, dtype=np.int64).reshape(len(cats), 3),
            np.array(nums, dtype=np.float32).reshape(len(nums), spec.n_numeric))
