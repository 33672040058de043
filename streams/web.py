"""The worker's operational surface: /health, /ready, /metrics, /status and the live /dashboard.

`install_ops` wires everything operations needs into a Faust app, in one call from streams.app:
metrics and the live feed (fed per batch by the agent), model control (hot swap), pseudonymization,
the erasure agent, a timer sampling consumer lag and table recovery, and the web views on the worker's
web port (Faust's aiohttp server, `--web-port`, `--web-bind`).

    /health             200 while the event loop answers (liveness)
    /ready              200 once the model is loaded and Faust's table recovery has finished, else 503
    /metrics            Prometheus text format, this worker's registry only
    /status             JSON: model control (serving, deployed stack, refusals), readiness, assignment
    /dashboard          the live page (static files from streams/dashboard/, no external resources)
    /dashboard/feed     JSON the page polls: throughput/latency per second, recent intents, top sessions
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .control import ModelControl
from .metrics import LiveFeed, WorkerMetrics
from .privacy import Pseudonymizer, install_erasure, pseudonymizer_from_key
from .settings import Settings

log = logging.getLogger(__name__)

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
STATIC = {"index.html": "text/html", "app.js": "application/javascript", "style.css": "text/css"}
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"  # aiohttp adds the charset itself


@dataclass
class Ops:
    settings: Settings
    metrics: WorkerMetrics
    feed: LiveFeed
    control: ModelControl
    pseudonymize: Pseudonymizer | None
    state: dict  # streams.app's shared dict: "pipeline" once the model is loaded
    app: object = None
    started: float = field(default_factory=time.time)

    def observe_batch(self, events: list, result, arrived_ms: float, process_s: float) -> None:
        """Once per micro-batch, after its intents were handed to the producer."""
        done_ms = time.time() * 1000.0
        n_in, n_out = len(events), len(result.intents)
        latency_s = max(done_ms - arrived_ms, 0.0) / 1000.0
        stamps = np.fromiter((ev.message.timestamp for ev in events), dtype=np.float64, count=n_in) * 1000.0
        self.metrics.observe_batch(n_in, n_out, result.reemitted, result.dlq_codes, process_s, latency_s,
                                   stamps, done_ms)
        watching = self.feed.watching
        self.feed.observe(n_in, n_out, sum(result.dlq_codes.values()), latency_s * 1000.0,
                          [v for _u, v in result.intents] if watching else None)

    # ------------------------------------------------------------------ readiness
    def readiness(self) -> dict:
        recovery = self.app.tables.recovery
        checks = {
            "model_loaded": self.state.get("pipeline") is not None,
            "recovery_completed": recovery.completed.is_set(),
            "not_in_recovery": not recovery.in_recovery,
        }
        return {"ready": all(checks.values()), "checks": checks}

    def sample(self) -> None:
        """Consumer lag and table recovery progress (a timer calls this every couple of seconds)."""
        app = self.app
        recovery = app.tables.recovery
        self.metrics.recovery_in_progress.set(1 if recovery.in_recovery else 0)
        self.metrics.recovery_remaining.labels("active").set(recovery.active_remaining_total())
        self.metrics.recovery_remaining.labels("standby").set(recovery.standby_remaining_total())
        self.metrics.ready.set(1 if self.readiness()["ready"] else 0)
        consumer = app.consumer
        committed = getattr(consumer, "_committed_offset", {})  # faust keeps no public accessor for it
        lag = {}
        for tp in consumer.assignment():
            if tp.topic not in self.settings.source_topics:
                continue
            try:
                high = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - not fetched yet (or partition just revoked)
                continue
            if high is None:
                continue
            lag[(tp.topic, tp.partition)] = max(int(high) - int(committed.get(tp) or 0), 0)
        self.metrics.set_lag(lag)


def install_ops(app, settings: Settings, users, state: dict, event_context, on_erased=None, users_lock=None) -> Ops:
    metrics = WorkerMetrics()
    ops = Ops(settings=settings, metrics=metrics, feed=LiveFeed(), control=ModelControl(settings, metrics),
              pseudonymize=pseudonymizer_from_key(settings.pseudonym_key), state=state, app=app)
    if ops.pseudonymize is not None:
        log.info("pseudonymization on: user ids are HMAC-SHA256 pseudonyms from ingest on (key id %s)",
                 ops.pseudonymize.key_id)
    wanted = ((settings.control_topic_name, 1), (settings.erasure_topic_name, settings.partitions))
    ops_topics = {name: n for name, n in wanted if name}
    if ops_topics:  # the broker does not auto-create topics; the worker creates its own at startup
        from .topics import ensure_topics

        ensure_topics(settings.bootstrap, ops_topics)
    if settings.erasure_topic_name:
        install_erasure(app, settings, users, ops, event_context, on_erased, users_lock)

    @app.timer(interval=2.0)
    async def sample_operations() -> None:
        ops.sample()

    if settings.web_enabled:
        _install_views(app, ops)
    return ops


def _install_views(app, ops: Ops) -> None:
    from faust import web

    @app.page("/health")
    class Health(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return self.json({"status": "ok", "uptime_s": round(time.time() - ops.started, 1)})

    @app.page("/ready")
    class Ready(web.View):
        async def get(self, request: web.Request) -> web.Response:
            r = ops.readiness()
            return self.json(r, status=200 if r["ready"] else 503)

    @app.page("/metrics")
    class Metrics(web.View):
        async def get(self, request: web.Request) -> web.Response:
            ops.sample()
            return self.bytes(ops.metrics.render(), content_type=PROMETHEUS_CONTENT_TYPE)

    @app.page("/status")
    class Status(web.View):
        async def get(self, request: web.Request) -> web.Response:
            assignment = sorted(f"{tp.topic}/{tp.partition}" for tp in app.consumer.assignment()
                                if tp.topic in ops.settings.source_topics)
            return self.json({"app_id": ops.settings.app_id, "model": ops.control.status(),
                              "readiness": ops.readiness(), "assignment": assignment,
                              "pseudonymization": ops.pseudonymize is not None})

    @app.page("/dashboard")
    class Dashboard(web.View):
        async def get(self, request: web.Request) -> web.Response:
            return self.bytes((DASHBOARD_DIR / "index.html").read_bytes(), content_type="text/html")

    @app.page("/dashboard/feed")
    class Feed(web.View):
        async def get(self, request: web.Request) -> web.Response:
            serving = ops.control.serving
            return self.json(ops.feed.snapshot({
                "app_id": ops.settings.app_id, "model_version": serving.version if serving else None,
                "ready": ops.readiness()["ready"], "pseudonymized": ops.pseudonymize is not None}))

    @app.page("/dashboard/{name}")
    class Static(web.View):
        async def get(self, request: web.Request, name: str) -> web.Response:
            if name not in STATIC:  # a fixed list: no path from the request reaches the filesystem
                return self.json({"error": "not found"}, status=404)
            return self.bytes((DASHBOARD_DIR / name).read_bytes(), content_type=STATIC[name])
