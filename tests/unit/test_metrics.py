"""Worker metrics and the dashboard feed, without a worker."""
from __future__ import annotations

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from streams.metrics import LATENCY_BUCKETS_S, BulkHistogram, LiveFeed, WorkerMetrics


def samples(metrics: WorkerMetrics) -> dict:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_bulk_histogram_equals_prometheus_histogram_observing_one_by_one() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.exponential(0.02, 500), np.array(LATENCY_BUCKETS_S), [0.0, 120.0]])
    reg_a, reg_b = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("lat_seconds", "x", LATENCY_BUCKETS_S, reg_a)
    bulk.observe_many(values[:300])
    bulk.observe_many(values[300:])
    bulk.observe(0.003, 4)
    ref = Histogram("lat_seconds", "x", buckets=LATENCY_BUCKETS_S, registry=reg_b)
    for v in [*values, *[0.003] * 4]:
        ref.observe(float(v))

    def buckets(reg):
        return {(s.name, s.labels.get("le")): s.value for fam in reg.collect() for s in fam.samples
                if not s.name.endswith("_created")}

    a, b = buckets(reg_a), buckets(reg_b)
    assert {k for k in a if k[0].endswith("_bucket")} == {k for k in b if k[0].endswith("_bucket")}
    for key, value in b.items():
        assert abs(a[key] - value) < 1e-9 * max(1.0, abs(value)), key


def test_observe_batch_counts_events_dead_letters_and_latencies() -> None:
    m = WorkerMetrics()
    m.observe_batch(10, 8, 1, {"not_json": 2}, 0.004, 0.012, np.array([1000.0] * 10), done_ms=1500.0)
    m.observe_batch(5, 5, 0, {}, 0.002, 0.003)
    m.set_model("gru-a")
    m.set_model("gru-b")
    m.set_lag({("clicks", 0): 7, ("clicks", 1): 0})
    m.set_lag({("clicks", 1): 3})  # partition 0 revoked
    s = samples(m)
    assert s[("intentstream_events_in_total", ())] == 15
    assert s[("intentstream_intents_out_total", ())] == 13
    assert s[("intentstream_dead_letters_total", (("code", "not_json"),))] == 2
    assert s[("intentstream_click_to_intent_seconds_count", ())] == 13
    assert s[("intentstream_click_to_intent_seconds_bucket", (("le", "0.01"),))] == 5
    assert s[("intentstream_record_to_intent_seconds_count", ())] == 10
    assert abs(s[("intentstream_record_to_intent_seconds_sum", ())] - 5.0) < 1e-9
    assert s[("intentstream_batch_size_count", ())] == 2
    assert ("intentstream_model_info", (("version", "gru-a"),)) not in s
    assert s[("intentstream_model_info", (("version", "gru-b"),))] == 1
    assert ("intentstream_consumer_lag", (("partition", "0"), ("topic", "clicks"))) not in s
    assert s[("intentstream_consumer_lag", (("partition", "1"), ("topic", "clicks")))] == 3


def test_two_workers_in_one_process_have_separate_registries() -> None:
    a, b = WorkerMetrics(), WorkerMetrics()
    a.observe_batch(3, 3, 0, {}, 0.001, 0.001)
    assert samples(a)[("intentstream_events_in_total", ())] == 3
    assert samples(b)[("intentstream_events_in_total", ())] == 0


