"""Measurements of a network on images: calibrated input ranges, code histograms per
layer and channel, top-1 accuracy and cross-entropy."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from surrogate_nas.errors import UserError
from surrogate_nas.network.layers import approximable_layers
from surrogate_nas.network.twin import folded_weights


def _taps(model: keras.Model, layers) -> keras.Model:
    return keras.Model(model.inputs, [layer.input for layer in layers])


def _tap_outputs(taps, batch) -> list:
    outs = taps(tf.constant(batch, tf.float32), training=False)
    return list(outs) if isinstance(outs, (list, tuple)) else [outs]


def calibrate_input_ranges(model: keras.Model, images: np.ndarray, batch_size: int = 500,
                           layers=None, percentile: float | list[float] = 100.0,
                           max_values: int = 2_000_000) -> list[tuple[float, float]]:
    """Each approximable layer's input range over calibration images (float model): min
    and max (tf-approximate's range), or with `percentile` < 100 the range that clips the
    rarest values, so that the 256 codes cover the bulk of the activations and a
    circuit's error, fixed in code units, is smaller next to them. The low end is the
    `100 - percentile` percentile only where inputs go negative (a ReLU input keeps 0).
    A percentile is taken over at most `max_values` values per batch, drawn at random
    (seeded): a strided subsample would alias with the channel axis. `percentile` may be
    one value per layer."""
    layers = approximable_layers(model, "conv") if layers is None else layers
    percentiles = [float(v) for v in percentile] if isinstance(percentile, (list, tuple)) else \
        [float(percentile)] * len(layers)
    if len(percentiles) != len(layers):
        raise ValueError(f"percentile: {len(percentiles)} values for {len(layers)} layers")
    taps = _taps(model, layers)
    rng = np.random.default_rng(0)
    ends = [[] for _ in layers]
    samples = [[] for _ in layers]
    for start in range(0, len(images), batch_size):
        for i, t in enumerate(_tap_outputs(taps, images[start : start + batch_size])):
            flat = t.numpy().ravel()
            ends[i] += [float(flat.min()), float(flat.max())]
            if percentiles[i] < 100:
                samples[i].append(flat if flat.size <= max_values else flat[rng.integers(0, flat.size, max_values)])
    ranges = []
    for i in range(len(layers)):
        low, high = min(ends[i]), max(ends[i])
        if percentiles[i] < 100:
            values = np.concatenate(samples[i])
            high = float(np.percentile(values, percentiles[i]))
            low = min(0.0, float(np.percentile(values, 100 - percentiles[i]))) if low < 0 else low
        ranges.append((low, high))
    return ranges


def code_histograms(
    model: keras.Model, images: np.ndarray, input_ranges: list[tuple[float, float]], batch_size: int = 500,
    layers=None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per approximable layer: histogram of its 8-bit input codes (under the calibrated
    range) and of its folded kernel's codes: the joint distribution the multipliers see."""
    from surrogate_nas.emulation.quantization import nudge, quantize_codes

    layers = approximable_layers(model, "conv") if layers is None else layers
    taps = _taps(model, layers)
    input_hists = [np.zeros(256, np.int64) for _ in layers]
    params = [nudge(tf.constant(lo), tf.constant(hi)) for lo, hi in input_ranges]
    for start in range(0, len(images), batch_size):
        for i, t in enumerate(_tap_outputs(taps, images[start : start + batch_size])):
            scale, inv, m, zp = params[i]
            codes = quantize_codes(t, inv, m, zp, scale)
            input_hists[i] += np.bincount(tf.cast(tf.reshape(codes, [-1]), tf.int32).numpy(), minlength=256)
    kernel_hists = []
    for kernel, _ in folded_weights(model, layers):
        k = tf.constant(kernel)
        scale, inv, m, zp = nudge(tf.reduce_min(k), tf.reduce_max(k))
        codes = quantize_codes(k, inv, m, zp, scale)
        kernel_hists.append(np.bincount(tf.cast(tf.reshape(codes, [-1]), tf.int32).numpy(), minlength=256))
    return input_hists, kernel_hists


EVAL_BATCH = 500


def top1(predict, images: np.ndarray, labels: np.ndarray, batch_size: int = EVAL_BATCH) -> float:
    """Top-1 accuracy; `predict` maps a float32 batch to logits."""
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = predict(tf.constant(images[start : start + batch_size], tf.float32))
        correct += int(np.sum(np.argmax(np.asarray(logits), axis=1) == labels[start : start + batch_size]))
    return correct / max(1, len(images))


def cross_entropy(logits, labels: np.ndarray) -> float:
    logits = np.asarray(logits, np.float64)
    logits = logits - logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-np.mean(log_p[np.arange(len(labels)), labels]))


def check_model_data(float_model, model_path: Path, data) -> None:
    """The model must take the data's images and give one score per class."""
    shape_in, shape_out = tuple(float_model.input_shape[1:]), tuple(float_model.output_shape[1:])
    shape_data = tuple(int(d) for d in data.x_train.shape[1:])
    classes = len(getattr(data, "classes", None) or ()) or int(max(data.y_train.max(), data.y_test.max())) + 1
    if shape_in != shape_data:
        raise UserError(f"--model {model_path}: takes images of shape {shape_in}; the data ({data.source}) "
                        f"has {shape_data}")
    if shape_out != (classes,):
        raise UserError(f"--model {model_path}: gives outputs of shape {shape_out}; the data ({data.source}) "
                        f"has {classes} classes")


def channel_code_histograms(model, layers, images: np.ndarray, batch_size: int = 500) -> list[np.ndarray]:
    """Per approximate layer: (cin, 256) counts of its input codes per input channel,
    measured with the network as it is (call with all-exact tables)."""
    import keras
    import tensorflow as tf

    from surrogate_nas.emulation.quantization import nudge, quantize_codes

    taps = keras.Model(model.inputs, [layer.input for layer in layers])
    hists = [np.zeros((int(layer.input.shape[-1]), 256), np.int64) for layer in layers]
    params = [nudge(layer.input_range[0], layer.input_range[1]) for layer in layers]
    for start in range(0, len(images), batch_size):
        outs = taps(tf.constant(images[start : start + batch_size], tf.float32), training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for i, t in enumerate(outs):
            scale, inv, m, zp = params[i]
            codes = tf.cast(quantize_codes(t, inv, m, zp, scale), tf.int32).numpy().reshape(-1, t.shape[-1])
            cin = codes.shape[1]
            flat = codes + 256 * np.arange(cin)[None, :]
            hists[i] += np.bincount(flat.ravel(), minlength=256 * cin).reshape(cin, 256)
    return hists
