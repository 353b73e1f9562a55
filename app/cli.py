"""The `kws` command line. It reaches every layer, so it lives in the top one.

Each subcommand lives in its own module ``bnnkws.app.commands.<name>`` exposing
``register(subparsers)`` (builds its argparse parser, sets ``func``) and keeps heavy imports
(TensorFlow, Larq) inside the function that runs it, so ``kws --help`` stays instant.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up chatter (CUDA plugin registration on a CPU machine) buries the
# output users came for; real failures still surface as Python exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Order is the order shown in `kws --help`.
COMMAND_MODULES = [
    "listen",
    "serve",
    "features",
    "data",
    "synth",
    "train",
    "eval",
    "export",
    "bench",
    "bench_stream",
    "deploy",
    "enroll",
    "cl_eval",
    "bench_transfer",
    "bench_enroll",
    "report",
]


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def delta_arg(text: str):
    """argparse type of every ``--delta``: one number, or one per exit (``0.05,0.2,0.6,0.65,0``)."""
    from bnnkws.kws.policy import parse_delta

    try:
        return parse_delta(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kws",
        description=(
            "Keyword spotting with early-exit binary neural networks: train with Bop, "
            "export to Larq Compute Engine, listen live, and enrol new words with CWR*."
        ),
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"bnnkws.app.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bnnkws.app.commands.{name}":
                continue  # subcommand not built yet
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from importlib.metadata import version

        print(version("bnn-kws"))
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        rc = args.func(args)
    except CLIError as exc:
        print(f"kws {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
