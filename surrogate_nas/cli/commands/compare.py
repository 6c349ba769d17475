"""`python -m surrogate_nas compare`: surrogate vs full NSGA-II vs random vs Optuna TPE."""

from __future__ import annotations

import argparse
from pathlib import Path

from surrogate_nas.cli.flags import add_path_flags, add_search_flags, add_worker_flags


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare search methods at equal true-evaluation budgets")
    p.add_argument("--seeds", type=int, default=3, help="seeds per method (default 3)")
    p.add_argument("--full-budget", type=int, default=None, help="longer budget for full-mode NSGA-II (e.g. 900)")
    p.add_argument("--methods", default="surrogate,full,random,optuna",
                   help="comma-separated subset of surrogate,full,full-seeded,random,optuna,optuna-gp (full-seeded: "
                        "full mode started from surrogate mode's seed set, the seeding ablation; optuna: TPE; "
                        "optuna-gp: Optuna's multi-objective GPSampler, needs the gp extra)")
    p.add_argument("--only-seed", type=int, default=None,
                   help="run only this seed's methods, without tables (e.g. one seed per machine; then run "
                        "again without it: finished runs come from the cache)")
    p.add_argument("--from-records", action="store_true",
                   help="write the tables from the finished run folders under OUT/runs alone: no model, cache or "
                        "evaluation, on any machine (seeds made on different machine kinds or without a shared cache)")
    p.add_argument("--out", default="experiments/compare", help="output folder (default experiments/compare)")
    add_search_flags(p, skip=("mode",))
    add_worker_flags(p)
    add_path_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from surrogate_nas.cli.flags import (
        config_from_args,
        paths_from_args,
        worker_settings,
    )
    from surrogate_nas.errors import UserError
    from surrogate_nas.experiments.compare import compare, compare_from_records
    from surrogate_nas.experiments.methods import METHODS
    from surrogate_nas.workflows.context import Context

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UserError(f"--methods: unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}")
    for method in [] if args.from_records else methods:  # a missing optional package is refused before any work
        if method.startswith("optuna"):
            from surrogate_nas.experiments.methods import optuna_sampler

            optuna_sampler(method, 0)
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    if args.only_seed is not None and not 0 <= args.only_seed < args.seeds:
        raise UserError(f"--only-seed: must be one of the seeds 0..{args.seeds - 1}, got {args.only_seed}")
    if args.full_budget is not None and args.full_budget < args.budget:
        raise UserError(f"--full-budget ({args.full_budget}) must be at least --budget ({args.budget})")
    if args.from_records and args.only_seed is not None:
        raise UserError("--from-records reads finished runs; --only-seed makes them: give one or the other")
    base = config_from_args(args, mode="surrogate")
    base.validate()
    out = Path(args.out)
    if args.from_records:
        compare_from_records(methods, args.seeds, args.budget, args.full_budget, out, base.evaluate_test)
        print((out / "summary.md").read_text())
        return 0
    workers = worker_settings(args)
    ctx = Context.for_search(paths_from_args(args), base, **workers)
    try:
        compare(ctx, methods, args.seeds, args.budget, args.full_budget, base, out, only_seed=args.only_seed)
    finally:
        ctx.close()
    if args.only_seed is not None:
        print(f"seed {args.only_seed} done; run again without --only-seed to write the tables")
        return 0
    print((out / "summary.md").read_text())
    print(f"plots: {out / 'hv_vs_evaluations.png'}, {out / 'fronts.png'}")
    return 0
