"""Seconds of one float pass: the float AlexNet on 2,000 images (the search set's size) in
250-image predict calls, best of 3 -- the unit in which README.md states run times.
Conv cost does not depend on pixel values, so random images stand in for the search set.

    python experiments/library/float_pass.py [MODEL]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np


def main(model_path: str = "models/alexnet_cifar10.keras") -> None:
    import keras
    import tensorflow as tf

    model = keras.models.load_model(model_path, compile=False)
    shape = list(model.input_shape[1:])
    fn = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec([None, *shape])])
    images = np.random.default_rng(0).random((2000, *shape), dtype=np.float32)
    fn(tf.constant(images[:250]))
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        for lo in range(0, len(images), 250):
            np.asarray(fn(tf.constant(images[lo:lo + 250])))
        best = min(best, time.perf_counter() - start)
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"{time.strftime('%H:%M:%S')} float pass {best:.3f} s (load average {load})")


if __name__ == "__main__":
    main(*sys.argv[1:])
