"""A real single-node Kafka (KRaft, broker+controller in one JVM) on 127.0.0.1, without Docker.

Jars come from Maven Central through deploy/kafka/pom.xml (`mvn dependency:copy-dependencies`), so a
fresh machine needs only Java 17 and Maven. Used by `intentstream kafka start|stop|status`, by the demo
and by the integration tests (which start their own broker on a free port and data dir).
"""
from __future__ import annotations

import argparse
import base64
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

KAFKA_DIR = Path(__file__).resolve().parent
REPO_ROOT = KAFKA_DIR.parents[1]
LIB_DIR = KAFKA_DIR / "lib"
DEFAULT_DATA_DIR = REPO_ROOT / "var" / "kafka"
DEFAULT_PORT = 9092

SERVER_PROPERTIES = """\
# Written by intentstream (deploy/kafka/local_broker.py); one node is both broker and controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}{extra_listeners}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}{extra_listeners}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT{extra_protocols}
log.dirs={log_dirs}
num.partitions=1
# Topics are created explicitly with the right partition count (co-partitioning); a typo fails loudly.
auto.create.topics.enable=false
# Single node: every internal topic has one replica.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests and the demo create consumer groups often; don't wait 3 s for more members.
group.initial.rebalance.delay.ms=0
# Record timestamps are event times (replayed history can be years old): never expire by time.
log.retention.ms=-1
log.segment.bytes=104857600
{extra_properties}"""


@dataclass(frozen=True)
class BrokerConfig:
    data_dir: Path = DEFAULT_DATA_DIR
    port: int = DEFAULT_PORT
    heap: str = "768m"
    # More listeners beside PLAINTEXT, as (security protocol, port), e.g. (("SASL_PLAINTEXT", 9094),),
    # and raw server.properties lines for them (SASL mechanisms, JAAS config).
    extra_listeners: tuple[tuple[str, int], ...] = ()
    extra_properties: str = ""

    @property
    def controller_port(self) -> int:
        return self.port + 1

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"


def ensure_jars() -> None:
    """Resolve the broker's jars from Maven Central once (idempotent)."""
    if LIB_DIR.is_dir() and any(LIB_DIR.glob("kafka_2.13-*.jar")):
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("Maven (mvn) is needed once to fetch the Kafka jars: apt-get install maven")
    log.info("resolving Kafka jars from Maven Central into %s", LIB_DIR)
    subprocess.run([mvn, "-q", "-B", "-f", str(KAFKA_DIR / "pom.xml"), "dependency:copy-dependencies"], check=True)


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("Java 17+ is needed to run Kafka")
    return java


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as dead.
    try:
        return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0
    except OSError:
        return True


