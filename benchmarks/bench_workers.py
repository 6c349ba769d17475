"""Speed-up of local workers: the same genomes scored in this process and on N loky
workers (TensorFlow threads split among them), with identical correct counts required.

Genomes: the first --genomes of a run folder's evaluations (default: the auto headline
run), scored in groups of --group as a search hands them over (early stopping on, at the
run's floor). Times include each worker building its evaluator once (reported apart).

    python benchmarks/bench_workers.py [--workers 2] [--genomes 24] [--group 6]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from surrogate_nas.config import resolve_paths
from surrogate_nas.evaluation.early_stop import (
    StoppingRule,
    score_genomes,
)
from surrogate_nas.evaluation.evaluator import CHUNK
from surrogate_nas.evaluation.workers import (
    EvaluatorSpec,
    JoblibWorkers,
    threads_per_worker,
)
from surrogate_nas.search.config import SearchConfig
from surrogate_nas.workflows.context import Context


def timed(genomes, pool, n, rule, group) -> tuple[list, float]:
    start = time.perf_counter()
    out = []
    for lo in range(0, len(genomes), group):
        out += score_genomes(genomes[lo:lo + group], pool, n, rule, CHUNK)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="experiments/headline/surrogate-b300-auto")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--genomes", type=int, default=24)
    parser.add_argument("--group", type=int, default=6, help="genomes handed over at once (surrogate mode: 5-7)")
    parser.add_argument("--out", default="benchmarks/results/bench_workers.json")
    args = parser.parse_args()
    run = Path(args.run)
    search = json.loads((run / "config.json").read_text())["search"]
    with open(run / "evaluations.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[: args.genomes]
    genomes = [tuple(int(v) for v in r["genome_indices"].split(",")) for r in rows]
    paths = resolve_paths()
    ctx = Context(paths, search["search_images"], None, quiet=True, compensation=search["compensation"])
    ev = ctx.evaluator
    exact = (ctx.exact_index,) * len(ev.layers)
    rule = StoppingRule(ev.accuracy(exact) - SearchConfig().floor_below_exact)
    timed([exact], ctx.pool, ev.n_images, rule, 1)  # trace
    serial, serial_s = timed(genomes, ctx.pool, ev.n_images, rule, args.group)

    spec = EvaluatorSpec(paths, "validation", ev.n_images, 0, ctx.compensation, ctx.approximate, ev.fingerprint,
                         threads_per_worker(args.workers))
    workers = JoblibWorkers(spec, args.workers)
    start = time.perf_counter()
    workers([(exact, lo, lo + 1) for lo in range(args.workers)])  # each worker builds its evaluator
    build_s = time.perf_counter() - start
    parallel, parallel_s = timed(genomes, workers, ev.n_images, rule, args.group)
    assert [(o.correct, o.n_images) for o in parallel] == [(o.correct, o.n_images) for o in serial]
    result = {"run": str(run), "genomes": len(genomes), "group": args.group, "workers": args.workers,
              "threads_per_worker": spec.threads, "serial_s": serial_s, "workers_s": parallel_s,
              "speedup": serial_s / parallel_s, "worker_start_s": build_s,
              "identical_counts": True}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
