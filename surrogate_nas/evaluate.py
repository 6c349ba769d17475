"""True evaluation of a genome: top-1 accuracy of the approximate network."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

EVAL_BATCH = 500


def top1(predict, images: np.ndarray, labels: np.ndarray, batch_size: int = EVAL_BATCH) -> float:
    """Top-1 accuracy; `predict` maps a float32 batch to logits."""
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = predict(tf.constant(images[start : start + batch_size], tf.float32))
        correct += int(np.sum(np.argmax(np.asarray(logits), axis=1) == labels[start : start + batch_size]))
    return correct / max(1, len(images))
