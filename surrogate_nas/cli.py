"""Command-line entry point: `python -m surrogate_nas <command>`.

Each command lives in `surrogate_nas.commands.<name>` with a `register(subparsers)`
function; heavy imports (TensorFlow) happen inside the command, so `--help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from surrogate_nas import __version__
from surrogate_nas.errors import UserError

COMMANDS = ("multipliers", "train", "evaluate", "run", "summarize", "compare", "study", "cache")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m surrogate_nas",
        description="Assign approximate 8-bit multipliers to the conv layers of a CNN "
        "(NSGA-II, optionally surrogate-assisted).",
    )
    parser.add_argument("--version", action="version", version=f"surrogate_nas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"surrogate_nas.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"surrogate_nas.commands.{name}":
                continue  # command not implemented in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
