"""One frozen settings object for a worker, built in the entry point and passed down.

Every field has an INTENTSTREAM_* environment variable and a CLI flag (see `add_worker_args`);
nothing reads the environment at import time.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Settings:
    bootstrap: str = "127.0.0.1:9092"
    app_id: str = "intentstream"
    source_topics: tuple[str, ...] = ("clickstream",)
    intents_topic: str = "intents"
    dlq_topic: str = "clickstream.dlq"
    partitions: int = 6
    max_batch: int = 512  # events per micro-batch
    max_wait: float = 0.005  # seconds to wait for a batch to fill (bounds added latency)
    data_dir: Path = REPO_ROOT / "var" / "worker"
    web_port: int = 6066
    web_enabled: bool = True
    model_dir: Path | None = None  # None: the shipped default model
    device: str = "auto"  # auto | cpu | cuda
    max_message_bytes: int = 65_536
    standby_replicas: int = 0
    session_gap_min: float = 30.0
    torch_threads: int = 1
    extra: dict = field(default_factory=dict)  # Kafka client pass-through (security settings)

    @property
    def broker_url(self) -> str:
        return ",".join(f"kafka://{h}" for h in self.bootstrap.split(","))


_ENV = "INTENTSTREAM_"


def _convert(name: str, raw: str):
    default = getattr(Settings, name, None)
    if name == "source_topics":
        return tuple(t.strip() for t in raw.split(",") if t.strip())
    if name in ("data_dir", "model_dir"):
        return Path(raw)
    if isinstance(default, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def settings_from_env(**overrides) -> Settings:
    """Settings from INTENTSTREAM_* variables, then explicit overrides (CLI flags) on top."""
    values = {}
    for f in fields(Settings):
        raw = os.environ.get(_ENV + f.name.upper())
        if raw is not None and f.name != "extra":
            values[f.name] = _convert(f.name, raw)
    values["extra"] = kafka_security_from_env()
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)


def kafka_security_from_env() -> dict:
    """SASL/SSL pass-through for Faust's broker settings (see README, Operations)."""
    mapping = {
        "KAFKA_SECURITY_PROTOCOL": "broker_credentials_protocol",
        "KAFKA_SASL_MECHANISM": "sasl_mechanism",
        "KAFKA_SASL_USERNAME": "sasl_username",
        "KAFKA_SASL_PASSWORD": "sasl_password",
        "KAFKA_SSL_CAFILE": "ssl_cafile",
        "KAFKA_SSL_CERTFILE": "ssl_certfile",
        "KAFKA_SSL_KEYFILE": "ssl_keyfile",
    }
    return {key: os.environ[_ENV + env] for env, key in mapping.items() if os.environ.get(_ENV + env)}


def add_worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (env INTENTSTREAM_BOOTSTRAP)")
    p.add_argument("--app-id", dest="app_id", help="consumer group / app id")
    p.add_argument("--topics", dest="source_topics", type=lambda s: tuple(s.split(",")),
                   help="comma-separated source topics")
    p.add_argument("--intents-topic", dest="intents_topic")
    p.add_argument("--dlq-topic", dest="dlq_topic")
    p.add_argument("--partitions", type=int)
    p.add_argument("--max-batch", dest="max_batch", type=int)
    p.add_argument("--max-wait", dest="max_wait", type=float, help="seconds")
    p.add_argument("--data-dir", dest="data_dir", type=Path)
    p.add_argument("--web-port", dest="web_port", type=int)
    p.add_argument("--model", dest="model_dir", type=Path, help="model artifact dir (default: shipped model)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--standby-replicas", dest="standby_replicas", type=int)


def settings_from_args(args: argparse.Namespace) -> Settings:
    names = {f.name for f in fields(Settings)}
    return settings_from_env(**{k: v for k, v in vars(args).items() if k in names})
