"""Worker metrics (Prometheus, one registry per worker) and the live feed behind /dashboard.

Both are fed once per micro-batch by the Faust shell (`observe_batch`), never per event from Python
loops: per-event latencies go into numpy-binned histograms, so watching costs little at 20k events/s.

Latency, two views (docs/operations.md):
- `intentstream_click_to_intent_seconds`: inside the worker, from the batch being handed to the agent
  to its intents being queued for the producer. Always meaningful.
- `intentstream_record_to_intent_seconds`: from the Kafka record timestamp to the same point. End to end
  only when producers stamp wall-clock time; `intentstream load` stamps original event times, so on
  replayed history it measures the age of the data instead.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
SCORING_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class BulkHistogram(Collector):
    """A Prometheus histogram fed with numpy arrays (or one value with a weight) per call."""

    def __init__(self, name: str, documentation: str, buckets: Iterable[float], registry: CollectorRegistry):
        self.name, self.documentation = name, documentation
        self.bounds = np.asarray(tuple(buckets), dtype=np.float64)
        self._counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # last bin: above every bound (+Inf)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        # side="left": a value equal to a bound counts in that bound's bucket (Prometheus `le`).
        bins = np.bincount(np.searchsorted(self.bounds, values, side="left"), minlength=len(self._counts))
        with self._lock:
            self._counts += bins
            self._sum += float(values.sum())

    def observe(self, value: float, count: int = 1) -> None:
        if count <= 0:
            return
        with self._lock:
            self._counts[int(np.searchsorted(self.bounds, value, side="left"))] += count
            self._sum += value * count

    def collect(self):
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total = self._sum
        buckets = [(repr(float(b)), int(c)) for b, c in zip(self.bounds, cumulative[:-1])]
        buckets.append(("+Inf", int(cumulative[-1])))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, total)
        yield family


class WorkerMetrics:
    """Every metric of one worker, in its own registry (several workers can live in one test process)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        self.events_in = Counter("intentstream_events_in", "Records consumed from the source topics", registry=r)
        self.intents_out = Counter("intentstream_intents_out", "Intents produced (re-emitted ones included)",
                                   registry=r)
        self.reemitted = Counter("intentstream_intents_reemitted", "Re-delivered clicks answered with the "
                                 "stored intent", registry=r)
        self.dead_letters = Counter("intentstream_dead_letters", "Records sent to the DLQ, by error code",
                                    ["code"], registry=r)
        self.batch_size = Histogram("intentstream_batch_size", "Records per micro-batch", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.scoring_seconds = Histogram("intentstream_batch_processing_seconds", "Pipeline time per micro-batch "
                                         "(decode, state, GRU rounds, encode)", buckets=SCORING_BUCKETS_S, registry=r)
        self.latency = BulkHistogram("intentstream_click_to_intent_seconds", "Per intent: batch handed to the "
                                     "agent -> intent queued for the producer", LATENCY_BUCKETS_S, r)
        self.record_latency = BulkHistogram("intentstream_record_to_intent_seconds", "Per intent: Kafka record "
                                            "timestamp -> intent queued (end to end when producers stamp "
                                            "wall-clock time)", LATENCY_BUCKETS_S, r)
        self.consumer_lag = Gauge("intentstream_consumer_lag", "Highwater minus committed offset, per assigned "
                                  "source partition", ["topic", "partition"], registry=r)
        self.model_info = Gauge("intentstream_model_info", "1 for the model version now serving", ["version"],
                                registry=r)
        self.model_swaps = Counter("intentstream_model_swaps", "Model deploys handled, by result (ok, refused)",
                                   ["result"], registry=r)
        self.recovery_remaining = Gauge("intentstream_recovery_remaining", "Changelog records left to restore",
                                        ["kind"], registry=r)
        self.recovery_in_progress = Gauge("intentstream_recovery_in_progress", "1 while Faust restores tables",
                                          registry=r)
        self.ready = Gauge("intentstream_ready", "1 when /ready answers 200", registry=r)
        self.erasures = Counter("intentstream_erasures", "Erasure requests handled, by outcome", ["outcome"],
                                registry=r)
        self._model_version: str | None = None
        self._lag_labels: set[tuple[str, str]] = set()

    def observe_batch(self, n_in: int, n_out: int, reemitted: int, dlq_codes: dict[str, int], process_s: float,
                      latency_s: float, record_ts_ms: np.ndarray | None = None, done_ms: float | None = None) -> None:
        self.events_in.inc(n_in)
        self.intents_out.inc(n_out)
        if reemitted:
            self.reemitted.inc(reemitted)
        for code, n in dlq_codes.items():
            self.dead_letters.labels(code).inc(n)
        self.batch_size.observe(n_in)
        self.scoring_seconds.observe(process_s)
        # Every intent of a batch waited the whole batch: one weighted observation.
        self.latency.observe(latency_s, n_out)
        if record_ts_ms is not None and done_ms is not None and record_ts_ms.size:
            self.record_latency.observe_many(np.maximum(done_ms - record_ts_ms, 0.0) / 1000.0)

    def set_model(self, version: str) -> None:
        if self._model_version is not None and self._model_version != version:
            self.model_info.remove(self._model_version)
        self.model_info.labels(version).set(1)
        self._model_version = version

    def set_lag(self, lag: dict[tuple[str, int], int]) -> None:
        labels = {(t, str(p)) for t, p in lag}
        for gone in self._lag_labels - labels:  # partitions revoked in a rebalance
            self.consumer_lag.remove(*gone)
        for (topic, partition), n in lag.items():
            self.consumer_lag.labels(topic, str(partition)).set(n)
        self._lag_labels = labels

    def render(self) -> bytes:
        return generate_latest(self.registry)


# ------------------------------------------------------------------------------------------ live feed
@dataclass
class _Second:
    events_in: int = 0
    intents_out: int = 0
    dead_letters: int = 0
    latencies: list[tuple[float, int]] = field(default_factory=list)  # (latency ms, intents)


def _weighted_quantile(pairs: list[tuple[float, int]], q: float) -> float | None:
    total = sum(n for _v, n in pairs)
    if total == 0:
        return None
    target, seen = q * total, 0
    for value, n in sorted(pairs):
        seen += n
        if seen >= target:
            return value
    return sorted(pairs)[-1][0]


class LiveFeed:
    """What /dashboard shows: per-second throughput and latency, recent intents, top-intent sessions.

    Decoding intents costs CPU (~4 us each), so they are only looked at while somebody watches (the feed
    was read in the last `watch_s` seconds), and then at most `decode_max` per batch (the newest): under
    heavy load the session tables show a sample. Counts and latencies are always complete.
    """

    def __init__(self, window_s: int = 120, recent_n: int = 25, top_n: int = 10, sessions_max: int = 5000,
                 session_ttl_s: float = 600.0, watch_s: float = 15.0, decode_max: int = 128, clock=time.time):
        self.window_s, self.recent_n, self.top_n = window_s, recent_n, top_n
        self.sessions_max, self.session_ttl_s, self.watch_s = sessions_max, session_ttl_s, watch_s
        self.clock, self.decode_max = clock, decode_max
        self.started = clock()
        self._seconds: dict[int, _Second] = {}
        self._recent: deque[dict] = deque(maxlen=recent_n)
        self._sessions: dict[str, dict] = {}  # session id -> latest intent summary (insertion = recency order)
        self._last_read = float("-inf")
        self.totals = {"events_in": 0, "intents_out": 0, "dead_letters": 0}
        self._lock = threading.Lock()

    @property
    def watching(self) -> bool:
        return self.clock() - self._last_read < self.watch_s

    def observe(self, n_in: int, n_out: int, n_dead: int, latency_ms: float,
                intents: list[bytes] | None = None) -> None:
        now = self.clock()
        with self._lock:
            sec = self._seconds.setdefault(int(now), _Second())
            sec.events_in += n_in
            sec.intents_out += n_out
            sec.dead_letters += n_dead
            if n_out:
                sec.latencies.append((latency_ms, n_out))
            self.totals["events_in"] += n_in
            self.totals["intents_out"] += n_out
            self.totals["dead_letters"] += n_dead
            if intents and self.watching:
                self._take_intents(intents, now)
            if len(self._seconds) > self.window_s + 5:
                oldest = int(now) - self.window_s
                for t in [t for t in self._seconds if t < oldest]:
                    del self._seconds[t]

    def _take_intents(self, intents: list[bytes], now: float) -> None:
        rows = []
        for raw in intents[-self.decode_max:]:
            i = orjson.loads(raw)
            row = {"user_id": i["user_id"], "session_id": i["session_id"], "p": round(i["p_purchase"], 4),
                   "intent": i["intent"], "events": i["session_events"], "cart": i["cart_value"],
                   "latency_ms": i["latency_ms"], "model_version": i["model_version"], "at": round(now, 3)}
            self._sessions.pop(row["session_id"], None)  # re-insert: dict order tracks recency
            self._sessions[row["session_id"]] = row
            rows.append(row)
        self._recent.extend(rows[-self.recent_n:])
        while len(self._sessions) > self.sessions_max:
            del self._sessions[next(iter(self._sessions))]

    def snapshot(self, extra: dict | None = None) -> dict:
        now = self.clock()
        with self._lock:
            self._last_read = now
            start = int(now) - self.window_s + 1
            series = []
            for t in range(start, int(now) + 1):
                s = self._seconds.get(t)
                if s is None:
                    series.append({"t": t, "events_in": 0, "intents_out": 0, "dead_letters": 0,
                                   "p50_ms": None, "p99_ms": None})
                    continue
                series.append({"t": t, "events_in": s.events_in, "intents_out": s.intents_out,
                                "dead_letters": s.dead_letters, "p50_ms": _weighted_quantile(s.latencies, 0.5),
                                "p99_ms": _weighted_quantile(s.latencies, 0.99)})
            live = [r for r in self._sessions.values() if now - r["at"] <= self.session_ttl_s]
            top = sorted(live, key=lambda r: r["p"], reverse=True)[: self.top_n]
            recent = list(reversed(self._recent))
            totals = dict(self.totals)
        return {"now": now, "uptime_s": round(now - self.started, 1), "totals": totals, "series": series,
                "recent": recent, "top_sessions": top, **(extra or {})}
