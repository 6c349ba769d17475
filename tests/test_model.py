"""The network and its 8-bit twin against an independent numpy forward pass
(tests/numpy_reference.py): BatchNorm folding, fake quantization, layer wiring."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from numpy_reference import (
    approx_conv_exact,
    approx_forward,
    float_forward,
    fold_batchnorm,
    weights_of,
)

from surrogate_nas.network.architectures import build_model
from surrogate_nas.network.layers import conv_layers
from surrogate_nas.network.twin import build_approx_model, folded_conv_weights


@pytest.fixture(scope="module")
def small():
    """A small build_model network with non-trivial BatchNorm statistics, and a few images."""
    model = build_model((4, 6, 8, 8, 6), dense=12, seed=3)
    rng = np.random.default_rng(0)
    for i in range(5):
        bn = model.get_layer(f"bn{i + 1}")
        c = bn.gamma.shape[0]
        bn.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.2, c), rng.uniform(0.3, 2.0, c)])
    for name in ("fc1", "logits"):
        layer = model.get_layer(name)
        layer.set_weights([w + rng.normal(0, 0.05, w.shape) for w in layer.get_weights()])
    images = rng.integers(0, 256, size=(6, 32, 32, 3)).astype(np.float32)
    return model, images


def test_float_network_matches_numpy(small):
    """The reference reproduces the float model (so it can judge the twin)."""
    model, images = small
    ref, _ = float_forward(images, weights_of(model))
    got = np.asarray(model(images, training=False), np.float64)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


def test_batchnorm_folding(small):
    model, images = small
    weights = weights_of(model)
    folded = folded_conv_weights(model)
    assert len(folded) == 5
    for (kernel, bias), (k, gamma, beta, mean, var, eps) in zip(folded, weights["convs"]):
        ref_kernel, ref_bias = fold_batchnorm(k, gamma, beta, mean, var, eps)
        np.testing.assert_allclose(kernel, ref_kernel, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(bias, ref_bias, rtol=1e-6, atol=1e-7)
    # folded conv == conv followed by BatchNorm, on the float model's own first layer
    taps = keras.Model(model.inputs, [model.get_layer("bn1").output])
    bn_out = np.asarray(taps(images, training=False), np.float64)
    x = images.astype(np.float32) * np.float32(1 / 255)
    from numpy_reference import conv3x3_same

    kernel, bias = folded[0]
    assert np.abs(conv3x3_same(x, kernel) + bias - bn_out).max() <= 1e-5 * np.abs(bn_out).max()


def test_approx_twin_matches_numpy_layer_by_layer_and_end_to_end(small):
    model, images = small
    weights = weights_of(model)
    _, conv_inputs = float_forward(images, weights)
    ranges = [(float(x.min()), float(x.max())) for x in conv_inputs]  # calibrated on these images
    approx = build_approx_model(model, ranges)
    layers = conv_layers(approx)
    taps = keras.Model(approx.inputs, [t for layer in layers for t in (layer.input, layer.output)])
    outs = taps(images, training=False)
    for i, layer in enumerate(layers):
        x, y = np.asarray(outs[2 * i]), np.asarray(outs[2 * i + 1], np.float64)
        folded, bias = fold_batchnorm(*weights["convs"][i])
        ref = approx_conv_exact(x, folded.astype(np.float32), bias.astype(np.float32), ranges[i])
        assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max(), layer.name
        # the emulation is not the float convolution: quantization moved the outputs
        assert np.abs(conv3_float(x, folded, bias) - ref).max() > 1e-4 * np.abs(ref).max()
    logits = np.asarray(approx(images, training=False), np.float64)
    ref = approx_forward(images, weights, ranges)
    assert np.abs(logits - ref).max() <= 1e-5 * np.abs(ref).max()
    assert np.array_equal(logits.argmax(1), ref.argmax(1))


def conv3_float(x, kernel, bias):
    from numpy_reference import conv3x3_same

    return conv3x3_same(x, kernel) + bias


def test_project_model_twin_accuracy_matches_numpy(float_model, card, evaluator):
    """The trained tiny model's all-exact accuracy on the 20-image search set, recomputed in numpy."""
    exact = evaluator.catalog.exact_index
    ref = approx_forward(evaluator.image_set.images, weights_of(float_model), card["input_ranges"])
    expected = float(np.mean(ref.argmax(1) == evaluator.image_set.labels))
    assert evaluator.accuracy((exact,) * 5) == expected


def test_training_is_reproducible(project, tmp_path):
    """The same `train_and_save` call twice gives bit-identical weights: initialisation,
    shuffling and the crop/flip augmentation are all seeded (the project's session model
    used to differ from run to run, and with it which points a tiny search found)."""
    from surrogate_nas.network.training import train_and_save

    weights = []
    for name in ("a", "b"):
        path = tmp_path / name / "tiny.keras"
        train_and_save(path, project.data, project.cache, epochs=1, batch_size=16, widths=(4, 4, 8, 8, 8), seed=5)
        weights.append(keras.models.load_model(path, compile=False).get_weights())
    assert len(weights[0]) == len(weights[1])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