def running_pid(cfg: BrokerConfig) -> int | None:
    try:
        pid = int(cfg.pid_file.read_text())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def new_cluster_id() -> str:
    """16 random bytes in unpadded url-safe base64, like Kafka's Uuid.randomUuid: never starting with '-',
    which the storage tool's command line would read as an option (1 start in 64 failed that way)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _format_storage(cfg: BrokerConfig, props: Path) -> None:
    if (cfg.data_dir / "logs" / "meta.properties").exists():
        return
    cluster_id = new_cluster_id()
    subprocess.run(
        [_java(), "-cp", str(LIB_DIR / "*"), f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}",
         f"-Dkafka.logs.dir={cfg.data_dir}", "kafka.tools.StorageTool", "format",
         "-t", cluster_id, "-c", str(props)],
        check=True, stdout=subprocess.DEVNULL,
    )


def wait_ready(bootstrap: str, timeout_s: float = 60.0) -> None:
    """Wait until the broker answers metadata requests (an open port is not enough)."""
    from kafka import KafkaAdminClient  # local import: kafka-python is heavy to import

    deadline = time.monotonic() + timeout_s
    host, port = bootstrap.rsplit(":", 1)
    # Poll the port cheaply first: kafka-python's own reconnect backoff grows to seconds.
    while not _port_open(int(port)) and time.monotonic() < deadline:
        time.sleep(0.1)
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
            admin.list_topics()
            admin.close()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last_error = exc
            time.sleep(0.3)
    raise TimeoutError(f"Kafka at {bootstrap} not ready after {timeout_s:.0f}s: {last_error}")


def start(cfg: BrokerConfig, timeout_s: float = 90.0) -> tuple[int, float]:
    """Start the broker, or find the one already running. Returns (pid, seconds to ready)."""
    t0 = time.monotonic()
    pid = running_pid(cfg)
    if pid is not None:
        log.info("Kafka already running (pid %d) on %s", pid, cfg.bootstrap)
        wait_ready(cfg.bootstrap, timeout_s)
        return pid, time.monotonic() - t0
    if _port_open(cfg.port):
        raise RuntimeError(f"port {cfg.port} is taken by another process; choose --port")
    ensure_jars()
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    props = cfg.data_dir / "server.properties"
    props.write_text(SERVER_PROPERTIES.format(
        port=cfg.port, controller_port=cfg.controller_port, log_dirs=cfg.data_dir / "logs",
        extra_listeners="".join(f",{name}://127.0.0.1:{port}" for name, port in cfg.extra_listeners),
        extra_protocols="".join(f",{name}:{name}" for name, _port in cfg.extra_listeners),
        extra_properties=cfg.extra_properties,
    ))
    _format_storage(cfg, props)
    cmd = [
        _java(), f"-Xmx{cfg.heap}", f"-Xms{cfg.heap}", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}", f"-Dkafka.logs.dir={cfg.data_dir}",
        "-cp", str(LIB_DIR / "*"), "kafka.Kafka", str(props),
    ]
    with open(cfg.data_dir / "stdout.log", "ab") as out:
        # A new session: the broker outlives this command and ignores the terminal's Ctrl-C.
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    cfg.pid_file.write_text(str(proc.pid))
    try:
        wait_ready(cfg.bootstrap, timeout_s)
    except TimeoutError:
        stop(cfg)
        raise
    elapsed = time.monotonic() - t0
    log.info("Kafka ready on %s in %.1fs (pid %d, log %s)", cfg.bootstrap, elapsed, proc.pid, cfg.log_file)
    return proc.pid, elapsed


def stop(cfg: BrokerConfig, timeout_s: float = 30.0) -> bool:
    """Stop cleanly (SIGTERM lets Kafka flush and close its logs); SIGKILL only as a last resort."""
    pid = running_pid(cfg)
    if pid is None:
        cfg.pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid_alive(pid):
        log.warning("Kafka (pid %d) did not stop in %.0fs; killing it", pid, timeout_s)
        os.kill(pid, signal.SIGKILL)
    try:  # reap it if it is our child (tests)
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    cfg.pid_file.unlink(missing_ok=True)
    return True


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()  # ports this process already returned (with their +1): never twice


def _ephemeral_ports() -> range:
    """The ports the OS gives to outgoing connections (Linux's default when it cannot be read)."""
    try:
        lo, hi = map(int, _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    return range(lo, hi + 1)


def _can_bind(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the broker's listener does
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pair() -> int:
    """A port p such that p and p+1 are free (broker and controller listeners).

    Chosen outside the OS's ephemeral range: a port from inside it (what binding to port 0 returns) can
    be given to any client connection between this check and the broker's bind, and on a busy test run
    one was ("Address already in use" for the controller port; the broker never came up).
    """
    ephemeral = _ephemeral_ports()
    below = range(10_000, ephemeral.start - 1)
    candidates = below if len(below) >= 1000 else range(ephemeral.stop, 65_000)
    for _ in range(200):
        port = random.choice(candidates)
        if port in _handed_out or port + 1 in _handed_out or port - 1 in _handed_out:
            continue
        if _can_bind(port) and _can_bind(port + 1) and not _port_open(port) and not _port_open(port + 1):
            _handed_out.update((port, port + 1))
            return port
    raise RuntimeError(f"no free port pair found in {candidates}")


# ---------------------------------------------------------------- CLI


def config_from_args(args: argparse.Namespace) -> BrokerConfig:
    return BrokerConfig(data_dir=Path(args.data_dir), port=args.port)


def add_broker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=int(os.environ.get("INTENTSTREAM_KAFKA_PORT", DEFAULT_PORT)),
                        help="broker port (controller uses port+1); env INTENTSTREAM_KAFKA_PORT")
    parser.add_argument("--data-dir", default=os.environ.get("INTENTSTREAM_KAFKA_DIR", str(DEFAULT_DATA_DIR)),
                        help="logs, config and pid file; env INTENTSTREAM_KAFKA_DIR")


def _cmd_kafka(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.action == "start":
        pid, elapsed = start(cfg)
        print(f"kafka running: pid {pid}, bootstrap {cfg.bootstrap}, ready in {elapsed:.1f}s, log {cfg.log_file}")
    elif args.action == "stop":
        print("kafka stopped" if stop(cfg) else "kafka was not running")
    elif args.action == "status":
        pid = running_pid(cfg)
        if pid is None:
            print("kafka not running")
            return 1
        print(f"kafka running: pid {pid}, bootstrap {cfg.bootstrap}, port open: {_port_open(cfg.port)}")
    elif args.action == "jars":
        ensure_jars()
        print(f"jars in {LIB_DIR}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kafka", help="run a local single-node Kafka (KRaft) broker")
    p.add_argument("action", choices=["start", "stop", "status", "jars"])
    add_broker_args(p)
    p.set_defaults(func=_cmd_kafka)
