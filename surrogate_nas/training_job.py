"""Train, calibrate, measure and save the model with its card (used by `train` and by
the main job when the configured model is missing)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

CALIBRATION_IMAGES = 2000


def calibration_indices(n_train: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 12345)
    return np.sort(rng.choice(n_train, size=min(CALIBRATION_IMAGES, n_train), replace=False))


def train_and_save(
    model_path: Path,
    data_path,
    cache_dir,
    epochs: int,
    seed: int = 0,
    batch_size: int = 128,
    train_images: int | None = None,
    widths=None,
) -> dict:
    import keras
    import tensorflow as tf

    from surrogate_nas import __version__
    from surrogate_nas.data import load_cifar10, make_splits
    from surrogate_nas.evaluate import top1
    from surrogate_nas.model import (
        DEFAULT_WIDTHS,
        build_approx_model,
        build_model,
        calibrate_input_ranges,
        code_histograms,
        conv_info,
    )
    from surrogate_nas.modelcard import write_card
    from surrogate_nas.train import train

    data = load_cifar10(data_path, cache_dir=Path(cache_dir) if cache_dir else None)
    splits = make_splits(data, seed=0)
    x_train, y_train = splits.x_train, splits.y_train
    if train_images:  # a seeded random subset: the splits are ordered by class
        keep = np.sort(np.random.default_rng(seed).permutation(len(x_train))[:train_images])
        x_train, y_train = x_train[keep], y_train[keep]
    widths = tuple(widths or DEFAULT_WIDTHS)
    model = build_model(widths, seed=seed)
    start = time.time()
    history = train(model, x_train, y_train, splits.x_val, splits.y_val, epochs=epochs, batch_size=batch_size, seed=seed)
    train_seconds = time.time() - start

    calib_idx = calibration_indices(len(x_train), seed)
    calib = x_train[calib_idx].astype(np.float32)
    ranges = calibrate_input_ranges(model, calib)
    input_hists, kernel_hists = code_histograms(model, calib, ranges)
    approx = build_approx_model(model, ranges)
    float_test = top1(lambda x: model(x, training=False), splits.x_test, splits.y_test)
    int8_test = top1(lambda x: approx(x, training=False), splits.x_test, splits.y_test)
    float_val = top1(lambda x: model(x, training=False), splits.x_val, splits.y_val)

    model_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = model_path.with_name(model_path.stem + ".tmp.keras")
    model.save(tmp)
    tmp.replace(model_path)
    card = {
        "surrogate_nas_version": __version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "data_source": data.source,
        "data_sha256": data.source_hash,
        "train_images": int(len(x_train)),
        "epochs": epochs,
        "seed": seed,
        "batch_size": batch_size,
        "widths": list(widths),
        "train_seconds": round(train_seconds, 1),
        "final_train_accuracy": float(history.history["accuracy"][-1]),
        "float_val_accuracy": float_val,
        "float_test_accuracy": float_test,
        "int8_exact_test_accuracy": int8_test,
        "macs_per_layer": [info.macs for info in conv_info(model)],
        "conv_layers": [
            {"name": i.name, "input_shape": i.input_shape, "output_shape": i.output_shape, "macs": i.macs}
            for i in conv_info(model)
        ],
        "input_ranges": [list(r) for r in ranges],
        "calibration_indices_sha256": hashlib.sha256(calib_idx.astype(np.int64).tobytes()).hexdigest(),
        "input_code_histograms": [h.tolist() for h in input_hists],
        "kernel_code_histograms": [h.tolist() for h in kernel_hists],
        "weights_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
    }
    write_card(model_path, card)
    return card
