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
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        reason = plain_reason(exc, args)
        if reason is None or args.verbose:  # a bug, or asked for: the traceback
            raise
        print(f"intentstream {args.command}: {reason}", file=sys.stderr)
        return 2


def plain_reason(exc: Exception, args: argparse.Namespace) -> str | None:
    """One line for the failures a user fixes outside the code (no broker, a missing file); None for the rest,
    which keep their traceback."""
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename}"
    errors = sys.modules.get("kafka.errors")  # imported by the command that failed; importing it here is slow
    # kafka-python 2.x raises NoBrokersAvailable when it cannot bootstrap, 3.x a KafkaTimeoutError.
    unreachable = tuple(getattr(errors, name) for name in ("NoBrokersAvailable", "KafkaTimeoutError",
                                                           "KafkaConnectionError") if hasattr(errors, name))
    if unreachable and isinstance(exc, unreachable):
        given = getattr(args, "bootstrap", None)  # None: from INTENTSTREAM_BOOTSTRAP or the default; exc names it
        where = f" at {given}" if given else ""
        return (f"no answer from Kafka{where} ({exc}); a local broker starts with `intentstream kafka start`, "
                "or give --bootstrap")
    return None


if __name__ == "__main__":
    sys.exit(main())
