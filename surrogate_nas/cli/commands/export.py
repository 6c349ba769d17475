"""`python -m surrogate_nas export RUN_DIR --point K --out design.keras`: one design of a
run as a Keras model (tables and compensation inside) plus `design.json` for hardware."""

from __future__ import annotations

import argparse
from pathlib import Path

from surrogate_nas.cli.flags import add_path_flags


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write one design of a run as .keras + design.json")
    p.add_argument("run_dir", help="a run folder (with config.json and front.csv)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--point", type=int, help="the K-th point of front.csv (1 = cheapest)")
    which.add_argument("--genome", help="a genome (names or indices, comma-separated)")
    p.add_argument("--out", required=True, help="output .keras file; design.json is written next to it")
    add_path_flags(p, data=True, cache=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from surrogate_nas.cli.flags import paths_from_args
    from surrogate_nas.workflows.export import export_design

    model_path, json_path, accuracy = export_design(paths_from_args(args), Path(args.run_dir), Path(args.out),
                                                    point=args.point, genome=args.genome)
    print(f"{model_path}: accuracy {accuracy:.4f} on the run's search set, identical to the evaluator's")
    print(f"{json_path}: per layer circuit, table SHA-256, compensation, MACs")
    return 0
