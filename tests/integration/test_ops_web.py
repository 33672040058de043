"""The worker's web surface on the real broker: health, readiness, Prometheus metrics, and the live
dashboard driven by headless Chromium while events flow (the numbers on the page must change)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from deploy.kafka.local_broker import free_port_pair
from models.simulator import SimConfig, simulate
from schemas.codec import decode_click, encode_click
from streams.topics import ensure_topics
from tests.integration.helpers import Pipeline, make_model, start_worker, stop_worker, tail, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,900"]
POISON = [b"\x00 not json", b'{"event_id": "x", "user_id": "poison", "ts": 1700000000000, "type": "teleport"}']


def http(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def metrics(port: int) -> dict:
    out = {}
    for family in text_string_to_metric_families(http(f"http://127.0.0.1:{port}/metrics")[1].decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def browser(url: str, profile: Path, *args: str) -> str:
    """Load the page in headless Chromium, let its scripts run a few (virtual) seconds, return stdout."""
    result = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=3000",
                             *args, url], capture_output=True, text=True, timeout=60)
    return result.stdout


def tile(dom: str, element_id: str) -> int:
    m = re.search(rf'id="{element_id}">([\d,]+)<', dom)
    assert m, f"#{element_id} not rendered:\n{dom[:2000]}"
    return int(m.group(1).replace(",", ""))


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (make setup installs it as root: apt-get install chromium)")
def test_health_ready_metrics_and_live_dashboard(kafka_bootstrap: str, unique: str, tmp_path: Path) -> None:
    pipe = Pipeline.unique(kafka_bootstrap, unique)
    ensure_topics(kafka_bootstrap, {pipe.clicks: 3, pipe.intents: 3, pipe.dlq: 1})
    model = make_model(tmp_path / "model", hidden_size=16)
    port = free_port_pair()
    log = tmp_path / "worker.log"
    worker = start_worker(pipe, tmp_path / "state", log, ["--model", str(model), "--web-port", str(port)])
    base = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    sent = {"clicks": 0}

    def shoppers() -> None:
        # Wall-clock record timestamps (no timestamp_ms), so record->intent latency is end to end.
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
        for p in POISON:
            producer.send(pipe.clicks, key=b"poison", value=p)
        for ev, _p in simulate(SimConfig(n_users=400, n_days=3, seed=9)):
            if stop.is_set():
                break
            producer.send(pipe.clicks, key=ev.user_id.encode(), value=encode_click(ev))
            sent["clicks"] += 1
            time.sleep(0.004)  # ~200 events/s: a steady flow while the browser watches
        producer.flush()
        producer.close()

    try:
        wait_for(lambda: http(base + "/health")[0] == 200, 60, what="/health")
        wait_for(lambda: http(base + "/ready")[0] == 200, 60, what="/ready")
        flow = threading.Thread(target=shoppers, daemon=True)
        flow.start()
        wait_for(lambda: metrics(port).get(("intentstream_intents_out_total", ()), 0) > 0, 60, what="first intents")

        profile = tmp_path / "chromium"
        first = browser(base + "/dashboard", profile, "--dump-dom")
        time.sleep(2)
        second = browser(base + "/dashboard", profile, "--dump-dom")
        shot = tmp_path / "dashboard.png"
        browser(base + "/dashboard", profile, f"--screenshot={shot}")
        stop.set()
        flow.join(timeout=30)

        n1, n2 = tile(first, "total-in"), tile(second, "total-in")
        assert 0 < n1 < n2, (n1, n2)
        assert tile(second, "total-out") > tile(first, "total-out") > 0
        assert "<td>u" in second  # the session tables filled in (simulated user ids start with "u")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("INTENTSTREAM_SCREENSHOT_TO"):  # how docs/img/dashboard.png is made
            shutil.copy(shot, os.environ["INTENTSTREAM_SCREENSHOT_TO"])

        wait_for(lambda: metrics(port).get(("intentstream_events_in_total", ()), 0) >= sent["clicks"] + len(POISON),
                 60, what="every click consumed")
        m = metrics(port)
        for code in (decode_click(p).code for p in POISON):  # the codec's verdict, counted by code
            assert m[("intentstream_dead_letters_total", (("code", code),))] == 1
        assert m[("intentstream_intents_out_total", ())] >= sent["clicks"]
        assert m[("intentstream_click_to_intent_seconds_count", ())] == m[("intentstream_intents_out_total", ())]
        assert m[("intentstream_record_to_intent_seconds_count", ())] == m[("intentstream_events_in_total", ())]
        assert m[("intentstream_ready", ())] == 1
        assert sum(v for (name, _l), v in m.items() if name == "intentstream_model_info") == 1
        lag = {dict(labels)["partition"] for (name, labels) in m if name == "intentstream_consumer_lag"}
        assert lag == {"0", "1", "2"}
        assert http(base + "/dashboard/../streams/settings.py")[0] == 404
        assert worker.poll() is None, tail(log)
    finally:
        stop.set()
        stop_worker(worker)
