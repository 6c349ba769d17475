"""`python -m surrogate_nas run`: the search (surrogate-assisted by default, or full)."""

from __future__ import annotations

import argparse
from pathlib import Path

from surrogate_nas.session import add_path_flags


def add_search_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pop-size", type=int, default=20, help="NSGA-II population size (default 20)")
    p.add_argument("--generations", type=int, default=None, help="stop after this many generations (default: budget only)")
    p.add_argument("--crossover-prob", type=float, default=1.0, help="probability that a mating recombines (default 1.0)")
    p.add_argument("--crossover-eta", type=float, default=3.0, help="SBX distribution index (default 3)")
    p.add_argument("--mutation-prob", type=float, default=0.5, help="per-gene mutation probability (default 0.5)")
    p.add_argument("--mutation-eta", type=float, default=3.0, help="polynomial mutation index (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--search-images", type=int, default=2000, help="validation images scored per genome (default 2000)")
    p.add_argument("--test-images", type=int, default=None, help="test images for the final front (default: all 10,000)")
    p.add_argument("--seed-fraction", type=float, default=0.15, help="surrogate mode: share of the budget for the seed set")
    p.add_argument("--offspring-factor", type=int, default=10, help="surrogate mode: offspring per generation / population")
    p.add_argument("--compensation", default="auto",
                   help="error compensation per layer: none, bias, tune, alwann, tune+bias, or auto "
                        "(per layer and circuit, the method measured best on training images; default)")
    p.add_argument("--accuracy-floor", type=float, default=None,
                   help="accuracy below which a design is of no use, e.g. 0.68: the HV reference, where early "
                        "stopping cuts, and which front points are re-scored (default: all-exact search-set "
                        "accuracy - 15 pp)")
    p.add_argument("--no-early-stop", action="store_true",
                   help="score every search image of every genome, even one shown below the floor")
    p.add_argument("--rescore", default="floor",
                   help="which front points get re-scored on all validation and test images: floor (those at or "
                        "above the accuracy floor; default) or all")
    p.add_argument("--initial", default="exact+random",
                   help="full mode's initial population: exact+random (default) or seed-set (surrogate mode's)")
    p.add_argument("--approximate", default="conv",
                   help="which layers get a multiplier (one gene each): conv (default) or conv+dense")
    p.add_argument("--finetune-top", type=int, default=0,
                   help="fine-tune the K tightest validation-chosen points (0.5, 1, 2, 5 pp) at the end (default 0)")


def add_worker_flags(p: argparse.ArgumentParser) -> None:
    """Where evaluations run; never changes a result, so also allowed with --resume."""
    p.add_argument("--workers", type=int, default=1,
                   help="local worker processes for true evaluations (default 1: in this process)")
    p.add_argument("--dask-scheduler", metavar="ADDRESS",
                   help="run true evaluations on the Dask cluster of this scheduler (e.g. tcp://host:8786)")


def worker_settings(args) -> dict:
    from surrogate_nas.errors import UserError

    if args.workers < 1:
        raise UserError(f"--workers: must be >= 1, got {args.workers}")
    if args.workers > 1 and args.dask_scheduler:
        raise UserError("--workers and --dask-scheduler: give one (a cluster brings its own workers)")
    return {"workers": args.workers, "dask_scheduler": args.dask_scheduler}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="search multiplier assignments with NSGA-II")
    p.add_argument("--mode", default="surrogate", help="surrogate (default) or full (every offspring truly evaluated)")
    p.add_argument("--budget", type=int, default=300, help="distinct genomes with a true accuracy (default 300)")
    add_search_flags(p)
    add_worker_flags(p)
    p.add_argument("--out", default="experiments/runs", help="folder of run folders (default experiments/runs)")
    p.add_argument("--run-id", help="name of the run folder (default: mode, budget, seed and time)")
    p.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted run with its saved configuration")
    p.add_argument("--no-test", action="store_true", help="skip re-scoring the front on the test set")
    add_path_flags(p)
    p.set_defaults(func=run)


def config_from_args(args) -> "SearchConfig":  # noqa: F821
    from surrogate_nas.search import SearchConfig

    return SearchConfig(
        mode=args.mode,
        budget=args.budget,
        pop_size=args.pop_size,
        generations=args.generations,
        crossover_prob=args.crossover_prob,
        crossover_eta=args.crossover_eta,
        mutation_prob=args.mutation_prob,
        mutation_eta=args.mutation_eta,
        seed=args.seed,
        search_images=args.search_images,
        test_images=args.test_images,
        seed_fraction=args.seed_fraction,
        offspring_factor=args.offspring_factor,
        evaluate_test=not getattr(args, "no_test", False),
        compensation=args.compensation,
        approximate=getattr(args, "approximate", "conv"),
        accuracy_floor=args.accuracy_floor,
        early_stop=not args.no_early_stop,
        rescore=args.rescore,
        initial=args.initial,
        finetune_top=getattr(args, "finetune_top", 0),
    )


# Flags that a resumed run takes from its saved configuration instead.
NOT_WITH_RESUME = ("mode", "budget", "pop_size", "generations", "crossover_prob", "crossover_eta", "mutation_prob",
                   "mutation_eta", "seed", "search_images", "test_images", "seed_fraction", "offspring_factor",
                   "compensation", "approximate", "accuracy_floor", "no_early_stop", "rescore", "initial", "finetune_top",
                   "run_id", "no_test")


def ignored_with_resume(args: argparse.Namespace) -> list[str]:
    """The flags given alongside --resume (values other than their defaults), as typed."""
    sub = argparse.ArgumentParser(add_help=False).add_subparsers()
    register(sub)
    run_parser = sub.choices["run"]
    out = []
    for action in run_parser._actions:
        if action.dest in NOT_WITH_RESUME and getattr(args, action.dest, action.default) != action.default:
            value = getattr(args, action.dest)
            out.append(action.option_strings[0] + ("" if isinstance(value, bool) else f" {value}"))
    return out


def run(args: argparse.Namespace) -> int:
    from surrogate_nas.genome import design_names
    from surrogate_nas.runner import Context, execute, load_run_config
    from surrogate_nas.session import paths_from_args

    out_dir = Path(args.out)
    if args.resume:
        config = load_run_config(out_dir / args.resume)
        print(f"resuming {args.resume} with its saved configuration")
        ignored = ignored_with_resume(args)
        if ignored:
            print(f"ignored with --resume (the saved configuration applies): {', '.join(ignored)}")
        run_id = args.resume
    else:
        config = config_from_args(args)
        run_id = args.run_id
    config.validate()
    workers = worker_settings(args)
    ctx = Context(paths_from_args(args), config.search_images, config.test_images, seed=0,
                  compensation=config.compensation, approximate=config.approximate, **workers)
    try:
        result = execute(ctx, config, out_dir, run_id=run_id, resume=bool(args.resume),
                         resume_flag=f"--resume {args.resume}" if args.resume else None)
    finally:
        ctx.close()
    print(f"\nrun {result.run_id}: {len(result.evaluations)} true evaluations "
          f"({result.computed} computed, {result.cache_hits} from cache) in {result.seconds:.0f} s")
    print(f"Pareto front: {len(result.front)} assignments -> {result.run_dir}/front.csv, front.png, report.txt")
    for e in result.front:
        val, test = result.rescored.get(e.genome, (None, None))
        text = "" if val is None else f"  validation {val:.4f}  test {test:.4f}"
        print(f"  energy {e.energy:.3f}  search {e.accuracy:.4f}{text}  "
              f"{', '.join(design_names(e.genome, ctx.catalog, ctx.methods(e.genome)))}")
    return 0
