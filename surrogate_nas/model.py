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

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from surrogate_nas.axconv import AxConv2D, AxDense, FoldedBatchNorm
from surrogate_nas.errors import UserError

# ------------------------------------------------------------------ the shipped networks

DEFAULT_WIDTHS = (32, 40, 64, 96, 96)
POOL_AFTER = (0, 1, 2)
CONV_NAMES = tuple(f"conv{i + 1}" for i in range(5))


def build_model(widths=DEFAULT_WIDTHS, dense: int = 256, dropout: float = 0.3, seed: int = 0,
                input_shape=(32, 32, 3), n_classes: int = 10) -> keras.Model:
    """The AlexNet-style float training model. Input: uint8-valued pixels as float (0..255), NHWC."""
    if len(widths) != 5:
        raise ValueError(f"widths: need 5 conv widths, got {len(widths)}")
    init = keras.initializers.HeNormal(seed=seed)
    inputs = keras.Input(tuple(input_shape), name="image")
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
    outputs = keras.layers.Dense(n_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="alexnet_cifar10")


def build_resnet8(input_shape=(32, 32, 3), n_classes: int = 10, seed: int = 0, widths=(16, 32, 64)) -> keras.Model:
    """tf-approximate's example network: ResNet-8 (He et al.'s CIFAR ResNet with one basic
    block per stage). A 3x3 stem conv, then three stages of one residual block each (two
    3x3 convs, 16/32/64 filters, the 2nd and 3rd stage downsampling by stride 2 with a 1x1
    projection on the shortcut), every conv followed by BatchNorm (+ ReLU), global average
    pooling and one dense layer: 9 conv layers."""
    init = keras.initializers.HeNormal(seed=seed)
    inputs = keras.Input(tuple(input_shape), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)

    def conv_bn(x, filters, kernel, strides, name, relu=True):
        x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                                kernel_initializer=init, name=name)(x)
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
        return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x

    x = conv_bn(x, widths[0], 3, 1, "conv1")
    for stage, filters in enumerate(widths, start=1):
        strides = 1 if stage == 1 else 2
        y = conv_bn(x, filters, 3, strides, f"stage{stage}_conv1")
        y = conv_bn(y, filters, 3, 1, f"stage{stage}_conv2", relu=False)
        if strides != 1 or int(x.shape[-1]) != filters:
            x = conv_bn(x, filters, 1, strides, f"stage{stage}_shortcut", relu=False)
        x = keras.layers.Add(name=f"stage{stage}_add")([x, y])
        x = keras.layers.ReLU(name=f"stage{stage}_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(n_classes, kernel_initializer=init, name="logits")(x)
    return keras.Model(inputs, outputs, name="resnet8")


ARCHITECTURES = ("alexnet", "resnet8")


def build_architecture(arch: str, input_shape, n_classes: int, seed: int = 0, widths=None) -> keras.Model:
    if arch == "alexnet":
        return build_model(tuple(widths or DEFAULT_WIDTHS), seed=seed, input_shape=input_shape, n_classes=n_classes)
    if arch == "resnet8":
        return build_resnet8(input_shape, n_classes, seed=seed, **({"widths": tuple(widths)} if widths else {}))
    raise UserError(f"--arch: expected one of {', '.join(ARCHITECTURES)}, got {arch!r}")


# ------------------------------------------------------------------ which layers approximate

APPROXIMATE = ("conv", "conv+dense")


def check_approximate(value: str, flag: str = "--approximate") -> str:
    if value not in APPROXIMATE:
        raise UserError(f"{flag}: expected one of {', '.join(APPROXIMATE)}, got {value!r}")
    return value


@dataclass(frozen=True)
class LayerInfo:
    """What the energy model, the surrogate and the reports need to know about one
    approximable layer."""

    name: str
    kind: str  # "conv" or "dense"
    input_shape: tuple
    output_shape: tuple
    kernel_size: tuple[int, int]
    macs: int  # multiplications per image


ConvInfo = LayerInfo  # the former name


def _is_approx(layer) -> bool:
    return isinstance(layer, AxConv2D)


def _is_dense(layer) -> bool:
    return isinstance(layer, (keras.layers.Dense, AxDense))


def _graph(model: keras.Model):
    """The Functional graph behind a Sequential or Functional model."""
    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise UserError(f"model {model.name}: a Sequential model without an input shape (add keras.Input(...) "
                            "as its first layer)")
        return functional
    if not isinstance(model, keras.Model) or not hasattr(model, "_run_through_graph"):
        raise UserError(f"model {getattr(model, 'name', model)}: a subclassed model cannot be rewritten; "
                        "save it as a Sequential or Functional model")
    return model


def _nodes(functional) -> list:
    """Every node of the graph, found from the outputs backwards."""
    seen: dict[int, object] = {}
    stack = list(functional.outputs)
    while stack:
        operation, node_index, _ = stack.pop()._keras_history
        if operation is None:
            continue
        node = operation._inbound_nodes[node_index]
        if id(node) not in seen:
            seen[id(node)] = node
            stack.extend(node.arguments.keras_tensors)
    return list(seen.values())


def _conv_problem(layer) -> str | None:
    """Why a conv-like layer cannot be emulated (None: it can)."""
    kind = type(layer).__name__
    if isinstance(layer, keras.layers.Conv2D) and type(layer) is keras.layers.Conv2D:
        if tuple(layer.dilation_rate) != (1, 1):
            return f"dilation_rate {tuple(layer.dilation_rate)} (only 1 is emulated)"
        if layer.groups != 1:
            return f"groups={layer.groups} (grouped convolution is not emulated)"
        if layer.data_format != "channels_last":
            return f"data_format={layer.data_format!r} (only channels_last is emulated)"
        if getattr(layer, "lora_enabled", False):
            return "LoRA weights (merge them first)"
        return None
    if "Conv" in kind:
        return f"{kind} is not emulated (only Conv2D and Dense layers are approximable)"
    return None


def approximable_layers(model: keras.Model, approximate: str = "conv", strict: bool = True) -> list:
    """The layers of a float model that get a gene, in model order: its `Conv2D`s (and
    `Dense`s with "conv+dense"). Unsupported layers are a `UserError` naming the layer;
    with `strict=False` a Dense that cannot be approximated is left out instead."""
    check_approximate(approximate, "approximate")
    functional = _graph(model)
    if len(functional.inputs) != 1 or len(functional.outputs) != 1:
        raise UserError(f"model {model.name}: has {len(functional.inputs)} inputs and {len(functional.outputs)} "
                        "outputs; expected one image input and one output of class scores")
    shape = tuple(functional.inputs[0].shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise UserError(f"model {model.name}: input shape {shape}; expected a fixed (height, width, channels)")
    calls: dict[int, int] = {}
    for node in _nodes(functional):
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
    layers = []
    for layer in model.layers:
        if _is_approx(layer):
            raise UserError(f"layer {layer.name} ({type(layer).__name__}): the model is already approximate; "
                            "pass the float model")
        if isinstance(layer, keras.Model):
            inner = [sub.name for sub in layer._flatten_layers(include_self=False)
                     if "Conv" in type(sub).__name__ or (approximate == "conv+dense" and _is_dense(sub))]
            if inner:
                raise UserError(f"layer {layer.name}: a nested model holding approximable layers ({', '.join(inner[:3])}); "
                                "flatten it into one Functional model")
            continue
        problem = _conv_problem(layer)
        if problem is not None:
            raise UserError(f"layer {layer.name}: {problem}")
        wanted = isinstance(layer, keras.layers.Conv2D) or (approximate == "conv+dense" and _is_dense(layer))
        if not wanted:
            continue
        if _is_dense(layer) and (getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None)):
            if strict:
                raise UserError(f"layer {layer.name}: a Dense with LoRA or quantized weights is not approximable")
            continue
        if calls.get(id(layer), 0) > 1:
            if strict or not _is_dense(layer):
                raise UserError(f"layer {layer.name}: used {calls[id(layer)]} times in the model; a shared "
                                f"{type(layer).__name__} is not supported")
            continue
        layers.append(layer)
    if not layers:
        raise UserError(f"model {model.name}: no Conv2D layer to approximate")
    return layers


def approx_layers(twin: keras.Model, names=None) -> list:
    """The `AxConv2D`/`AxDense` layers of a twin, in genome order (by `names` when given)."""
    if names is not None:
        return [twin.get_layer(name) for name in names]
    return [layer for layer in twin.layers if _is_approx(layer)]


def conv_layers(model: keras.Model) -> list:
    """The conv layers of a float model or a twin (`Conv2D` or `AxConv2D`), in model order."""
    return [layer for layer in model.layers
            if isinstance(layer, (keras.layers.Conv2D, AxConv2D)) and not isinstance(layer, AxDense)]


def layer_info(model: keras.Model, approximate: str = "conv", layers=None) -> list[LayerInfo]:
    infos = []
    for layer in layers if layers is not None else approximable_layers(model, approximate):
        shape_in = tuple(int(d) for d in layer.input.shape[1:])
        shape_out = tuple(int(d) for d in layer.output.shape[1:])
        cin, cout = shape_in[-1], shape_out[-1]
        if _is_dense(layer):
            kind, (kh, kw) = "dense", (1, 1)
            positions = int(np.prod(shape_in[:-1], dtype=np.int64))  # 1 for a (batch, features) input
        else:
            kind, (kh, kw) = "conv", tuple(layer.kernel_size)
            positions = shape_out[0] * shape_out[1]
        infos.append(LayerInfo(layer.name, kind, shape_in, shape_out, (kh, kw), int(positions * cout * kh * kw * cin)))
    return infos


def conv_info(model: keras.Model) -> list[LayerInfo]:
    return layer_info(model, "conv")


# ------------------------------------------------------------------ BatchNorm folding


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


# ------------------------------------------------------------------ the twin


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


# ------------------------------------------------------------------ calibration


def _taps(model: keras.Model, layers) -> keras.Model:
    return keras.Model(model.inputs, [layer.input for layer in layers])


def _tap_outputs(taps, batch) -> list:
    outs = taps(tf.constant(batch, tf.float32), training=False)
    return list(outs) if isinstance(outs, (list, tuple)) else [outs]


def calibrate_input_ranges(model: keras.Model, images: np.ndarray, batch_size: int = 500,
                           layers=None) -> list[tuple[float, float]]:
    """Min and max of each approximable layer's input over calibration images (float model)."""
    layers = approximable_layers(model, "conv") if layers is None else layers
    taps = _taps(model, layers)
    lows = [np.inf] * len(layers)
    highs = [-np.inf] * len(layers)
    for start in range(0, len(images), batch_size):
        for i, t in enumerate(_tap_outputs(taps, images[start : start + batch_size])):
            lows[i] = min(lows[i], float(tf.reduce_min(t)))
            highs[i] = max(highs[i], float(tf.reduce_max(t)))
    return list(zip(lows, highs))


def code_histograms(
    model: keras.Model, images: np.ndarray, input_ranges: list[tuple[float, float]], batch_size: int = 500,
    layers=None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per approximable layer: histogram of its 8-bit input codes (under the calibrated
    range) and of its folded kernel's codes: the joint distribution the multipliers see."""
    from surrogate_nas.axconv import nudge, quantize_codes

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
