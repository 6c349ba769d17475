"""`python -m surrogate_nas run`: the search (surrogate-assisted by default, or full)."""

from __future__ import annotations

import argparse
from pathlib import Path

from surrogate_nas.cli.flags import (
    add_path_flags,
    add_search_flags,
    add_worker_flags,
    config_from_args,
    worker_settings,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="search multiplier assignments with NSGA-II")
    add_search_flags(p)
    add_worker_flags(p)
    p.add_argument("--out", default="experiments/runs", help="folder of run folders (default experiments/runs)")
    p.add_argument("--run-id", help="name of the run folder (default: mode, budget, seed and time)")
    p.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted run with its saved configuration")
    add_path_flags(p)
    p.set_defaults(func=run)


def not_with_resume() -> tuple[str, ...]:
    """Flags that a resumed run takes from its saved configuration instead: every setting."""
    from dataclasses import fields

    from surrogate_nas.search.config import SearchConfig

    return (*(f.name for f in fields(SearchConfig)), "run_id")


def ignored_with_resume(args: argparse.Namespace) -> list[str]:
    """The flags given alongside --resume (values other than their defaults), as typed."""
    sub = argparse.ArgumentParser(add_help=False).add_subparsers()
    register(sub)
    run_parser = sub.choices["run"]
    out = []
    for action in run_parser._actions:
        if action.dest in not_with_resume() and getattr(args, action.dest, action.default) != action.default:
            value = getattr(args, action.dest)
            out.append(action.option_strings[0] + ("" if isinstance(value, bool) else f" {value}"))
    return out


def run(args: argparse.Namespace) -> int:
    from surrogate_nas.cli.flags import paths_from_args
    from surrogate_nas.errors import UserError
    from surrogate_nas.genome import design_names
    from surrogate_nas.results.run_folder import RunFolder
    from surrogate_nas.workflows.context import Context
    from surrogate_nas.workflows.run import execute
    from surrogate_nas.workflows.run_folder import (
        load_run_config,
        new_run_id,
        write_pending_record,
    )

    out_dir = Path(args.out)
    workers = worker_settings(args)
    if args.resume:
        load_run_config(out_dir / args.resume)  # a clear error for a folder that is no run, before anything loads
        print(f"resuming {args.resume} with its saved configuration")
        ignored = ignored_with_resume(args)
        if ignored:
            print(f"ignored with --resume (the saved configuration applies): {', '.join(ignored)}")
        run_id = args.resume
        ctx, config = Context.from_run(out_dir / args.resume, paths_from_args(args), **workers)
    else:
        config = config_from_args(args)
        config.validate()
        run_id = args.run_id or new_run_id(config)
        if RunFolder(out_dir / run_id).exists():
            raise UserError(f"--run-id {run_id}: {out_dir / run_id} already exists (use --resume {run_id} to continue it)")
        # recorded before anything expensive: a kill from here on is continued by --resume
        write_pending_record(out_dir / run_id, config, run_id, paths_from_args(args))
        print(f"run {run_id} in {out_dir}: an interrupted run continues with "
              f"`python -m surrogate_nas run --resume {run_id} --out {out_dir}`", flush=True)
        try:
            ctx = Context.for_search(paths_from_args(args), config, **workers)
        except UserError:  # a mistake, not a kill: leave nothing behind
            RunFolder(out_dir / run_id).discard_pending()
            raise
    try:
        result = execute(ctx, config, out_dir, run_id=run_id, resume=True,
                         resume_flag=f"--resume {args.resume}" if args.resume else f"--run-id {run_id}")
    except UserError:  # a mistake found while building the evaluator: leave no half-made run
        RunFolder(out_dir / run_id).discard_pending()
        raise
    finally:
        ctx.close()
    print(f"\nrun {result.run_id}: {len(result.evaluations)} true evaluations "
          f"({result.computed} computed, {result.cache_hits} from cache) in {result.seconds:.0f} s")
    print(f"Pareto front: {len(result.front)} assignments -> {result.run_dir}/front.csv, front.png, report.txt")
    for e in result.front:
        val, test = result.rescored.get(e.genome, (None, None))
        text = "" if val is None else f"  validation {val:.4f}  test {'-' if test is None else f'{test:.4f}'}"
        print(f"  energy {e.energy:.3f}  search {e.accuracy:.4f}{text}  "
              f"{', '.join(design_names(e.genome, ctx.catalog, ctx.methods(e.genome)))}")
    return 0
