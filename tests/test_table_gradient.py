"""The table gradient of `AxConv2D` against analytic slopes: a circuit that computes 3/4 of
every product must back-propagate 3/4 of the exact product's gradient, where the
straight-through estimator back-propagates all of it."""

import numpy as np
import pytest
import tensorflow as tf

from surrogate_nas.emulation.layers import AxConv2D
from surrogate_nas.emulation.table_gradient import smoothed_difference

A = np.arange(256)


def _layer(lut, padding="same", strides=(1, 1)):
    layer = AxConv2D(5, 3, strides=strides, padding=padding, use_bias=False, input_range=(0.0, 1.0))
    layer.build((None, 9, 9, 4))
    rng = np.random.default_rng(0)
    kernel = rng.uniform(0.0, 1.0, (3, 3, 4, 5)).astype(np.float32)
    kernel[0, 0, 0, 0] = 0.0  # ranges starting at 0: zero points 0, so codes are value / scale
    layer.kernel.assign(kernel)
    layer.set_multiplier(lut)
    return layer


def _grads(fn, x, kernel_var, dy):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
        loss = tf.reduce_sum(y * dy)
    return tape.gradient(loss, [x, kernel_var])


def _float_reference(layer, x, dy):
    """The exact product's gradient, by TensorFlow's own conv of the fake-quantized operands."""
    def fn(x):
        k = layer.kernel
        k_q = tf.quantization.fake_quant_with_min_max_vars(k, tf.reduce_min(k), tf.reduce_max(k), num_bits=8)
        x_q = tf.quantization.fake_quant_with_min_max_vars(x, 0.0, 1.0, num_bits=8)
        return tf.nn.conv2d(x_q, k_q, [1, *layer.strides, 1], layer.padding.upper())
    return _grads(fn, x, layer.kernel, dy)


@pytest.mark.parametrize("padding,strides", [("same", (1, 1)), ("valid", (2, 2))])
def test_a_three_quarter_multiplier_back_propagates_three_quarters(padding, strides):
    lut = (3 * np.outer(A, A)) // 4  # nearly rank 1 error: -a*w/4 (+ the floor's remainder)
    layer = _layer(lut.astype(np.uint16), padding, strides)
    x = tf.constant(np.random.default_rng(1).uniform(0.0, 1.0, (2, 9, 9, 4)).astype(np.float32))
    dy = tf.constant(np.random.default_rng(2).normal(size=layer(x).shape).astype(np.float32))
    ref_dx, ref_dk = _float_reference(layer, x, dy)

    ste_dx, ste_dk = _grads(layer, x, layer.kernel, dy)
    np.testing.assert_allclose(ste_dk, ref_dk, rtol=1e-4, atol=1e-3)  # the STE: the exact slope

    layer.set_table_gradient(1, halfwidth=4)
    tg_dx, tg_dk = _grads(layer, x, layer.kernel, dy)
    scale_k = np.abs(ref_dk).max()
    scale_x = np.abs(ref_dx).max()
    np.testing.assert_allclose(tg_dk / scale_k, 0.75 * ref_dk / scale_k, atol=0.01)
    np.testing.assert_allclose(tg_dx / scale_x, 0.75 * ref_dx / scale_x, atol=0.01)

    layer.set_table_gradient(None)
    back_dx, back_dk = _grads(layer, x, layer.kernel, dy)
    np.testing.assert_array_equal(back_dk, ste_dk)


def test_an_exact_table_keeps_the_exact_gradient():
    layer = _layer(np.outer(A, A).astype(np.uint16))
    x = tf.constant(np.random.default_rng(3).uniform(0.0, 1.0, (1, 9, 9, 4)).astype(np.float32))
    dy = tf.ones_like(layer(x))
    ste = _grads(layer, x, layer.kernel, dy)
    layer.set_table_gradient(4)
    for a, b in zip(_grads(layer, x, layer.kernel, dy), ste):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_smoothed_difference_of_a_parabola():
    f = (A.astype(np.float64) ** 2)[:, None]
    d = smoothed_difference(f, 4)[:, 0]
    np.testing.assert_allclose(d[4:252], 2 * A[4:252], rtol=1e-6)  # central differences are exact on parabolas
    assert d[0] == pytest.approx(16 / 4) and d[255] == pytest.approx((255**2 - 251**2) / 4)
