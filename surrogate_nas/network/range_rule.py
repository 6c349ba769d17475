"""Choosing each layer's calibration by a rule: where its input range ends (the maximum or
a percentile) and whether its kernel is clipped, measured on training images only.

A circuit's error is fixed in code units. A range that ends at the rarest activations (or a
kernel whose extremes are a few outliers) leaves the bulk of the operands in few codes, so
next to their products the circuit's error is large; ending the range earlier saturates the
outliers instead. Which side wins depends on the layer and on the circuits, so the rule
measures it on the network's output: for each conv layer, in network order, and each
candidate (percentile, clip), that layer runs each circuit of a panel (the exact one
included, so plain quantization error counts too) with its mean error per channel removed
(what bias compensation removes for free), every other layer exact, and the network's
output is compared with the float model's by the KL divergence of their softmax. The
candidate with the lowest geometric mean over the panel wins, among those that keep the
error-free 8-bit network's predictions: a candidate is admissible only if the error-free
network (earlier layers as chosen, this one as the candidate, later ones at the widest range
and unclipped) changes at most `GUARD_PCT` % of the top-1 predictions, on the guard images,
of the error-free network with every layer at the widest range, unclipped. The guard is on
the whole network, so changes cannot add up over layers beyond it: a range that saturates
too much costs every design the same accuracy. A changed prediction counts whether it turns
right or wrong: accuracy on 2,000 images moves by a few flips either way (+-0.35 pp between
one layer's candidates on AlexNet), too noisy to guard 0.1-point losses, while the share of
flips bounds the loss at worst. (A first guard, 0.25 % per layer against that layer's own
widest range, kept AlexNet's conv2-3 at their maximum, where a 99.9 % card had searched much
better.) The next layer is measured with the earlier ones as chosen. The images are the
card's training calibration images; labels are read only to record the accuracy.
"""

from __future__ import annotations

import numpy as np

PERCENTILES = (100.0, 99.99, 99.9, 99.5)  # 100: tf-approximate's min..max
CLIPS = (0.0, 4.0, 3.0)  # kernel within mean +- this many standard deviations (0: not clipped)
PANEL = 8  # circuits measured per candidate: the exact one and this many others, spread over power
PANEL_POWER = (0.2, 0.7)  # ... among those at 20-70 % of the exact circuit's power
RULE_IMAGES = 256  # training calibration images the rule runs on
GUARD_PCT = 1.0  # the error-free network may change at most this share (%) of its predictions, all layers together


def panel_indices(catalog, size: int = PANEL, band=PANEL_POWER) -> list[int]:
    """The exact circuit and `size` others at evenly spaced ranks of power among those whose
    power is within `band` (fractions of the exact circuit's): the circuits the designs users
    take (40-70 % saving) are made of, without measuring all of them."""
    exact = catalog.exact_index
    top = catalog[exact].power_mw
    others = sorted((i for i in range(len(catalog)) if i != exact), key=lambda i: (catalog[i].power_mw, i))
    inside = [i for i in others if band[0] * top <= catalog[i].power_mw <= band[1] * top]
    others = inside or others
    if len(others) > size:
        others = [others[int(round(k * (len(others) - 1) / (size - 1)))] for k in range(size)] if size > 1 \
            else others[:1]
    return [exact] + list(dict.fromkeys(others))


def clip_kernel(kernel: np.ndarray, n_std: float) -> np.ndarray:
    """`kernel` within mean +- n_std standard deviations (0: unchanged); the same range as
    retraining's `ClipRange.around`."""
    if not n_std:
        return kernel
    k = np.asarray(kernel, np.float64)
    mean, std = float(k.mean()), float(k.std())
    return np.clip(kernel, mean - n_std * std, mean + n_std * std).astype(kernel.dtype)


def kl_divergence(reference_logits: np.ndarray, logits: np.ndarray) -> float:
    """Mean KL(softmax(reference) || softmax(logits)) over the images."""
    def log_softmax(z):
        z = np.asarray(z, np.float64)
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    ref = log_softmax(reference_logits)
    return float(np.mean(np.sum(np.exp(ref) * (ref - log_softmax(logits)), axis=1)))


def _mean_error_offset(layer, inputs, lut) -> np.ndarray:
    """Per output channel, the mean of the circuit's error in the layer's linear output on
    `inputs` (the bias compensation of these images)."""
    activation = layer.activation
    layer.activation = lambda y: y
    try:
        layer.set_multiplier(None)
        exact = np.asarray(layer(inputs), np.float64)
        layer.set_multiplier(lut)
        approx = np.asarray(layer(inputs), np.float64)
    finally:
        layer.activation = activation
    return (approx - exact).reshape(-1, exact.shape[-1]).mean(axis=0).astype(np.float32)


