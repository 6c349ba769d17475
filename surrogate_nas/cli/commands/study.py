"""`python -m surrogate_nas study FILE...`: run parameter studies from TOML files."""

from __future__ import annotations

import argparse
from pathlib import Path

from surrogate_nas.cli.flags import add_path_flags, add_worker_flags


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="run NSGA-II parameter studies (one TOML file each), full and surrogate mode")
    p.add_argument("files", nargs="+", help="study files, e.g. experiments/studies/*.toml")
    p.add_argument("--out", default="experiments/studies/results", help="output folder")
    p.add_argument("--budget", type=int, default=None, help="override every study's budget (e.g. a quick run)")
    p.add_argument("--search-images", type=int, default=None, help="override the search-set size")
    p.add_argument("--test-images", type=int, default=None, help="test images for the fronts (default: all)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--compensation", default="auto", help="error compensation (see `run --help`; default auto)")
    add_worker_flags(p)
    add_path_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from surrogate_nas.cli.flags import paths_from_args, worker_settings
    from surrogate_nas.errors import UserError
    from surrogate_nas.evaluation.inputs import load_data_from
    from surrogate_nas.experiments.study import run_studies, study_configs
    from surrogate_nas.workflows.context import Context, check_image_counts

    workers = worker_settings(args)
    files = [Path(f) for f in args.files]
    overrides = {"compensation": args.compensation, "budget": args.budget, "search_images": args.search_images,
                 "test_images": args.test_images, "seed": args.seed}
    studies = study_configs(files, overrides)  # validate every file and flag before any work
    paths = paths_from_args(args)
    data = load_data_from(paths)  # and every study's image counts, before the first run
    for path, (_, _, config) in zip(files, studies):
        try:
            check_image_counts(data, config.search_images, config.test_images)
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from None
    del data

    def make_context(config) -> Context:
        return Context.for_search(paths, config, **workers)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_studies(make_context, files, out, overrides)
    print((out / "summary.md").read_text())
    return 0
