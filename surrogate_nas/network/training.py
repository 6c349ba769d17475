"""Train, save and calibrate a model with its card (used by `train`)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf


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
    from surrogate_nas.data.datasets import load_cifar10
    from surrogate_nas.data.splits import make_splits
    from surrogate_nas.network.architectures import DEFAULT_WIDTHS, build_architecture
    from surrogate_nas.network.calibrate import calibrate_model
    from surrogate_nas.network.layers import layer_info

    if data is None:
        data = load_cifar10(data_path, cache_dir=Path(cache_dir) if cache_dir else None)
    splits = make_splits(data, seed=0)
    x_train, y_train = splits.x_train, splits.y_train
    if train_images:  # a seeded random subset: the splits are ordered by class
        keep = np.sort(np.random.default_rng(seed).permutation(len(x_train))[:train_images])
        x_train, y_train = x_train[keep], y_train[keep]
    n_classes = len(getattr(data, "classes", ()) or ()) or int(data.y_train.max()) + 1
    keras.utils.set_random_seed(seed)  # what the builder leaves unseeded (AlexNet's logits layer) draws from it
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


def augment_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
    """Reflect-pad-4 random crops (less for images under 5 pixels) and horizontal flips,
    reshuffled every epoch. Every draw is seeded: the crops and flips come from stateless
    ops fed by a seeded per-image stream (stateful random ops inside a parallel `map`
    draw in thread order, and the same command trained a different model each time)."""
    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    shape = [int(d) for d in x.shape[1:]]
    pad = max(0, min(4, shape[0] - 1, shape[1] - 1))

    def aug(pair, draw):
        img, label = pair
        img = tf.pad(tf.cast(img, tf.float32), [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        img = tf.image.stateless_random_crop(img, shape, seed=draw)
        img = tf.image.stateless_random_flip_left_right(img, seed=draw[::-1])
        return img, label

    ds = tf.data.Dataset.zip((ds, draws)).map(aug, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


@keras.saving.register_keras_serializable(package="surrogate_nas")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak` over the first 15 % of steps, then cosine decay to ~0."""

    def __init__(self, peak: float, total_steps: int, warmup: float = 0.15):
        self.peak = peak
        self.total_steps = total_steps
        self.warmup = warmup

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        total = float(self.total_steps)
        warm = max(1.0, self.warmup * total)
        up = self.peak * step / warm
        progress = tf.clip_by_value((step - warm) / max(1.0, total - warm), 0.0, 1.0)
        down = self.peak * 0.5 * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < warm, up, down)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup": self.warmup}


def train(
    model: keras.Model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    epochs: int,
    batch_size: int = 128,
    peak_lr: float = 0.1,
    weight_decay: float = 5e-4,
    seed: int = 0,
    verbose: int = 1,
) -> keras.callbacks.History:
    keras.utils.set_random_seed(seed)
    steps = (len(x_train) // batch_size) * epochs
    optimizer = keras.optimizers.SGD(
        learning_rate=OneCycle(peak_lr, steps), momentum=0.9, nesterov=True, weight_decay=weight_decay
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
        metrics=["accuracy"],
    )
    n_classes = int(model.output_shape[-1])
    train_ds = augment_dataset(x_train, y_train, batch_size, seed).map(
        lambda i, l: (i, tf.one_hot(l, n_classes))
    )
    val_ds = tf.data.Dataset.from_tensor_slices(
        (x_val.astype(np.float32), keras.utils.to_categorical(y_val, n_classes))
    ).batch(500)
    return model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=verbose)


