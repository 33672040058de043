"""Operator commands: deploy, rollback, forget, status (docs/operations.md).

Defaults come from the same INTENTSTREAM_* environment as the workers (bootstrap, control and erasure
topics, registry dir, pseudonymization key, Kafka security), so an operator shell configured like the
workers needs no flags.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import urllib.request
from pathlib import Path

from .settings import client_security, settings_from_env

log = logging.getLogger(__name__)


def _settings(args: argparse.Namespace):
    names = ("bootstrap", "app_id", "partitions", "control_topic", "erasure_topic", "registry_dir")
    overrides = {k: getattr(args, k, None) for k in names}
    return settings_from_env(**overrides)


def _ensure_control_topic(settings) -> None:
    from .topics import ensure_topics

    ensure_topics(settings.bootstrap, {settings.control_topic_name: 1})


def _describe(stack) -> str:
    return stack[-1].version if stack else "the workers' own --model (nothing deployed)"


def run_deploy(args: argparse.Namespace) -> int:
    from models.artifacts import ArtifactError

    from . import control

    settings = _settings(args)
    try:
        ref = control.register_artifact(Path(args.model), settings.registry_dir)
    except ArtifactError as exc:
        print(f"deploy refused: {exc}", file=sys.stderr)
        return 1
    _ensure_control_topic(settings)
    control.publish(settings.bootstrap, settings.control_topic_name, control.deploy_message(ref), settings.extra)
    print(f"deployed {ref.version} from {ref.path} on {settings.control_topic_name}; workers switch between batches")
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    from . import control

    settings = _settings(args)
    _ensure_control_topic(settings)
    stack = control.replay(control.read_messages(settings.bootstrap, settings.control_topic_name, settings.extra))
    if not stack:
        print("rollback: nothing deployed on " + settings.control_topic_name, file=sys.stderr)
        return 1
    control.publish(settings.bootstrap, settings.control_topic_name, control.rollback_message(), settings.extra)
    print(f"rolled back {stack[-1].version} -> {_describe(stack[:-1])}")
    return 0


def run_forget(args: argparse.Namespace) -> int:
    from kafka import KafkaProducer

    from .privacy import erasure_request, pseudonymizer_from_key
    from .topics import ensure_topics

    settings = _settings(args)
    if not settings.erasure_topic_name:
        print("forget: no erasure topic configured (INTENTSTREAM_ERASURE_TOPIC is empty)", file=sys.stderr)
        return 1
    ensure_topics(settings.bootstrap, {settings.erasure_topic_name: settings.partitions})
    pseudonymizer = pseudonymizer_from_key(settings.pseudonym_key)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", **client_security(settings.extra))
    try:
        # The erasure topic has the source topics' partition count; ask the broker, not the local config.
        n_partitions = len(producer.partitions_for(settings.erasure_topic_name))
        partition, key, value = erasure_request(args.user, pseudonymizer, n_partitions)
        producer.send(settings.erasure_topic_name, key=key, value=value, partition=partition).get(timeout=30)
    finally:
        producer.close()
    shown = key.decode() if pseudonymizer else "(user id as given)"
    print(f"erasure requested for {shown} on {settings.erasure_topic_name}/{partition}; the owning worker deletes the "
          "state and its changelog record")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from . import control

    settings = _settings(args)
    if args.worker:
        with urllib.request.urlopen(args.worker.rstrip("/") + "/status", timeout=10) as r:
            print(json.dumps(json.loads(r.read()), indent=2))
        return 0
    _ensure_control_topic(settings)
    stack = control.replay(control.read_messages(settings.bootstrap, settings.control_topic_name, settings.extra))
    print(f"control topic {settings.control_topic_name}: serving {_describe(stack)}")
    for depth, ref in enumerate(reversed(stack)):
        print(f"  {'*' if depth == 0 else ' '} {ref.version}  {ref.path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bootstrap", help="Kafka bootstrap servers (env INTENTSTREAM_BOOTSTRAP)")
        p.add_argument("--app-id", dest="app_id", help="the workers' app id (env INTENTSTREAM_APP_ID)")
        p.add_argument("--control-topic", dest="control_topic", help="(env INTENTSTREAM_CONTROL_TOPIC)")
        p.add_argument("--registry-dir", dest="registry_dir", type=Path, help="(env INTENTSTREAM_REGISTRY_DIR)")

    p = sub.add_parser("deploy", help="verify a model artifact, copy it to the registry, switch all workers to it")
    p.add_argument("model", type=Path, help="model artifact directory (weights.safetensors + meta.json)")
    common(p)
    p.set_defaults(func=run_deploy)

    p = sub.add_parser("rollback", help="switch all workers back to the previously deployed model")
    common(p)
    p.set_defaults(func=run_rollback)

    p = sub.add_parser("forget", help="erase a user's state (table and changelog); uses INTENTSTREAM_PSEUDONYM_KEY")
    p.add_argument("user", help="the user id as producers send it (clear, not the pseudonym)")
    p.add_argument("--bootstrap")
    p.add_argument("--app-id", dest="app_id", help="the workers' app id (env INTENTSTREAM_APP_ID)")
    p.add_argument("--partitions", type=int, help="if the erasure topic must be created (env INTENTSTREAM_PARTITIONS)")
    p.add_argument("--erasure-topic", dest="erasure_topic", help="(env INTENTSTREAM_ERASURE_TOPIC)")
    p.set_defaults(func=run_forget)

    p = sub.add_parser("status", help="the deployed model stack, or a worker's /status with --worker URL")
    common(p)
    p.add_argument("--worker", help="a worker's web address, e.g. http://127.0.0.1:6066")
    p.set_defaults(func=run_status)
