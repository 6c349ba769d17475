"""Early stopping against full evaluations: images and seconds it saves, and whether it
ever stopped a genome a full evaluation puts at or above the floor (or on the front).

Re-scores every genome of a finished run folder (default: the auto headline run) with
the staged rule, and compares with that run's full accuracies. Genomes that are not
stopped are scored on every image, and their correct counts are compared with the run's
(scored then in another order and batch size). For the stopped ones, a sample is also
scored in full, to time what stopping saved and to compare counts too. Seconds are stated in float
passes: the float model on the same images, measured in this process.

    python benchmarks/bench_early_stop.py [--run experiments/headline/surrogate-b300-auto]
        [--full-sample 30] [--out benchmarks/results/bench_early_stop]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from surrogate_nas.config import resolve_paths
from surrogate_nas.evaluation.early_stop import (
    CONFIDENCE,
    LOOKS,
    StoppingRule,
    score_genomes,
)
from surrogate_nas.evaluation.evaluator import CHUNK
from surrogate_nas.search.config import SearchConfig
from surrogate_nas.workflows.context import Context


def float_pass_seconds(ctx, repeats: int = 3) -> float:
    import keras

    model = keras.models.load_model(ctx.model_path, compile=False)
    shape = list(model.input_shape[1:])
    fn = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec([None, *shape])])
    images = ctx.evaluator._images
    fn(tf.constant(images[:CHUNK]))
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for lo in range(0, len(images), CHUNK):
            np.asarray(fn(tf.constant(images[lo:lo + CHUNK])))
        best = min(best, time.perf_counter() - start)
    return float(best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="experiments/headline/surrogate-b300-auto")
    parser.add_argument("--full-sample", type=int, default=30, help="stopped genomes also timed in full")
    parser.add_argument("--out", default="benchmarks/results/bench_early_stop")
    args = parser.parse_args()
    run = Path(args.run)
    config = json.loads((run / "config.json").read_text())
    search = config["search"]
    with open(run / "evaluations.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    genomes = [tuple(int(v) for v in r["genome_indices"].split(",")) for r in rows]
    full_acc = {g: float(r["accuracy"]) for g, r in zip(genomes, rows)}

    ctx = Context(resolve_paths(), search["search_images"], None, quiet=True, compensation=search["compensation"])
    if ctx.evaluator.fingerprint != config["fingerprint"]:
        raise SystemExit(f"{run}: its evaluator differs from the configured one; cannot compare")
    n = ctx.evaluator.n_images
    exact = (ctx.exact_index,) * len(ctx.evaluator.layers)
    floor = full_acc[exact] - SearchConfig().floor_below_exact
    rule = StoppingRule(floor)
    count = ctx.pool
    float_s = float_pass_seconds(ctx)
    score_genomes([exact], count, n, StoppingRule(None), CHUNK)  # trace

    out_rows = []
    for g in tqdm(genomes, desc="staged", unit="genome"):
        (o,) = score_genomes([g], count, n, rule, CHUNK)
        out_rows.append({"genome": ",".join(map(str, g)), "full_accuracy": full_acc[g], "stopped": int(o.stopped),
                         "images": o.n_images, "partial_accuracy": o.accuracy, "staged_s": o.seconds,
                         "full_s": o.seconds if not o.stopped else None,
                         "cached_correct": round(full_acc[g] * n), "full_correct_now": o.correct if not o.stopped else None})
    stopped = [r for r in out_rows if r["stopped"]]
    rng = np.random.default_rng(0)
    for r in tqdm([stopped[i] for i in rng.permutation(len(stopped))[: args.full_sample]], desc="full (sample)"):
        g = tuple(int(v) for v in r["genome"].split(","))
        (o,) = score_genomes([g], count, n, StoppingRule(None), CHUNK)
        r["full_s"], r["full_correct_now"] = o.seconds, o.correct

    # The verdict: no stopped genome is at or above the floor, or on the run's front.
    front = [tuple(int(v) for v in r["genome_indices"].split(","))
             for r in csv.DictReader(open(run / "front.csv", newline=""))]
    wrong = [r for r in stopped if r["full_accuracy"] >= floor]
    on_front = [r for r in stopped if tuple(int(v) for v in r["genome"].split(",")) in front]
    near_chance = [r for r in out_rows if r["full_accuracy"] < 0.2]
    staged = np.array([r["staged_s"] for r in out_rows])
    timed_stopped = [r for r in stopped if r["full_s"] is not None]
    # full cost of the stopped genomes not timed in full: their sample's mean full/staged ratio
    ratio = np.mean([r["full_s"] / r["staged_s"] for r in timed_stopped]) if timed_stopped else np.nan
    full_est = np.array([r["full_s"] if r["full_s"] is not None else r["staged_s"] * ratio for r in out_rows])
    # The run scored its images in another order and batches of 500: a prediction can only
    # change where two logits tie to float32 rounding. Count where that changed a result.
    rescored = [r for r in out_rows if r["full_correct_now"] is not None]
    differ = [r for r in rescored if r["full_correct_now"] != r["cached_correct"]]
    summary = {
        "run": str(run), "genomes": len(out_rows), "search_images": n, "floor": floor,
        "rule": {"looks": list(LOOKS), "confidence": CONFIDENCE, "shard": CHUNK},
        "stopped": len(stopped), "stopped_at_or_above_floor": len(wrong), "stopped_on_front": len(on_front),
        "front_points_at_or_above_floor": sum(full_acc[g] >= floor for g in front),
        "near_chance_genomes": len(near_chance),
        "near_chance_images_median": float(np.median([r["images"] for r in near_chance])) if near_chance else None,
        "images_mean": float(np.mean([r["images"] for r in out_rows])),
        "float_pass_s": float_s,
        "staged_s_mean": float(staged.mean()), "staged_float_passes_mean": float(staged.mean() / float_s),
        "full_s_mean_est": float(full_est.mean()), "full_float_passes_mean_est": float(full_est.mean() / float_s),
        "full_timed_stopped_sample": len(timed_stopped),
        "full_counts_compared_with_the_run": len(rescored),
        "full_counts_differing": [{"genome": r["genome"], "run": r["cached_correct"], "now": r["full_correct_now"]}
                                  for r in differ],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(out_rows[0]))
        writer.writeheader()
        writer.writerows(out_rows)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
