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
    # events per micro-batch, at most. Batches stay small at light load (max_wait); the cap matters once a
    # backlog forms: 2048 caught up faster than 512 at 5k events/s (p99 215-371 ms vs 2.4-3.1 s in 8 s
    # probes) and drains 20-30% more per second at saturation (docs/BENCHMARKS.md, issue 6). 4096 keeps the
    # states within their 2 KiB budget too (record v4), but was not reliably faster (ninth round).
    max_batch: int = 2048
    # Seconds a batch may wait to fill once the queue runs dry (streams.app.take_batch), from when the cores
    # are busy for max_wait_from_load s/s until they were under max_wait_until_load for 2 s; otherwise batches
    # go at once (streams/batch_wait.py: at 1k events/s the wait added 5 ms to the median, at 5k it took 16
    # ms off). max_wait_from_load 0: always wait.
    max_wait: float = 0.005
    max_wait_from_load: float = 0.5
    max_wait_until_load: float = 0.3
    # How long the producer holds intents and changelog records to fill a request. Each batch waits for its
    # changelog acks before its intents leave, so this is paid twice per batch in latency; under load,
    # requests fill anyway while the previous one is in flight. 0 measured 5k p99 41-45 ms against 46-54 at
    # 1 ms, and saturation within the noise (docs/BENCHMARKS.md, tenth round).
    producer_linger_ms: int = 0
    # While clicks flow (>= 1000 / fetch_wait_ms a second), fetches wait for fetch_min_bytes or this many ms,
    # so fewer answers each carry more clicks; at lower rates they answer at once (streams/fetch_pacing.py).
    # 0 turns the pacing off.
    fetch_wait_ms: int = 5
    fetch_min_bytes: int = 65_536
    data_dir: Path = REPO_ROOT / "var" / "worker"
    web_port: int = 6066
    web_bind: str = "127.0.0.1"  # 0.0.0.0 in containers, so Prometheus can scrape /metrics
    web_enabled: bool = True
    model_dir: Path | None = None  # None: the shipped default model
    device: str = "auto"  # auto | cpu | cuda
    max_message_bytes: int = 65_536
    standby_replicas: int = 0
    # Seconds without heartbeats before the group moves a dead worker's partitions: bounds failover after a
    # crash, and must outlast a broker restart (a Faust worker whose session expires stalls; docs).
    session_timeout: float = 30.0
    session_gap_min: float = 30.0
    torch_threads: int = 1
    # Decoded user states kept between batches (LRU); 0 turns the cache off. ~10 KiB each in memory.
    state_cache_users: int = 50_000
    # Run the core (decode, state, scoring, encoding) in a child process, beside Faust's work on the other
    # batches (streams/core_process.py); off: one process, for a single-core machine.
    core_process: bool = True
    # How many such child processes: each scores the partitions p with p % core_processes == its index, so a
    # user's clicks (one partition) always reach the same one. The core is the worker's bottleneck: with one
    # child a saturated 2-core machine still idled a quarter of its time, and two made 1.04x-1.34x the
    # events/s (docs/BENCHMARKS.md). Each holds its own copy of the model and its share of the state cache;
    # never more than `partitions` (one more would get no partition).
    core_processes: int = 2
    # With more than one: all of them score only while they are busy for more than cores_spread_load seconds
    # per second together, one below that (back once under cores_gather_load for 5 s): each scoring core
    # costs round trips per batch, and below saturation one scored with less latency (streams/core_layout.py).
    cores_spread_load: float = 0.85
    cores_gather_load: float = 0.6
    # Operations (docs/operations.md): model hot swap, right to erasure, pseudonymization.
    # Per app ({app_id} is filled in): a deploy targets one group's workers, and the erasure topic must be
    # co-partitioned with that app's source topics. "" disables the feature.
    control_topic: str = "{app_id}-control"
    erasure_topic: str = "{app_id}-erasure"
    registry_dir: Path = REPO_ROOT / "var" / "registry"  # where `intentstream deploy` copies artifacts
    pseudonym_key: str = field(default="", repr=False)  # HMAC key; non-empty turns pseudonymization on
    extra: dict = field(default_factory=dict, repr=False)  # Kafka security pass-through (holds passwords)

    @property
    def control_topic_name(self) -> str:
        return self.control_topic.format(app_id=self.app_id)

    @property
    def erasure_topic_name(self) -> str:
        return self.erasure_topic.format(app_id=self.app_id)

    @property
    def broker_url(self) -> str:
        return ",".join(f"kafka://{h}" for h in self.bootstrap.split(","))


_ENV = "INTENTSTREAM_"


