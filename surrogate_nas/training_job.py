"""Train, save and calibrate a model with its card (used by `train`)."""

from __future__ import annotations

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
    arch: str = "alexnet",
    data=None,
) -> dict:
    """Train `arch` on the data's training split (its image shape and classes), save it,
    and write its card (`calibrate.calibrate_model` plus how it was trained)."""
    from surrogate_nas.calibrate import calibrate_model
    from surrogate_nas.data import load_cifar10, make_splits
    from surrogate_nas.model import DEFAULT_WIDTHS, build_architecture, layer_info
    from surrogate_nas.train import train

    if data is None:
        data = load_cifar10(data_path, cache_dir=Path(cache_dir) if cache_dir else None)
    splits = make_splits(data, seed=0)
    x_train, y_train = splits.x_train, splits.y_train
    if train_images:  # a seeded random subset: the splits are ordered by class
        keep = np.sort(np.random.default_rng(seed).permutation(len(x_train))[:train_images])
        x_train, y_train = x_train[keep], y_train[keep]
    n_classes = len(getattr(data, "classes", ()) or ()) or int(data.y_train.max()) + 1
    model = build_architecture(arch, tuple(int(d) for d in x_train.shape[1:]), n_classes, seed=seed, widths=widths)
    macs = sum(info.macs for info in layer_info(model, "conv+dense"))
    print(f"{arch}: {model.count_params():,} parameters, {macs:,} MACs per image "
          f"({sum(info.macs for info in layer_info(model, 'conv')):,} in conv layers)", flush=True)
    start = time.time()
    history = train(model, x_train, y_train, splits.x_val, splits.y_val, epochs=epochs, batch_size=batch_size, seed=seed)
    train_seconds = time.time() - start

    model_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = model_path.with_name(model_path.stem + ".tmp.keras")
    model.save(tmp)
    tmp.replace(model_path)
    extra = {
        "arch": arch,
        "train_images": int(len(x_train)),
        "epochs": epochs,
        "batch_size": batch_size,
        "train_seconds": round(train_seconds, 1),
        "final_train_accuracy": float(history.history["accuracy"][-1]),
    }
    if arch == "alexnet":
        extra["widths"] = list(widths or DEFAULT_WIDTHS)
    elif widths:
        extra["widths"] = list(widths)
    return calibrate_model(model_path, data, seed=seed, model=model, extra=extra)
