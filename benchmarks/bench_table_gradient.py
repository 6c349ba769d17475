"""What the table gradient costs per training step, against the straight-through estimator
and the float model, measured in one process in alternating rounds so that the machine's
load falls on all three alike (machines here differ up to 3x: only ratios are reported).

    python benchmarks/bench_table_gradient.py [--genome ...] [--compensation tune] [--rank 8] [--steps 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np

from surrogate_nas.config import resolve_paths
from surrogate_nas.data.splits import make_splits, training_subset
from surrogate_nas.emulation.ops import cpu_vector_isa
from surrogate_nas.evaluation.evaluator import Evaluator
from surrogate_nas.evaluation.images import calibration_set, select_images
from surrogate_nas.evaluation.inputs import ensure_model, load_catalog_from, load_data_from
from surrogate_nas.genome import parse_genome
from surrogate_nas.network.card import read_card
from surrogate_nas.network.retraining import BATCH

Q45 = "mul8u_19DB,mul8u_185Q,mul8u_185Q,mul8u_PKY,mul8u_185Q"


def compiled(model):
    model.compile(optimizer=keras.optimizers.Adam(1e-5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def seconds_per_step(model, x, y, steps: int) -> float:
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genome", default=Q45)
    parser.add_argument("--compensation", default="tune")
    parser.add_argument("--rank", type=int, default=8, help="error components differentiated (default 8)")
    parser.add_argument("--steps", type=int, default=8, help="training steps per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_table_gradient.json"))
    args = parser.parse_args()
    paths = resolve_paths()
    catalog, data, model_path = load_catalog_from(paths), load_data_from(paths), ensure_model(paths)
    card = read_card(model_path)
    splits = make_splits(data, seed=0)
    idx = training_subset(splits.y_train, args.steps * BATCH, 0)
    x, y = splits.x_train[idx].astype(np.float32), splits.y_train[idx]
    calibration = calibration_set(splits, data.source_hash, int(card.get("seed", 0)))
    validation = select_images(splits, data.source_hash, "validation", 500)

    float_model = compiled(keras.models.load_model(model_path, compile=False))
    variants = {"float": float_model}
    genome = parse_genome(args.genome, catalog)
    for name, rank in (("ste", None), ("table", args.rank)):
        ev = Evaluator(keras.models.load_model(model_path, compile=False), card, catalog, validation,
                       compensation=args.compensation, calibration=calibration, rule_store=Path(paths.cache))
        ev.set_genome(genome)
        for layer in ev.layers:
            layer.set_table_gradient(rank)
        variants[name] = compiled(ev.model)
    for model in variants.values():
        seconds_per_step(model, x[:BATCH], y[:BATCH], 1)  # trace
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, model in variants.items():
            times[name].append(seconds_per_step(model, x, y, args.steps))
    med = {name: float(np.median(t)) for name, t in times.items()}
    doc = {"genome": args.genome, "compensation": args.compensation, "rank": args.rank, "batch": BATCH,
           "steps": args.steps, "rounds": args.rounds, "cpu": cpu_vector_isa(),
           "seconds_per_step_median": med, "ste_over_float": med["ste"] / med["float"],
           "table_over_float": med["table"] / med["float"], "table_over_ste": med["table"] / med["ste"]}
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"per step (median of {args.rounds}): float {med['float']:.3f} s, STE {med['ste']:.3f} s "
          f"({doc['ste_over_float']:.1f}x float), table gradient rank {args.rank} {med['table']:.3f} s "
          f"({doc['table_over_float']:.1f}x float, {doc['table_over_ste']:.2f}x STE) -> {args.out}")


if __name__ == "__main__":
    main()