def choose_calibration(float_model, images: np.ndarray, catalog, percentiles=PERCENTILES, clips=CLIPS,
                       panel: int = PANEL, progress=None, guard_images: np.ndarray | None = None,
                       guard_labels: np.ndarray | None = None, guard_pct: float = GUARD_PCT) -> dict:
    """Per conv layer (genome order) the chosen input percentile and kernel clip, with every
    candidate's score. `images`: training images (the card's calibration images) for the
    score; `guard_images` (default: `images`) for the guard on the error-free network, and
    their `guard_labels` for the record of its accuracy; `progress(n)` is called after each
    candidate measured."""
    import keras
    import tensorflow as tf

    from surrogate_nas.network.layers import approx_layers, approximable_layers
    from surrogate_nas.network.measure import calibrate_input_ranges
    from surrogate_nas.network.twin import build_approx_model

    images = tf.constant(np.asarray(images, np.float32))
    reference = np.asarray(float_model(images, training=False))
    conv = approximable_layers(float_model, "conv")
    ranges = {p: calibrate_input_ranges(float_model, images.numpy(), layers=conv, percentile=p) for p in percentiles}
    widest = max(percentiles)
    twin = build_approx_model(float_model, ranges[widest])
    layers = approx_layers(twin, [layer.name for layer in conv])
    luts = {i: (None if catalog[i].is_exact else catalog[i].lut) for i in panel_indices(catalog, panel)}
    folded = [layer.kernel.numpy().copy() for layer in layers]
    predict = tf.function(lambda x: twin(x, training=False), autograph=False)
    guard = images if guard_images is None else tf.constant(np.asarray(guard_images, np.float32))
    labels = None if guard_labels is None else np.asarray(guard_labels).reshape(-1)

    def top1():  # the error-free network's predictions on the guard images
        return np.concatenate([np.argmax(np.asarray(predict(guard[i:i + 500])), axis=1)
                               for i in range(0, len(guard), 500)])

    start = top1()
    accuracy = (lambda predictions: None if labels is None else float(100 * np.mean(predictions == labels)))
    chosen, scores, flips, accuracies = [], [], [], []
    for index, layer in enumerate(layers):
        tap = keras.Model(twin.inputs, layer.input)
        layer.set_input_range(*ranges[widest][index])
        layer.kernel.assign(folded[index])
        table, changed, correct = {}, {}, {}
        for p in percentiles:
            layer.set_input_range(*ranges[p][index])
            for c in clips:
                layer.kernel.assign(clip_kernel(folded[index], c))
                layer.set_multiplier(None)
                predictions = top1()
                changed[(p, c)] = float(100 * np.mean(predictions != start))
                correct[(p, c)] = accuracy(predictions)
                inputs = tap(images, training=False)
                divergences = []
                for lut in luts.values():
                    offset = _mean_error_offset(layer, inputs, lut)
                    layer.bias_offset.assign(offset)
                    divergences.append(kl_divergence(reference, predict(images)))
                layer.bias_offset.assign(np.zeros_like(offset))
                table[(p, c)] = float(np.exp(np.mean(np.log(np.maximum(divergences, 1e-12)))))
                if progress:
                    progress(1)
        # the widest range, unclipped, stays admissible: it changes nothing the earlier layers did not
        admissible = [k for k in table if changed[k] <= guard_pct + 1e-9 or k == (widest, 0.0)]
        best = min(admissible, key=lambda k: (table[k], -k[0], k[1]))  # ties: the wider range, the milder clip
        chosen.append({"layer": layer.name, "input_percentile": best[0], "kernel_clip_std": best[1],
                       "input_range": [float(v) for v in ranges[best[0]][index]]})
        scores.append({f"p{p:g}-clip{c:g}": v for (p, c), v in table.items()})
        flips.append({f"p{p:g}-clip{c:g}": v for (p, c), v in changed.items()})
        accuracies.append({f"p{p:g}-clip{c:g}": v for (p, c), v in correct.items()})
        layer.set_multiplier(None)
        layer.set_input_range(*ranges[best[0]][index])
        layer.kernel.assign(clip_kernel(folded[index], best[1]))
    return {"layers": chosen, "scores": scores, "changed_predictions_pct": flips, "error_free_accuracy_pct": accuracies,
            "widest_accuracy_pct": accuracy(start), "guard_pct": guard_pct, "guard_images": int(len(guard)),
            "panel": [catalog[i].name for i in luts],
            "candidates": {"input_percentile": list(percentiles), "kernel_clip_std": list(clips)},
            "images": int(len(reference)),
            "criterion": "per layer, geometric mean over the panel of circuits (that layer approximate with its mean "
                         "error per channel removed, the others exact) of the KL divergence of the network's softmax "
                         "from the float model's, on training images; admissible: a candidate with which the error-free 8-bit "
                         "network (earlier layers as chosen) changes at most guard_pct % of the top-1 predictions of "
                         "the error-free network with every layer at the widest range, unclipped, on the guard images"}


def clipped_float_model(float_model, clips: list[float]):
    """A copy of `float_model` whose conv kernels give, once a following BatchNorm is folded
    in, the folded kernel clipped at `clips[i]` standard deviations (what the twin quantizes)."""
    import keras

    from surrogate_nas.network.layers import approximable_layers
    from surrogate_nas.network.twin import batchnorm_followers, folded_weights

    model = keras.models.clone_model(float_model)
    model.set_weights(float_model.get_weights())
    conv = approximable_layers(model, "conv")
    folds = batchnorm_followers(model, conv)
    for layer, (kernel, _), c in zip(conv, folded_weights(model, conv, folds), clips):
        if not c:
            continue
        raw = layer.kernel.numpy()
        bn = folds.get(layer.name)
        if bn is None:
            layer.kernel.assign(clip_kernel(raw, c))
            continue
        gamma = bn.gamma.numpy() if bn.scale else np.ones(raw.shape[-1])
        factor = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
        layer.kernel.assign((clip_kernel(kernel, c).astype(np.float64) / factor).astype(raw.dtype))
    return model