def intent(user: str, session: str, p: float) -> bytes:
    return orjson.dumps({"user_id": user, "session_id": session, "p_purchase": p, "intent": "high",
                         "session_events": 3, "cart_value": 1.5, "latency_ms": 2.0, "model_version": "gru-x"})


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def test_feed_series_top_sessions_and_recent_intents() -> None:
    clock = Clock()
    feed = LiveFeed(window_s=10, recent_n=3, top_n=2, clock=clock)
    # Nobody watches yet: counts only, intents are not decoded.
    feed.observe(4, 4, 0, 5.0, [intent("u1", "s1", 0.9)])
    assert feed.snapshot()["top_sessions"] == []
    clock.t += 1
    feed.observe(3, 2, 1, 7.0, [intent("u1", "s1", 0.2), intent("u2", "s2", 0.6)])
    feed.observe(1, 1, 0, 30.0, [intent("u3", "s3", 0.7)])
    snap = feed.snapshot()
    assert snap["totals"] == {"events_in": 8, "intents_out": 7, "dead_letters": 1}
    assert [r["session_id"] for r in snap["top_sessions"]] == ["s3", "s2"]  # s1's latest score is 0.2
    assert [r["session_id"] for r in snap["recent"]] == ["s3", "s2", "s1"]  # newest first
    last = snap["series"][-1]
    assert (last["events_in"], last["intents_out"], last["dead_letters"]) == (4, 3, 1)
    assert last["p50_ms"] == 7.0 and last["p99_ms"] == 30.0
    assert snap["series"][-2]["events_in"] == 4 and len(snap["series"]) == 10
    clock.t += 60  # stale seconds leave the window; stale sessions leave the top list after their ttl
    assert all(s["events_in"] == 0 for s in feed.snapshot()["series"])
    clock.t += 1000
    assert feed.snapshot()["top_sessions"] == []


def test_ready_only_with_a_model_and_after_table_recovery() -> None:
    from types import SimpleNamespace

    from streams.control import ModelControl
    from streams.settings import Settings
    from streams.web import Ops

    class Flag:
        def __init__(self) -> None:
            self.value = False

        def is_set(self) -> bool:
            return self.value

    recovery = SimpleNamespace(completed=Flag(), in_recovery=True)
    state: dict = {}
    ops = Ops(settings=Settings(), metrics=WorkerMetrics(), feed=LiveFeed(),
              control=ModelControl(Settings(control_topic="")), pseudonymize=None, state=state,
              app=SimpleNamespace(tables=SimpleNamespace(recovery=recovery)))
    assert not ops.readiness()["ready"]
    state["pipeline"] = object()  # model loaded, recovery still running
    assert ops.readiness()["checks"] == {"model_loaded": True, "recovery_completed": False, "not_in_recovery": False}
    recovery.completed.value, recovery.in_recovery = True, False
    assert ops.readiness()["ready"]
    recovery.in_recovery = True  # a later rebalance restores again
    assert not ops.readiness()["ready"]


def test_grafana_dashboard_and_alerts_only_use_metrics_the_worker_exports() -> None:
    import json
    import re
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    m = WorkerMetrics()
    m.observe_batch(1, 1, 1, {"not_json": 1}, 0.001, 0.001, np.array([0.0]), 1.0)
    m.set_model("gru-x")
    m.set_lag({("clicks", 0): 1})
    m.recovery_remaining.labels("active").set(0)
    m.model_swaps.labels("ok").inc()
    m.erasures.labels("erased").inc()
    exported = {s.name for fam in text_string_to_metric_families(m.render().decode()) for s in fam.samples}
    dashboard = json.loads((root / "deploy/grafana/dashboards/intentstream.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    alerts = yaml.safe_load((root / "deploy/prometheus/alerts.yml").read_text())
    exprs += [r["expr"] for g in alerts["groups"] for r in g["rules"]]
    used = {name for e in exprs for name in re.findall(r"intentstream_[a-z0-9_]+", e)}
    assert used and used <= exported, used - exported
    # Prometheus scrapes the port the compose workers serve on.
    prom = yaml.safe_load((root / "deploy/prometheus/prometheus.yml").read_text())
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    worker_cmd = compose["services"]["worker"]["command"]
    port = prom["scrape_configs"][0]["dns_sd_configs"][0]["port"]
    assert worker_cmd[worker_cmd.index("--web-port") + 1] == str(port)
    assert compose["services"]["worker"]["environment"]["INTENTSTREAM_WEB_BIND"] == "0.0.0.0"


def test_feed_decodes_at_most_decode_max_intents_per_batch() -> None:
    feed = LiveFeed(decode_max=2, top_n=10)
    feed.snapshot()  # somebody watches
    feed.observe(5, 5, 0, 1.0, [intent(f"u{i}", f"s{i}", 0.1 * i) for i in range(5)])
    snap = feed.snapshot()
    assert {r["session_id"] for r in snap["top_sessions"]} == {"s3", "s4"}
    assert snap["totals"]["intents_out"] == 5
