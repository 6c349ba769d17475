"""Cost and benefit of fine-tuning one design through the emulation.

Seconds per epoch of `finetune` on a training subset, as a ratio to a float-model epoch
on the same images (machines here differ up to 3x), and the validation accuracy that a
subset buys against full epochs. Default design: mul8u_DM1 with `bias` compensation in
every conv layer (issue 9's yardstick: ~73 % before, all-exact 83.3 %).

    python benchmarks/bench_finetune.py [--genome ...] [--compensation bias] [--subsets 20000,45000] [--epochs 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import keras
import numpy as np

from surrogate_nas.config import resolve_paths
from surrogate_nas.data.splits import make_splits, training_subset
from surrogate_nas.evaluation.evaluator import Evaluator
from surrogate_nas.evaluation.images import calibration_set, select_images
from surrogate_nas.evaluation.inputs import (
    ensure_model,
    load_catalog_from,
    load_data_from,
)
from surrogate_nas.genome import parse_genome
from surrogate_nas.network.card import read_card
from surrogate_nas.network.training import augment_dataset
from surrogate_nas.workflows.finetune import BATCH, DEFAULT_LR, finetune_design


def float_epoch_seconds(model_path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """One training epoch of the float model on the same images (the speed baseline)."""
    model = keras.models.load_model(model_path, compile=False)
    model.compile(optimizer=keras.optimizers.Adam(1e-5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ds = augment_dataset(x, y, BATCH, 0)
    model.fit(ds.take(2), epochs=1, verbose=0)  # trace
    start = time.perf_counter()
    model.fit(ds, epochs=1, verbose=0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genome", default=",".join(["mul8u_DM1"] * 5))
    parser.add_argument("--compensation", default="bias")
    parser.add_argument("--subsets", default="20000,45000", help="training images per epoch, comma-separated")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"Adam learning rate (default {DEFAULT_LR})")
    args = parser.parse_args()
    paths = resolve_paths()
    catalog = load_catalog_from(paths)
    data = load_data_from(paths)
    model_path = ensure_model(paths)
    card = read_card(model_path)
    splits = make_splits(data, seed=0)
    calibration = calibration_set(splits, data.source_hash, int(card.get("seed", 0)))
    validation = select_images(splits, data.source_hash, "validation", None)
    genome = parse_genome(args.genome, catalog)
    float_model = keras.models.load_model(model_path, compile=False)
    print(f"design {args.genome} ({args.compensation}), {args.epochs} epochs, Adam lr {args.lr}, validation = all "
          f"{len(validation.labels)} images")
    for n in [int(v) for v in args.subsets.split(",")]:
        idx = training_subset(splits.y_train, n, 0)
        base = float_epoch_seconds(model_path, splits.x_train[idx], splits.y_train[idx])
        ev = Evaluator(float_model, card, catalog, validation, compensation=args.compensation, calibration=calibration,
                       rule_store=Path(paths.cache))
        before = ev.accuracy(genome)
        seconds, per_epoch, refit = finetune_design(ev, genome, splits, calibration, epochs=args.epochs, lr=args.lr,
                                                    train_images=n, verbose=0)
        after = ev.accuracy(genome)
        print(f"train images {len(idx)}: {per_epoch:.0f} s per epoch = {per_epoch / base:.1f} float-model epochs "
              f"({base:.1f} s); validation {100 * before:.2f} % -> {100 * after:.2f} %; "
              f"compensation re-fitted: {refit}", flush=True)


if __name__ == "__main__":
    main()
