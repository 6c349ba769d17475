"""Shared-prefix activation reuse (evaluation.prefix) on a finished run's genomes: the
same predictions as its cached per-image records, and the time it saves.

Replays `--genomes` true evaluations of a run in order (from `--start`), each on the images
the run scored for it, twice per genome and interleaved (so both see the same load):
whole network every batch, then the staged network with kept activations (which carry
over from genome to genome as in the run). Every prediction of the staged pass is
compared with the run's per-image record. Seconds are also stated in float passes
(the float model on the search set, measured in this process).

    python benchmarks/bench_prefix.py --run experiments/headline/seeds/surrogate-b300-s0 [--start 0] [--genomes 100]
        [--out benchmarks/results/bench_prefix]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
from bench_early_stop import float_pass_seconds
from tqdm import tqdm

from surrogate_nas.config import resolve_paths
from surrogate_nas.evaluation.prefix import ActivationCache, budget_bytes, model_stages
from surrogate_nas.workflows.context import Context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished run folder, its cache at --cache")
    parser.add_argument("--start", type=int, default=0,
                        help="skip this many first genomes (kept activations then start empty: fewer reuses than the run had)")
    parser.add_argument("--genomes", type=int, default=100)
    parser.add_argument("--out", default="benchmarks/results/bench_prefix")
    args = parser.parse_args()
    run = Path(args.run)
    rows = [r for r in csv.DictReader(open(run / "evaluations.csv", newline=""))]
    ctx, _ = Context.from_run(run, resolve_paths(), quiet=True)
    ev = ctx.evaluator
    if ev.fingerprint != json.loads((run / "config.json").read_text())["fingerprint"]:
        raise SystemExit(f"{run}: its evaluator differs from this one; cannot replay")
    seen, plan = set(), []
    for r in rows:
        genome = tuple(int(v) for v in r["genome_indices"].split(","))
        if genome not in seen:
            seen.add(genome)
            plan.append((genome, int(r["n_images"])))
    plan = plan[args.start:args.start + args.genomes]
    records = ctx.cache.get_many(ev.fingerprint, [g for g, _ in plan])
    kept = ActivationCache(model_stages(ev.model, ev.layers), budget_bytes())
    float_s = float_pass_seconds(ctx)
    ev.activations = None
    ev.correct(plan[0][0], 0, 250)  # trace both paths before timing
    ev.activations = kept
    ev.correct(plan[0][0], 0, 250)
    kept.clear()
    whole_s, staged_s, differ, images = [], [], 0, 0
    for genome, n in tqdm(plan, desc="replay", unit="genome"):
        ev.activations = None
        right_whole, t_whole = ev.correct(genome, 0, n)
        ev.activations = kept
        right, t = ev.correct(genome, 0, n)
        whole_s.append(t_whole)
        staged_s.append(t)
        recorded = records[genome].correct()[:n]
        differ += int(np.sum(right != recorded)) + int(np.sum(right_whole != recorded))
        images += n
    result = {
        "run": str(run), "start": args.start, "genomes": len(plan), "images": images, "budget_mb": kept.max_bytes / 2**20,
        "stages": len(kept.stages), "stages_run": kept.stages_run, "stages_reused": kept.stages_reused,
        "predictions_differing_from_the_records": differ,
        "float_pass_s": float_s, "whole_s": float(np.sum(whole_s)), "staged_s": float(np.sum(staged_s)),
        "float_passes_per_evaluation": {"whole": float(np.sum(whole_s)) / float_s / len(plan),
                                        "staged": float(np.sum(staged_s)) / float_s / len(plan)},
    }
    result["saving"] = 1 - result["staged_s"] / result["whole_s"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    fp = result["float_passes_per_evaluation"]
    lines = [
        f"# python benchmarks/bench_prefix.py --run {run} --start {args.start} --genomes {args.genomes}",
        f"# {time.strftime('%Y-%m-%d')}; whole and staged passes interleaved per genome",
        f"{len(plan)} genomes, {images} images, {len(kept.stages)} stages, budget {result['budget_mb']:.0f} MB",
        f"predictions differing from the run's records: {differ}",
        f"whole network: {result['whole_s']:.1f} s = {fp['whole']:.2f} float passes per evaluation",
        f"with kept activations: {result['staged_s']:.1f} s = {fp['staged']:.2f} float passes per evaluation "
        f"({100 * result['saving']:.1f} % less; {kept.stages_reused} of "
        f"{kept.stages_reused + kept.stages_run} stage runs reused)",
        f"float pass {float_s:.3f} s",
    ]
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
