"""Approximation-aware fine-tuning of chosen designs.

The approximate network of a design (its tables and compensation in the forward pass,
BatchNorm folded, calibrated input ranges kept) is trained for a few epochs on the
training split through the straight-through estimator of `AxConv2D`. Afterwards the
compensation is re-fitted to the new weights (same method per layer), and the network is
re-scored on all validation images and the test set. Hardware is unchanged: the energy
of a design does not move, only its stored weights do.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DEFAULT_EPOCHS = 2
DEFAULT_LR = 5e-4
DEFAULT_TRAIN_IMAGES = 10000
BATCH = 128


@dataclass
class FinetuneResult:
    genome: tuple[int, ...]
    compensation: list[str]
    energy: float
    validation_before: float
    test_before: float
    validation_after: float
    test_after: float
    epochs: int
    train_images: int
    seconds: float
    seconds_per_epoch: float
    model_path: str | None = None

    def row(self, names: list[str]) -> dict:
        out = asdict(self)
        out["genome"] = ";".join(names)
        out["genome_indices"] = ",".join(map(str, self.genome))
        out["compensation"] = ";".join(self.compensation)
        out["energy_saving_pct"] = 100 * (1 - self.energy)
        return out


def training_subset(y: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """A class-stratified subset of the training split (all of it when n is None)."""
    from surrogate_nas.data import search_subset

    if n is None or n >= len(y):
        return np.arange(len(y))
    return np.sort(search_subset(y, size=n, seed=seed + 777))


def refit_compensation(evaluator, genome, methods: list[str], calibration) -> None:
    """Compensation for the new weights: histograms and kernel codes measured again,
    each layer keeping its method."""
    from surrogate_nas.designs import LayerDesigns, channel_code_histograms

    exact = evaluator.catalog.index(evaluator.catalog.exact.name)
    evaluator.set_genome((exact,) * len(evaluator.layers), None)
    hists = channel_code_histograms(evaluator.model, evaluator.layers, calibration.images)
    designs = LayerDesigns(evaluator.layers, evaluator.catalog, "none", hists)
    for i, (layer, index, method) in enumerate(zip(evaluator.layers, genome, methods)):
        entry = evaluator.catalog[int(index)]
        layer.set_multiplier(None if entry.is_exact else entry.lut, compensation=designs.compensation(i, index, method))
    evaluator._current = list(genome)


def finetune_design(evaluator, genome, splits, calibration, epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR,
                    train_images: int | None = DEFAULT_TRAIN_IMAGES, seed: int = 0, verbose: int = 1) -> tuple[float, float]:
    """Train `evaluator.model` in place with `genome`'s designs; returns (seconds,
    seconds per epoch). The evaluator must be private to this design."""
    import keras
    import tensorflow as tf

    from surrogate_nas.train import augment_dataset

    methods = evaluator.design_labels(genome)
    evaluator.set_genome(genome)
    idx = training_subset(splits.y_train, train_images, seed)
    keras.utils.set_random_seed(seed)
    model = evaluator.model
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1))
    ds = augment_dataset(splits.x_train[idx], splits.y_train[idx], BATCH, seed).map(lambda i, l: (i, tf.one_hot(l, 10)))
    start = time.time()
    model.fit(ds, epochs=epochs, verbose=verbose)
    seconds = time.time() - start
    refit_compensation(evaluator, genome, methods, calibration)
    return seconds, seconds / max(1, epochs)


def save_design(evaluator, path: Path, card: dict) -> Path:
    """The fine-tuned approximate network (tables and compensation inside) and its card."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.keras")
    evaluator.model.save(tmp)
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return path
