"""The shipped architectures: the AlexNet-style 5-conv network and ResNet-8, for CIFAR-10."""

from __future__ import annotations

import keras

from surrogate_nas.errors import UserError

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
