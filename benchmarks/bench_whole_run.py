"""The README's `run --budget 300` timed as a whole command, in float passes.

Runs the command in a child process with a fresh, empty cache (so nothing is reused), and
measures the float model on the same 2,000 search images in this process before and after
it. The run's own log gives its search and re-scoring seconds; the rest is start-up
(TensorFlow, data, model, the shipped auto rule) and writing results. Run it on an idle
machine: load changes emulated and float seconds differently.

    python benchmarks/bench_whole_run.py [--budget 300] [--seed 0]
        [--reference experiments/headline/seeds/surrogate-b300-s0]
        [--out benchmarks/results/bench_whole_run]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_early_stop import float_pass_seconds

from surrogate_nas.config import resolve_paths
from surrogate_nas.emulation.ops import cpu_vector_isa
from surrogate_nas.workflows.context import Context

TIMES = re.compile(r"search (\d+) s, re-scoring (\d+) s")


def float_pass(reference: Path) -> float:
    """Float model on the search set of `reference` (a run made with the same model, data
    and search-set settings as the timed one), best of three."""
    ctx, _ = Context.from_run(reference, resolve_paths(), quiet=True)
    return float_pass_seconds(ctx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", default="experiments/headline/seeds/surrogate-b300-s0",
                        help="a run folder with the default settings, for the float pass's images")
    parser.add_argument("--out", default="benchmarks/results/bench_whole_run")
    args = parser.parse_args()
    reference = Path(args.reference)
    before = float_pass(reference)
    with tempfile.TemporaryDirectory(prefix="whole-run-") as tmp:
        command = [sys.executable, "-m", "surrogate_nas", "run", "--budget", str(args.budget), "--seed",
                   str(args.seed), "--cache", str(Path(tmp) / "cache"), "--out", tmp, "--run-id", "timed"]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        header = (Path(tmp) / "timed" / "report.txt").read_text().splitlines()[0]
        summary = json.loads((Path(tmp) / "timed" / "summary.json").read_text())
    after = float_pass(reference)
    search_s, rescore_s = (float(v) for v in TIMES.search(header).groups())
    fp = (before + after) / 2
    result = {
        "command": f"python -m surrogate_nas run --budget {args.budget} --seed {args.seed} (fresh cache)",
        "machine": f"{os.cpu_count()} cores, {cpu_vector_isa()}, {platform.processor() or platform.machine()}",
        "float_pass_s_before": before, "float_pass_s_after": after,
        "wall_s": wall, "search_s": search_s, "rescore_s": rescore_s,
        "other_s": wall - search_s - rescore_s,
        "float_passes": {"whole": wall / fp, "search": search_s / fp, "rescore": rescore_s / fp,
                         "other": (wall - search_s - rescore_s) / fp,
                         "per_true_evaluation": search_s / fp / summary["true_evaluations"]},
        "true_evaluations": summary["true_evaluations"],
        "stopped_early": summary["stopped_early"],
        "chosen": summary["chosen"],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    fps = result["float_passes"]
    lines = [
        f"# python benchmarks/bench_whole_run.py --budget {args.budget} --seed {args.seed}",
        f"# {time.strftime('%Y-%m-%d')}, {result['machine']}",
        f"float pass (2,000 search images): {before:.3f} s before, {after:.3f} s after",
        f"whole command: {wall:.0f} s = {fps['whole']:.0f} float passes",
        f"  search:     {search_s:.0f} s = {fps['search']:.0f} float passes "
        f"({fps['per_true_evaluation']:.1f} per true evaluation, {result['true_evaluations']} evaluations, "
        f"{result['stopped_early']} stopped early)",
        f"  re-scoring: {rescore_s:.0f} s = {fps['rescore']:.0f} float passes",
        f"  other:      {result['other_s']:.0f} s = {fps['other']:.0f} float passes (start-up, rule, writing)",
    ]
    out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
