"""Model hot swap: a registry directory for artifacts and a control topic every worker reads.

    intentstream deploy DIR ──verify──► copy to <registry>/<version>/ ──► {"action": "deploy", ...}
    intentstream rollback ─────────────────────────────────────────────► {"action": "rollback"}
                                                                              │ topic intentstream.control
                                              every worker, no consumer group ▼ (1 partition, read in full)
        load + verify in a thread ──bad──► refused: logged, counted; the old model keeps serving
                     │ ok
        the core's process loads it too (between two of its batches) ──fails──► refused, as above
                     │ ok
                     ▼ between two micro-batches
              pipeline.scorer = new scorer  (hidden states rebuild from each session's stored events)

The topic is a log of deploys and rollbacks; replaying it gives a stack (deploy pushes, rollback pops)
whose top is the model that should serve, and below it what a rollback returns to. A worker that starts
(or restarts) replays the whole topic before scoring, so every worker of a group serves the same model;
when the stack is empty the worker's own `--model` (or the shipped default) serves.
"""
from __future__ import annotations

import asyncio
import getpass
import logging
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Iterable

import orjson

from models import artifacts

from .scorer import Scorer
from .settings import Settings, client_security

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    version: str
    path: str


# ------------------------------------------------------------------------------------------ pure parts
def deploy_message(ref: ModelRef) -> dict:
    return {"action": "deploy", "version": ref.version, "path": ref.path, "issued_at": int(time.time() * 1000),
            "by": f"{getpass.getuser()}@{socket.gethostname()}", "id": uuid.uuid4().hex}


def rollback_message() -> dict:
    return {"action": "rollback", "issued_at": int(time.time() * 1000),
            "by": f"{getpass.getuser()}@{socket.gethostname()}", "id": uuid.uuid4().hex}


def apply_message(stack: list[ModelRef], msg: dict) -> list[ModelRef]:
    """The deploy stack after one control message (unknown or malformed messages change nothing)."""
    action = msg.get("action") if isinstance(msg, dict) else None
    if action == "deploy" and isinstance(msg.get("version"), str) and isinstance(msg.get("path"), str):
        return [*stack, ModelRef(msg["version"], msg["path"])]
    if action == "rollback" and stack:
        return stack[:-1]
    return stack


def replay(messages: Iterable[dict]) -> list[ModelRef]:
    stack: list[ModelRef] = []
    for msg in messages:
        stack = apply_message(stack, msg)
    return stack


def parse(value: bytes) -> dict:
    try:
        msg = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}
    return msg if isinstance(msg, dict) else {}


# ------------------------------------------------------------------------------------------ registry
def register_artifact(model_dir: Path, registry_dir: Path) -> ModelRef:
    """Verify an artifact (ArtifactError if it is bad) and copy it to <registry>/<version>/ once."""
    art = artifacts.load(model_dir)
    target = registry_dir / art.version
    if not target.exists():
        registry_dir.mkdir(parents=True, exist_ok=True)
        tmp = registry_dir / f".{art.version}.{uuid.uuid4().hex[:6]}.tmp"
        shutil.copytree(model_dir, tmp)
        try:
            tmp.rename(target)  # atomic: a worker never sees a half-copied version
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not target.exists():
                raise
    artifacts.load(target)  # the copy verifies too
    return ModelRef(art.version, str(target.resolve()))


# ------------------------------------------------------------------------------------------ Kafka, for the CLI
def publish(bootstrap: str, topic: str, msg: dict, security: dict | None = None) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **client_security(security or {}))
    try:
        producer.send(topic, key=msg["action"].encode(), value=orjson.dumps(msg), partition=0).get(timeout=30)
    finally:
        producer.close()


