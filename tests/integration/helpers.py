"""Shared pieces of the integration tests: real worker processes, producing and collecting topics."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from kafka import KafkaConsumer

from deploy.kafka.local_broker import free_port_pair
from tests.integration.conftest import REPO_ROOT


@dataclass
class Pipeline:
    """Names of one test's private pipeline."""

    bootstrap: str
    app_id: str
    clicks: str
    intents: str
    dlq: str
    partitions: int = 3

    @classmethod
    def unique(cls, bootstrap: str, suffix: str, partitions: int = 3) -> "Pipeline":
        return cls(bootstrap, f"app-{suffix}", f"clicks-{suffix}", f"intents-{suffix}", f"dlq-{suffix}", partitions)

    def worker_args(self, data_dir: Path, web_port: int | None = None) -> list[str]:
        return ["worker", "--bootstrap", self.bootstrap, "--app-id", self.app_id, "--topics", self.clicks,
                "--intents-topic", self.intents, "--dlq-topic", self.dlq, "--partitions", str(self.partitions),
                "--data-dir", str(data_dir), "--web-port", str(web_port or free_port_pair())]


def start_worker(pipeline: Pipeline, data_dir: Path, log_path: Path, extra: list[str] | None = None,
                 env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", *pipeline.worker_args(data_dir), *(extra or [])],
        cwd=REPO_ROOT, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def stop_worker(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def collect(bootstrap: str, topic: str, until, timeout_s: float = 120.0, group: str | None = None) -> list:
    """Read `topic` from the beginning until `until(records)` is true or the timeout passes."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=group,
                             enable_auto_commit=False)
    records: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not until(records):
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def decode_all(records) -> list[dict]:
    return [orjson.loads(r.value) for r in records]


def tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"
