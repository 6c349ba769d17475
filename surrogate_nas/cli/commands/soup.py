"""`python -m surrogate_nas soup DESIGN.keras DESIGN.keras ... --out DIR`: the weight average
of several retrainings of one design (greedy soup on the run's search set)."""

from __future__ import annotations

import argparse
from pathlib import Path

from surrogate_nas.cli.flags import add_path_flags


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("soup", help="average the weights of several retrainings of one design (greedy model soup)")
    p.add_argument("designs", nargs="+", help="retrained designs of one genome (finetune --recipe's design-K.keras, "
                                              "other seeds or schedules), at least two")
    p.add_argument("--out", required=True, help="output folder: soup.keras and its card soup.json")
    add_path_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from surrogate_nas.cli.flags import paths_from_args
    from surrogate_nas.workflows.soup import format_soup, soup_designs

    card = soup_designs(paths_from_args(args), args.designs, Path(args.out))
    print(format_soup(card))
    print(f"-> {Path(args.out) / 'soup.keras'}, {Path(args.out) / 'soup.json'}")
    return 0
