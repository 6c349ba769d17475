"""Networks and their approximate (8-bit, table-multiplier) twins.

Any Keras CNN works: Sequential or Functional, residual `Add`s included, any input shape
and number of classes. Its approximable layers are its `Conv2D` layers (and, with
``approximate="conv+dense"``, its `Dense` layers), in model order: one gene each. The
twin is made with `keras.models.clone_model`: each approximable layer becomes an
`AxConv2D` (`AxDense`), a `BatchNormalization` that directly follows a conv (its only
consumer, no activation in between) is folded into that conv's kernel and bias before
quantization, as an accelerator runs it, and every other layer is copied with its
weights (Dropout stays: the twin runs in inference mode). What cannot be emulated
(dilated or grouped convs, depthwise/separable/transposed convs, shared conv layers, a
conv inside a nested model) is a one-line `UserError` naming the layer.

Two architectures ship: `build_model`, the AlexNet-style CIFAR-10 network (five conv
layers, conv -> BatchNorm -> ReLU, max-pooling after the 1st, 2nd and 3rd, then two dense
layers; widths kept small so that a true evaluation costs seconds on a 2-core CPU), and
`build_resnet8`, tf-approximate's example ResNet-8.
"""

from __future__ import annotations

import keras
import numpy as np

from surrogate_nas.emulation.layers import AxConv2D, AxDense, FoldedBatchNorm
from surrogate_nas.network.layers import _graph, _is_dense, _nodes, approximable_layers


def batchnorm_followers(model: keras.Model, layers) -> dict[str, keras.layers.Layer]:
    """conv name -> the BatchNormalization folded into it: the conv's only consumer, on its
    channel axis, with no activation in between."""
    functional = _graph(model)
    nodes = _nodes(functional)
    consumers: dict[int, list] = {}
    for node in nodes:
        for tensor in node.arguments.keras_tensors:
            consumers.setdefault(id(tensor), []).append(node)
    outputs = {id(t) for t in functional.outputs}
    calls: dict[int, int] = {}
    for node in nodes:
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
    folds = {}
    for layer in layers:
        if _is_dense(layer) or layer.activation is not keras.activations.linear:
            continue
        out = layer.output
        users = consumers.get(id(out), [])
        if len(users) != 1 or id(out) in outputs:
            continue
        bn = users[0].operation
        if (isinstance(bn, keras.layers.BatchNormalization) and calls.get(id(bn)) == 1
                and bn.axis in (-1, len(out.shape) - 1)):
            folds[layer.name] = bn
    return folds


def folded_weights(model: keras.Model, layers, folds: dict | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel, bias) of each layer with its following BatchNorm folded in (dense
    kernels as (cin, cout))."""
    folds = batchnorm_followers(model, layers) if folds is None else folds
    out = []
    for layer in layers:
        kernel = layer.kernel.numpy().astype(np.float64)
        bias = layer.bias.numpy().astype(np.float64) if layer.use_bias else np.zeros(kernel.shape[-1])
        bn = folds.get(layer.name)
        if bn is not None:
            gamma = bn.gamma.numpy() if bn.scale else np.ones_like(bias)
            beta = bn.beta.numpy() if bn.center else np.zeros_like(bias)
            factor = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
            kernel = kernel * factor
            bias = (bias - bn.moving_mean.numpy()) * factor + beta
        out.append((kernel.astype(np.float32), bias.astype(np.float32)))
    return out


def folded_conv_weights(model: keras.Model) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel, bias) of each conv with its following BatchNorm folded in."""
    return folded_weights(model, approximable_layers(model, "conv"))


def build_approx_model(
    model: keras.Model,
    input_ranges: list[tuple[float, float]] | None = None,
    quantization: str = "calibrated",
    approximate: str = "conv",
) -> keras.Model:
    """The inference twin of `model`, every approximable layer an `AxConv2D`/`AxDense`
    (exact table at first), made with `keras.models.clone_model`.

    `input_ranges` are the calibrated per-layer input ranges (genome order); with
    quantization="batch" ranges come from each batch, as tf-approximate does.
    """
    layers = approximable_layers(model, approximate)
    if input_ranges is not None and len(input_ranges) != len(layers):
        raise ValueError(f"input_ranges: {len(input_ranges)} given for {len(layers)} approximable layers")
    folds = batchnorm_followers(model, layers)
    replace: dict[int, keras.layers.Layer] = {}
    for i, (layer, (kernel, bias)) in enumerate(zip(layers, folded_weights(model, layers, folds))):
        common = dict(activation=keras.activations.serialize(layer.activation), use_bias=True,
                      quantization=quantization, input_range=None if input_ranges is None else input_ranges[i],
                      name=layer.name)
        if _is_dense(layer):
            ax = AxDense(layer.units, **common)
            kernel = kernel.reshape(1, 1, *kernel.shape)
        else:
            ax = AxConv2D(layer.filters, layer.kernel_size, strides=layer.strides, padding=layer.padding, **common)
        ax.build(layer.input.shape)
        ax.kernel.assign(kernel)
        ax.bias.assign(bias)
        replace[id(layer)] = ax
    folded = {id(bn) for bn in folds.values()}
    copies = []

    def clone(layer):
        if id(layer) in replace:
            return replace[id(layer)]
        if id(layer) in folded:
            return FoldedBatchNorm(name=layer.name)
        new = layer.__class__.from_config(layer.get_config())
        copies.append((layer, new))
        return new

    # cloned from an uncompiled view of the same graph: the twin is not trained, and a
    # compiled model would have its optimizer (maybe a custom class) rebuilt
    functional = _graph(model)
    view = keras.Model(functional.inputs, functional.outputs, name=model.name)
    twin = keras.models.clone_model(view, clone_function=clone)
    for old, new in copies:
        weights = old.get_weights()
        if weights:
            new.set_weights(weights)
    return twin
