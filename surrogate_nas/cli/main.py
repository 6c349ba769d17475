"""Command-line entry point: `python -m surrogate_nas <command>`.

Each command lives in `surrogate_nas.cli.commands.<name>` with a `register(subparsers)`
function; heavy imports (TensorFlow) happen inside the command, so `--help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from surrogate_nas import __version__
from surrogate_nas.errors import UserError

# Commands that run TensorFlow; it is imported first with its start-up chatter muted.
TF_COMMANDS = ("train", "calibrate", "evaluate", "run", "compare", "study", "finetune", "soup", "export", "design")


def import_tensorflow_quietly() -> None:
    """TensorFlow's C++ start-up lines (oneDNN notice, CPU features; 6 lines in 2.21) go to
    file descriptor 2 at import, before any log level applies: mute them, so that a run's
    stderr holds only what this program says (an error is one line). Python errors raised
    by the import are still shown."""
    if "tensorflow" in sys.modules:
        return
    try:
        saved = os.dup(2)
    except OSError:
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            sys.stderr.flush()
            os.dup2(devnull, 2)
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(devnull)
    finally:
        os.close(saved)


COMMANDS = ("multipliers", "train", "calibrate", "evaluate", "run", "summarize", "finetune", "soup", "export", "design", "compare", "study", "cache")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (`error: ...`), like every other error."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog.split()[-1]}: {message} "
                     f"(see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m surrogate_nas",
        description="Assign approximate 8-bit multipliers to the conv (and dense) layers of any Keras CNN "
        "(NSGA-II, optionally surrogate-assisted).",
    )
    parser.add_argument("--version", action="version", version=f"surrogate_nas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"surrogate_nas.cli.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"surrogate_nas.cli.commands.{name}":
                continue  # command not implemented in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a flag argparse rejected (already printed)
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if args.command in TF_COMMANDS:
            import_tensorflow_quietly()
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, whatever the message holds
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