def read_messages(bootstrap: str, topic: str, security: dict | None = None, timeout_s: float = 10.0) -> list[dict]:
    """Every message of the control topic, oldest first."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             **client_security(security or {}))
    tp = TopicPartition(topic, 0)
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        out: list[dict] = []
        deadline = time.monotonic() + timeout_s
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                out.extend(parse(r.value) for r in records)
        return out
    finally:
        consumer.close()


# ------------------------------------------------------------------------------------------ the worker side
class ModelControl:
    """Chooses the serving model at startup and swaps it when the control topic says so."""

    def __init__(self, settings: Settings, metrics=None):
        self.settings = settings
        self.metrics = metrics
        base_dir = settings.model_dir or artifacts.DEFAULT_MODEL_DIR
        self.base = ModelRef("(worker default)", str(base_dir))
        self.stack: list[ModelRef] = []
        self.serving: ModelRef | None = None
        # Where this process's copy of each model goes. With the core in a child process (streams.core_process),
        # this copy only checks that the model loads: the cpu, so a GPU holds one copy and one CUDA context.
        self.load_device = "cpu" if settings.core_process else settings.device
        self.swaps = 0
        self.refused: list[dict] = []  # newest last, a few kept for /status
        self._consumer = None
        self._tp = None

    @property
    def enabled(self) -> bool:
        return bool(self.settings.control_topic_name)

    def status(self) -> dict:
        return {"serving": self.serving.__dict__ if self.serving else None,
                "deployed": [r.__dict__ for r in self.stack], "swaps": self.swaps, "refused": self.refused[-5:],
                "control_topic": self.settings.control_topic_name or None}

    async def _load(self, ref: ModelRef) -> Scorer:
        # Reading, hashing and building the model take long: off the event loop, batches keep flowing.
        return await asyncio.to_thread(Scorer.load, Path(ref.path), self.load_device)

    def _refuse(self, ref: ModelRef, exc: Exception) -> None:
        log.error("model %s at %s refused, keeping %s: %s", ref.version, ref.path,
                  self.serving.version if self.serving else "none", exc)
        self.refused = [*self.refused[-9:], {"version": ref.version, "path": ref.path, "error": str(exc),
                                             "at": int(time.time() * 1000)}]
        if self.metrics is not None:
            self.metrics.model_swaps.labels("refused").inc()

    def _serve(self, ref: ModelRef, scorer: Scorer) -> None:
        self.serving = ModelRef(scorer.version, ref.path)
        if self.metrics is not None:
            self.metrics.set_model(scorer.version)

    async def initial_scorer(self) -> Scorer:
        """The model to start with: the top of the deploy stack that loads, else the worker's own model."""
        if self.enabled:
            await self._start_consumer()
            await self._drain(until_end=True)
        for ref in reversed(self.stack):
            try:
                scorer = await self._load(ref)
            except (artifacts.ArtifactError, OSError) as exc:
                self._refuse(ref, exc)
                continue
            self._serve(ref, scorer)
            return scorer
        scorer = await self._load(self.base)  # no usable deploy: a failure here is fatal, as without control
        self._serve(self.base, scorer)
        return scorer

    async def follow(self, pipeline, activate: Callable[[Scorer], Awaitable[None]] | None = None) -> None:
        """Apply new control messages for as long as the worker runs. `activate(scorer)` makes whoever scores
        serve a new model before it counts as served (streams.core_process: the core's process loads it
        too); if it raises, the swap is refused like a model that does not load."""
        if not self.enabled:
            return
        try:
            while True:
                try:
                    if await self._drain(until_end=False):
                        await self._apply(pipeline, activate)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - a broker hiccup must not end model control for good
                    log.exception("control topic: reading failed; retrying in 2 s")
                    await asyncio.sleep(2.0)
        finally:
            await self._consumer.stop()

    async def _apply(self, pipeline, activate: Callable[[Scorer], Awaitable[None]] | None = None) -> None:
        want = self.stack[-1] if self.stack else self.base
        if self.serving is not None and want.path == self.serving.path:
            return
        try:
            scorer = await self._load(want)
            if activate is not None:
                await activate(scorer)
        except Exception as exc:  # noqa: BLE001 - whatever breaks loading, the serving model stays
            self._refuse(want, exc)
            return
        old = pipeline.scorer.version
        pipeline.scorer = scorer  # read once per batch: the swap lands between batches
        self.swaps += 1
        self._serve(want, scorer)
        if self.metrics is not None:
            self.metrics.model_swaps.labels("ok").inc()
        log.info("model swapped: %s -> %s (%s)", old, scorer.version, want.path)

    async def _start_consumer(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self._tp = TopicPartition(self.settings.control_topic_name, 0)
        # No group: every worker reads every message (a shared group would hand each deploy to one worker).
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap, group_id=None,
                                          enable_auto_commit=False,
                                          **client_security(self.settings.extra, flavor="aiokafka"))
        await self._consumer.start()
        self._consumer.assign([self._tp])
        await self._consumer.seek_to_beginning(self._tp)

    async def _drain(self, until_end: bool) -> bool:
        """Read control messages into the stack; True when any arrived."""
        consumer, tp = self._consumer, self._tp
        end = (await consumer.end_offsets([tp]))[tp] if until_end else None
        got = False
        while True:
            batches = await consumer.getmany(tp, timeout_ms=200 if until_end else 1000)
            for record in batches.get(tp, []):
                msg = parse(record.value)
                self.stack = apply_message(self.stack, msg)
                log.info("control: %s %s", msg.get("action"), msg.get("version", ""))
                got = True
            if not until_end or await consumer.position(tp) >= end:
                return got
