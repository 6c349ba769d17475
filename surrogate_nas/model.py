"""The AlexNet-style CIFAR-10 network and its approximate (8-bit, table-multiplier) twin.

Five conv layers (conv -> BatchNorm -> ReLU, max-pooling after the 1st, 2nd and 3rd),
then two dense layers. Widths are kept small so that a true evaluation of a genome
(every conv emulated by its lookup table) costs seconds on a 2-core CPU. For the
approximate twin BatchNorm is folded into each conv's kernel and bias before
quantization, as an accelerator would run it; dense layers stay float.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from surrogate_nas.axconv import AxConv2D

DEFAULT_WIDTHS = (32, 40, 64, 96, 96)
POOL_AFTER = (0, 1, 2)
CONV_NAMES = tuple(f"conv{i + 1}" for i in range(5))


def build_model(widths=DEFAULT_WIDTHS, dense: int = 256, dropout: float = 0.3, seed: int = 0) -> keras.Model:
    """The float training model. Input: uint8-valued pixels as float (0..255), NHWC 32x32x3."""
    if len(widths) != 5:
        raise ValueError(f"widths: need 5 conv widths, got {len(widths)}")
    init = keras.initializers.HeNormal(seed=seed)
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    for i, width in enumerate(widths):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer=init, name=CONV_NAMES[i])(x)
        x = keras.layers.BatchNormalization(name=f"bn{i + 1}")(x)
        x = keras.layers.ReLU(name=f"relu{i + 1}")(x)
        if i in POOL_AFTER:
            x = keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(dropout, seed=seed, name="drop1")(x)
    x = keras.layers.Dense(dense, kernel_initializer=init, name="fc1")(x)
    x = keras.layers.ReLU(name="relu_fc1")(x)
    x = keras.layers.Dropout(dropout, seed=seed + 1, name="drop2")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="alexnet_cifar10")


@dataclass(frozen=True)
class ConvInfo:
    """What the energy model and the surrogate need to know about one conv layer."""

    name: str
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]
    kernel_size: tuple[int, int]
    macs: int  # multiplications per image


def conv_layers(model: keras.Model) -> list[keras.layers.Layer]:
    layers = [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, AxConv2D))]
    if len(layers) != 5:
        raise ValueError(f"model {model.name}: expected 5 conv layers, found {len(layers)}")
    return layers


def conv_info(model: keras.Model) -> list[ConvInfo]:
    infos = []
    for layer in conv_layers(model):
        _, h, w, cin = layer.input.shape
        _, oh, ow, cout = layer.output.shape
        kh, kw = layer.kernel_size
        infos.append(ConvInfo(layer.name, (h, w, cin), (oh, ow, cout), (kh, kw), int(oh * ow * cout * kh * kw * cin)))
    return infos


def folded_conv_weights(model: keras.Model) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel, bias) of each conv with its following BatchNorm folded in."""
    out = []
    for i, conv in enumerate(conv_layers(model)):
        kernel = conv.kernel.numpy().astype(np.float64)
        bias = conv.bias.numpy().astype(np.float64) if conv.use_bias else np.zeros(kernel.shape[-1])
        try:
            bn = model.get_layer(f"bn{i + 1}")
        except ValueError:
            bn = None
        if bn is not None:
            gamma = bn.gamma.numpy() if bn.scale else np.ones_like(bias)
            beta = bn.beta.numpy() if bn.center else np.zeros_like(bias)
            factor = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
            kernel = kernel * factor
            bias = (bias - bn.moving_mean.numpy()) * factor + beta
        out.append((kernel.astype(np.float32), bias.astype(np.float32)))
    return out


def build_approx_model(
    model: keras.Model,
    input_ranges: list[tuple[float, float]] | None = None,
    quantization: str = "calibrated",
) -> keras.Model:
    """The inference twin of `model` with every conv an `AxConv2D` (exact table at first).

    `input_ranges` are the calibrated per-layer input ranges; with quantization="batch"
    ranges come from each batch, as tf-approximate does.
    """
    weights = folded_conv_weights(model)
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    conv_index = 0
    for layer in model.layers[1:]:
        if isinstance(layer, (keras.layers.InputLayer, keras.layers.Rescaling)):
            continue
        if isinstance(layer, keras.layers.Conv2D):
            kernel, bias = weights[conv_index]
            ax = AxConv2D(
                layer.filters,
                layer.kernel_size,
                strides=layer.strides,
                padding=layer.padding,
                use_bias=True,
                quantization=quantization,
                input_range=None if input_ranges is None else input_ranges[conv_index],
                name=layer.name,
            )
            x = ax(x)
            ax.kernel.assign(kernel)
            ax.bias.assign(bias)
            conv_index += 1
        elif isinstance(layer, (keras.layers.BatchNormalization, keras.layers.Dropout)):
            continue
        else:
            clone = layer.__class__.from_config(layer.get_config())
            x = clone(x)
            if layer.get_weights():
                clone.set_weights(layer.get_weights())
    return keras.Model(inputs, x, name=f"{model.name}_approx")


def calibrate_input_ranges(model: keras.Model, images: np.ndarray, batch_size: int = 500) -> list[tuple[float, float]]:
    """Min and max of each conv layer's input over calibration images (float model)."""
    taps = keras.Model(model.inputs, [layer.input for layer in conv_layers(model)])
    lows = [np.inf] * 5
    highs = [-np.inf] * 5
    for start in range(0, len(images), batch_size):
        outs = taps(tf.constant(images[start : start + batch_size], tf.float32), training=False)
        for i, t in enumerate(outs):
            lows[i] = min(lows[i], float(tf.reduce_min(t)))
            highs[i] = max(highs[i], float(tf.reduce_max(t)))
    return list(zip(lows, highs))


def code_histograms(
    model: keras.Model, images: np.ndarray, input_ranges: list[tuple[float, float]], batch_size: int = 500
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per conv layer: histogram of its 8-bit input codes (under the calibrated range)
    and of its folded kernel's codes: the joint distribution the multipliers see."""
    from surrogate_nas.axconv import nudge, quantize_codes

    taps = keras.Model(model.inputs, [layer.input for layer in conv_layers(model)])
    input_hists = [np.zeros(256, np.int64) for _ in range(5)]
    params = [nudge(tf.constant(lo), tf.constant(hi)) for lo, hi in input_ranges]
    for start in range(0, len(images), batch_size):
        outs = taps(tf.constant(images[start : start + batch_size], tf.float32), training=False)
        for i, t in enumerate(outs):
            scale, inv, m, zp = params[i]
            codes = quantize_codes(t, inv, m, zp, scale)
            input_hists[i] += np.bincount(tf.cast(tf.reshape(codes, [-1]), tf.int32).numpy(), minlength=256)
    kernel_hists = []
    for kernel, _ in folded_conv_weights(model):
        k = tf.constant(kernel)
        scale, inv, m, zp = nudge(tf.reduce_min(k), tf.reduce_max(k))
        codes = quantize_codes(k, inv, m, zp, scale)
        kernel_hists.append(np.bincount(tf.cast(tf.reshape(codes, [-1]), tf.int32).numpy(), minlength=256))
    return input_hists, kernel_hists