def _convert(name: str, raw: str):
    default = getattr(Settings, name, None)
    if name == "source_topics":
        return tuple(t.strip() for t in raw.split(",") if t.strip())
    if name in ("data_dir", "model_dir", "registry_dir"):
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
    """SASL/SSL settings from INTENTSTREAM_KAFKA_* variables, under kafka-python's names.

    Kept Faust-free here; `faust_security` and `client_security` turn them into what each client takes.
    """
    mapping = {
        "KAFKA_SECURITY_PROTOCOL": "security_protocol",  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
        "KAFKA_SASL_MECHANISM": "sasl_mechanism",  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
        "KAFKA_SASL_USERNAME": "sasl_plain_username",
        "KAFKA_SASL_PASSWORD": "sasl_plain_password",
        "KAFKA_SSL_CAFILE": "ssl_cafile",
        "KAFKA_SSL_CERTFILE": "ssl_certfile",
        "KAFKA_SSL_KEYFILE": "ssl_keyfile",
    }
    return {key: os.environ[_ENV + env] for env, key in mapping.items() if os.environ.get(_ENV + env)}


def _ssl_context(security: dict):
    import ssl

    ctx = ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH, cafile=security.get("ssl_cafile"))
    if security.get("ssl_certfile"):
        ctx.load_cert_chain(security["ssl_certfile"], keyfile=security.get("ssl_keyfile"))
    return ctx


def faust_security(security: dict) -> dict:
    """faust.App keyword arguments: `broker_credentials` (faust/types/settings/settings.py)."""
    protocol = security.get("security_protocol", "PLAINTEXT").upper()
    if protocol == "PLAINTEXT":
        return {}
    import faust

    ctx = _ssl_context(security) if protocol.endswith("SSL") else None
    if protocol.startswith("SASL"):
        creds = faust.SASLCredentials(username=security.get("sasl_plain_username"),
                                      password=security.get("sasl_plain_password"),
                                      mechanism=security.get("sasl_mechanism", "PLAIN"), ssl_context=ctx)
        return {"broker_credentials": creds}
    if protocol == "SSL":
        return {"broker_credentials": faust.SSLCredentials(ctx)}
    raise ValueError(f"unsupported INTENTSTREAM_KAFKA_SECURITY_PROTOCOL {protocol!r}")


def client_security(security: dict, flavor: str = "kafka-python") -> dict:
    """Keyword arguments for KafkaProducer/KafkaConsumer/KafkaAdminClient, or for aiokafka clients."""
    if flavor == "kafka-python" or not any(k.startswith("ssl_") for k in security):
        return dict(security)
    out = {k: v for k, v in security.items() if not k.startswith("ssl_")}
    out["ssl_context"] = _ssl_context(security)
    return out


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
    p.add_argument("--max-wait-from-load", dest="max_wait_from_load", type=float,
                   help="cores' busy s/s from which batches wait --max-wait to fill (0: always)")
    p.add_argument("--max-wait-until-load", dest="max_wait_until_load", type=float,
                   help="cores' busy s/s under which, for 2 s, batches go at once again")
    p.add_argument("--producer-linger-ms", dest="producer_linger_ms", type=int)
    p.add_argument("--fetch-wait-ms", dest="fetch_wait_ms", type=int,
                   help="while clicks flow, fetches wait up to this for fetch-min-bytes (0: off)")
    p.add_argument("--fetch-min-bytes", dest="fetch_min_bytes", type=int)
    p.add_argument("--data-dir", dest="data_dir", type=Path)
    p.add_argument("--web-port", dest="web_port", type=int)
    p.add_argument("--web-bind", dest="web_bind",
                   help="address for /health, /metrics, /dashboard (0.0.0.0 in containers)")
    p.add_argument("--model", dest="model_dir", type=Path, help="model artifact dir (default: shipped model)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--standby-replicas", dest="standby_replicas", type=int,
                   help="warm copies of each table partition on other workers (faster failover)")
    p.add_argument("--session-timeout", dest="session_timeout", type=float,
                   help="seconds before a silent worker's partitions move (failover time)")
    p.add_argument("--state-cache-users", dest="state_cache_users", type=int,
                   help="decoded user states kept in memory between batches (0: off)")
    p.add_argument("--no-core-process", dest="core_process", action="store_const", const=False,
                   help="score in the worker's own process, not in a child process beside it")
    p.add_argument("--core-processes", dest="core_processes", type=int,
                   help="child processes scoring side by side, each a share of the partitions (default 2)")
    p.add_argument("--cores-spread-load", dest="cores_spread_load", type=float,
                   help="busy seconds per second of the scoring cores above which all core processes score")
    p.add_argument("--cores-gather-load", dest="cores_gather_load", type=float,
                   help="below this for 5 s, one core process scores again")


def settings_from_args(args: argparse.Namespace) -> Settings:
    names = {f.name for f in fields(Settings)}
    return settings_from_env(**{k: v for k, v in vars(args).items() if k in names})
