"""`intentstream` command line: one entry point, subcommands registered by the modules that own them.

Each module in COMMAND_MODULES has `register(subparsers)`, adding its subcommands with
`set_defaults(func=...)`; heavy imports (torch, faust) happen inside the command functions so
`intentstream --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMAND_MODULES = (
    "deploy.kafka.local_broker",
    "streams.commands",
    "streams.ops_cli",
    "streams.replay",
    "models.data_cli",
    "models.model_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="intentstream", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kafka-python and aiokafka log every connection attempt at INFO.
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
