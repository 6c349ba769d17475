"""Any Keras CNN, not just the shipped AlexNet: two networks of this file (a Functional
residual CNN with 3 convs on the 32x32x3 10-class fixture data, and a Functional one with
10 convs, two residual blocks, strided/1x1/valid/even-kernel convs, a conv with its own
activation and a dense hidden layer, on a 24x24x1 5-class image-folder dataset written
here) go through calibrate, evaluate, run (both modes) and export via the CLI; their
twins equal an independent numpy forward pass (tests/numpy_reference.py) layer by layer
and end to end, with the exact and with approximate tables, conv-only and conv+dense;
unsupported layers are one-line errors naming the layer. Real Keras models, no mocks.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from conftest import CIRCUITS, EXACT_INDEX, isolated_cwd, read_csv
from numpy_reference import F32, approx_conv, approx_dense, batchnorm, conv2d, maxpool

from surrogate_nas.errors import UserError

L = keras.layers
GRAY_CLASSES = ("checker", "dark", "hstripes", "light", "vstripes")  # sorted: the label order
GRAY_TRAIN, GRAY_TEST = 40, 10  # per class: 200 training images (20 held out for validation), 50 test


def write_gray_dataset(root, size: int = 24, seed: int = 0):
    """ROOT/{train,test}/<class>/NNNN.png, 8-bit grayscale: a pattern per class plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    patterns = {"checker": 60 + 130 * ((yy // 3 + xx // 3) % 2), "dark": np.full((size, size), 50.0),
                "hstripes": 60 + 130 * ((yy // 2) % 2), "light": np.full((size, size), 200.0),
                "vstripes": 60 + 130 * ((xx // 2) % 2)}
    for split, n in (("train", GRAY_TRAIN), ("test", GRAY_TEST)):
        for name in GRAY_CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for j in range(n):
                img = patterns[name] + rng.normal(0, 25, (size, size))
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L").save(folder / f"{j:04d}.png")
    return root


# ------------------------------------------------------------------ the two networks


def residual3(input_shape=(32, 32, 3), n_classes=10, seed=0) -> keras.Model:
    init = keras.initializers.HeNormal(seed=seed)
    inp = keras.Input(input_shape, name="image")
    x = L.Rescaling(1 / 255, name="scale")(inp)
    x = L.Conv2D(8, 3, padding="same", use_bias=False, kernel_initializer=init, name="stem")(x)
    x = L.ReLU(name="stem_relu")(L.BatchNormalization(name="stem_bn")(x))
    y = L.Conv2D(8, 3, padding="same", use_bias=False, kernel_initializer=init, name="res_a")(x)
    y = L.ReLU(name="res_a_relu")(L.BatchNormalization(name="res_a_bn")(y))
    y = L.Conv2D(8, 3, padding="same", kernel_initializer=init, name="res_b")(y)  # with bias, then BatchNorm
    y = L.BatchNormalization(name="res_b_bn")(y)
    x = L.ReLU(name="add_relu")(L.Add(name="add")([x, y]))
    x = L.Flatten(name="flat")(L.MaxPooling2D(4, name="pool")(x))
    return keras.Model(inp, L.Dense(n_classes, name="logits")(x), name="residual3")


# conv name -> (BatchNorm folded into it, strides, padding, activation inside the conv)
SPEC3 = {"stem": ("stem_bn", 1, "same", None), "res_a": ("res_a_bn", 1, "same", None),
         "res_b": ("res_b_bn", 1, "same", None)}


def forward3(ref, images):
    x = np.asarray(images, F32) * F32(1 / 255)
    x = relu(ref.conv(x, "stem"))
    y = relu(ref.conv(x, "res_a"))
    x = relu(x + ref.conv(y, "res_b"))
    x = maxpool(x, 4).reshape(len(x), -1)
    return ref.dense(x, "logits")


def ten_convs(input_shape=(24, 24, 1), n_classes=5, seed=0) -> keras.Model:
    init = keras.initializers.HeNormal(seed=seed)

    def conv(x, filters, k, name, strides=1, padding="same", bn=True, use_bias=False, activation=None):
        x = L.Conv2D(filters, k, strides=strides, padding=padding, use_bias=use_bias, activation=activation,
                     kernel_initializer=init, name=name)(x)
        return L.BatchNormalization(name=f"{name}_bn")(x) if bn else x

    inp = keras.Input(input_shape, name="image")
    x = L.Rescaling(1 / 255, name="scale")(inp)
    x = L.ReLU(name="r1")(conv(x, 6, 3, "c1"))
    x = L.ReLU(name="r2")(conv(x, 8, 3, "c2", strides=2, use_bias=True))  # 12x12
    s = conv(x, 8, 1, "c3", bn=False, use_bias=True, activation="relu")  # activation inside: nothing folded
    y = L.ReLU(name="r4")(conv(s, 8, 3, "c4"))
    y = conv(y, 8, 3, "c5")
    x = L.ReLU(name="r5")(L.Add(name="add1")([s, y]))
    y = L.ReLU(name="r6")(conv(x, 12, 3, "c6", strides=2))  # 6x6
    y = conv(y, 12, 3, "c7")
    p = conv(x, 12, 1, "c8", strides=2)  # projection shortcut
    x = L.ReLU(name="r7")(L.Add(name="add2")([p, y]))
    x = L.ReLU(name="r9")(conv(x, 10, 2, "c9", padding="valid", bn=False, use_bias=True))  # even kernel: 5x5
    x = L.MaxPooling2D(2, name="pool")(x)  # 2x2
    x = L.ReLU(name="r10")(conv(x, 16, 3, "c10"))
    x = L.Dropout(0.25, name="drop")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(12, activation="relu", name="fc")(x)
    return keras.Model(inp, L.Dense(n_classes, name="logits")(x), name="ten_convs")


SPEC10 = {"c1": ("c1_bn", 1, "same", None), "c2": ("c2_bn", 2, "same", None), "c3": (None, 1, "same", "relu"),
          "c4": ("c4_bn", 1, "same", None), "c5": ("c5_bn", 1, "same", None), "c6": ("c6_bn", 2, "same", None),
          "c8": ("c8_bn", 2, "same", None), "c7": ("c7_bn", 1, "same", None), "c9": (None, 1, "valid", None),
          "c10": ("c10_bn", 1, "same", None)}
# MACs per image, by hand: output positions x cout x kh x kw x cin; in model order (Keras
# orders layers by depth: the shortcut c8 comes before c7), which is the genome's order
MACS10 = {"c1": 24 * 24 * 6 * 9 * 1, "c2": 12 * 12 * 8 * 9 * 6, "c3": 12 * 12 * 8 * 8, "c4": 12 * 12 * 8 * 9 * 8,
          "c5": 12 * 12 * 8 * 9 * 8, "c6": 6 * 6 * 12 * 9 * 8, "c8": 6 * 6 * 12 * 8, "c7": 6 * 6 * 12 * 9 * 12,
          "c9": 5 * 5 * 10 * 4 * 12, "c10": 2 * 2 * 16 * 9 * 10, "fc": 16 * 12, "logits": 12 * 5}


def forward10(ref, images):
    x = np.asarray(images, F32) * F32(1 / 255)
    x = relu(ref.conv(x, "c1"))
    x = relu(ref.conv(x, "c2"))
    s = ref.conv(x, "c3")
    y = relu(ref.conv(s, "c4"))
    x = relu(s + ref.conv(y, "c5"))
    y = relu(ref.conv(x, "c6"))
    x = relu(ref.conv(x, "c8") + ref.conv(y, "c7"))
    x = relu(ref.conv(x, "c9"))
    x = relu(ref.conv(maxpool(x, 2), "c10"))
    x = x.astype(np.float64).mean(axis=(1, 2)).astype(F32)
    x = relu(ref.dense(x, "fc"))
    return ref.dense(x, "logits")


def relu(x):
    return np.maximum(x, 0).astype(F32)


class Ref:
    """Numpy layers of a network, read from its Keras weights by name: the float network
    (BatchNorm as inference normalisation), or its 8-bit twin (BatchNorm folded by hand, the
    card's input ranges, per-layer tables `luts`; dense layers approximate with `dense=True`).

    With `twin` (the Keras twin) the folded weights are checked against the twin's (float
    tolerance) and the twin's float32 values are quantized: a last-bit difference of the
    folding arithmetic may move a weight across a code boundary, which is not what is tested."""

    def __init__(self, model, spec, ranges=None, luts=None, dense=False, twin=None):
        self.model, self.spec, self.ranges, self.luts, self.approx_dense = model, spec, ranges, luts or {}, dense
        self.twin = twin

    def weights(self, name):
        return [np.asarray(w) for w in self.model.get_layer(name).get_weights()]

    def folded(self, name):
        bn_name = self.spec[name][0]
        kernel, *rest = self.weights(name)
        bias = rest[0].astype(np.float64) if rest else np.zeros(kernel.shape[-1])
        if bn_name is None:
            return kernel.astype(F32), bias.astype(F32)
        gamma, beta, mean, var = self.weights(bn_name)
        eps = self.model.get_layer(bn_name).epsilon
        factor = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
        kernel, bias = (kernel * factor).astype(F32), ((bias - mean) * factor + beta).astype(F32)
        if self.twin is not None:
            layer = self.twin.get_layer(name)
            np.testing.assert_allclose(layer.kernel.numpy(), kernel, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(layer.bias.numpy(), bias, rtol=1e-5, atol=1e-7)
            return layer.kernel.numpy(), layer.bias.numpy()
        return kernel, bias

    def layer(self, x, name):
        """One conv layer of the twin on the given input (what its AxConv2D outputs)."""
        _, strides, padding, activation = self.spec[name]
        kernel, bias = self.folded(name)
        y = approx_conv(x, kernel, bias, self.ranges[name], self.luts.get(name), (strides, strides), padding)
        return relu(y) if activation == "relu" else y.astype(F32)

    def conv(self, x, name):
        if self.ranges is not None:
            return self.layer(x, name)
        bn_name, strides, padding, activation = self.spec[name]
        kernel, *rest = self.weights(name)
        y = conv2d(x, kernel, rest[0] if rest else None, (strides, strides), padding)
        if bn_name is not None:
            y = batchnorm(y, *self.weights(bn_name), self.model.get_layer(bn_name).epsilon)
        return relu(y) if activation == "relu" else y.astype(F32)

    def dense(self, x, name):
        kernel, bias = self.weights(name)
        if self.approx_dense:
            return approx_dense(x, kernel, bias, self.ranges[name], self.luts.get(name)).astype(F32)
        return (np.asarray(x, np.float64) @ kernel + bias).astype(F32)


def randomize_batchnorm(model, seed=0):
    """Non-trivial BatchNorm statistics, so that folding is tested."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.2, c),
                               rng.uniform(0.3, 2.0, c)])


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def nets(project, tmp_path_factory):
    """Both networks, briefly trained on their data and saved without a card."""
    from surrogate_nas.data.datasets import load_images
    from surrogate_nas.data.splits import make_splits

    root = tmp_path_factory.mktemp("any")
    gray = write_gray_dataset(root / "gray")
    cache = root / "cache"
    out = {}
    for name, build, data_path in (("residual3", residual3, project.data), ("ten", ten_convs, gray)):
        data = load_images(data_path, cache_dir=cache, progress=False)
        splits = make_splits(data)
        model = build(data.x_train.shape[1:], len(data.classes))
        keras.utils.set_random_seed(0)
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(splits.x_train.astype(np.float32), splits.y_train.astype(np.int64), epochs=20, batch_size=32, verbose=0)
        path = root / "models" / f"{name}.keras"
        path.parent.mkdir(exist_ok=True)
        model.save(path)
        out[name] = {"path": path, "data": data_path, "dataset": data, "model": model}
    out["cache"] = cache
    out["root"] = root
    return out


def flags(nets, name, **extra):
    return {"model": nets[name]["path"], "data": nets[name]["data"], "cache": nets["cache"], **extra}


# ------------------------------------------------------------------ data


def test_gray_five_class_image_folder(nets):
    data = nets["ten"]["dataset"]
    assert data.classes == GRAY_CLASSES
    assert data.x_train.shape == (5 * GRAY_TRAIN, 24, 24, 1) and data.x_test.shape == (5 * GRAY_TEST, 24, 24, 1)
    assert data.x_train.dtype == np.uint8 and sorted(set(data.y_train.tolist())) == [0, 1, 2, 3, 4]
    assert "image folder, 5 classes, 24x24x1" in data.source
    np.testing.assert_array_equal(np.bincount(data.y_test), [GRAY_TEST] * 5)


# ------------------------------------------------------------------ twins against numpy


@pytest.mark.parametrize("build, spec, forward, shape, classes", [
    (residual3, SPEC3, forward3, (32, 32, 3), 10),
    (ten_convs, SPEC10, forward10, (24, 24, 1), 5),
])
def test_twin_matches_numpy(build, spec, forward, shape, classes):
    """Float network and twin (exact table, then approximate tables, conv and conv+dense)
    against the numpy reference: every approximable layer on its own input, and end to end."""
    from surrogate_nas.network.layers import approx_layers, approximable_layers
    from surrogate_nas.network.measure import calibrate_input_ranges
    from surrogate_nas.network.twin import build_approx_model

    model = build(shape, classes, seed=1)
    randomize_batchnorm(model)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, *shape)).astype(np.float32)
    ref_float = forward(Ref(model, spec), images)
    got = np.asarray(model(images, training=False), np.float64)
    assert np.abs(got - ref_float).max() <= 1e-5 * np.abs(ref_float).max()

    for approximate in ("conv", "conv+dense"):
        layers = approximable_layers(model, approximate)
        names = [layer.name for layer in layers]
        assert names[: len(spec)] == list(spec) and (approximate == "conv") == (len(names) == len(spec))
        ranges = dict(zip(names, calibrate_input_ranges(model, images, layers=layers)))
        twin = build_approx_model(model, [ranges[n] for n in names], approximate=approximate)
        ax = approx_layers(twin, names)
        # the exact table, then a different table in every layer
        tables = {"exact": {}, "mixed": {n: CIRCUITS[("trunc", "lowbits", "noisy")[i % 3]] for i, n in enumerate(names)}}
        for label, luts in tables.items():
            for layer in ax:
                layer.set_multiplier(None if layer.name not in luts else np.asarray(luts[layer.name], np.uint16))
            ref = Ref(model, spec, ranges, luts, dense=approximate == "conv+dense", twin=twin)
            taps = keras.Model(twin.inputs, [t for layer in ax for t in (layer.input, layer.output)])
            outs = taps(images, training=False)
            for i, name in enumerate(names):
                x, y = np.asarray(outs[2 * i]), np.asarray(outs[2 * i + 1], np.float64)
                if name in spec:
                    expected = ref.layer(x, name)
                else:
                    kernel, bias = ref.weights(name)
                    expected = approx_dense(x, kernel, bias, ranges[name], luts.get(name))
                    if twin.get_layer(name).activation is keras.activations.relu:
                        expected = np.maximum(expected, 0)
                assert np.abs(y - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max()), (label, name)
            logits = np.asarray(twin(images, training=False), np.float64)
            expected = forward(ref, images)
            assert np.abs(logits - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max()), (approximate, label)
            assert np.array_equal(logits.argmax(1), expected.argmax(1))
            if label == "mixed":  # the tables matter: the exact-table result differs
                assert not np.allclose(logits, forward(Ref(model, spec, ranges, {}, approximate == "conv+dense", twin),
                                                       images))


def test_sequential_model_and_saved_twin():
    """A Sequential network works as well, and its twin (AxConv2D, AxDense, the folded
    BatchNorm's pass-through) saves and loads to the same outputs."""
    import surrogate_nas.axconv  # noqa: F401  (registers the layers)
    from surrogate_nas.network.layers import approx_layers, approximable_layers
    from surrogate_nas.network.measure import calibrate_input_ranges
    from surrogate_nas.network.twin import build_approx_model

    model = keras.Sequential([keras.Input((12, 12, 3)), L.Rescaling(1 / 255), L.Conv2D(4, 3, use_bias=False, name="a"),
                              L.BatchNormalization(name="bn"), L.ReLU(), L.Conv2D(6, 3, strides=2, name="b"),
                              L.Flatten(), L.Dense(7, activation="relu", name="d"), L.Dense(3, name="out")])
    randomize_batchnorm(model)
    images = np.random.default_rng(1).integers(0, 256, (5, 12, 12, 3)).astype(np.float32)
    layers = approximable_layers(model, "conv+dense")
    assert [layer.name for layer in layers] == ["a", "b", "d", "out"]
    ranges = calibrate_input_ranges(model, images, layers=layers)
    twin = build_approx_model(model, ranges, approximate="conv+dense")
    for layer, table in zip(approx_layers(twin), ("noisy", "trunc", "lowbits", "noisy")):
        layer.set_multiplier(np.asarray(CIRCUITS[table], np.uint16))
    spec = {"a": ("bn", 1, "valid", None), "b": (None, 2, "valid", None)}
    ref = Ref(model, spec, dict(zip(["a", "b", "d", "out"], ranges)),
              {n: CIRCUITS[t] for n, t in zip(["a", "b", "d", "out"], ("noisy", "trunc", "lowbits", "noisy"))}, dense=True,
              twin=twin)
    x = relu(ref.conv(np.asarray(images, F32) * F32(1 / 255), "a"))
    x = ref.conv(x, "b").reshape(len(x), -1)
    expected = ref.dense(relu(ref.dense(x, "d")), "out")
    logits = np.asarray(twin(images, training=False))
    assert np.abs(logits - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        twin.save(Path(folder) / "t.keras")
        loaded = keras.models.load_model(Path(folder) / "t.keras", compile=False)
    np.testing.assert_array_equal(np.asarray(loaded(images, training=False)), logits)


def test_percentile_input_ranges_match_numpy():
    """`calibrate --input-percentile`: each layer's range ends at that percentile of its
    inputs (numpy on a numpy forward pass); the low end moves only where inputs go
    negative; 100 is min..max."""
    from surrogate_nas.network.layers import approximable_layers
    from surrogate_nas.network.measure import calibrate_input_ranges

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((10, 10, 3)), L.Rescaling(1 / 127.5, offset=-1),
                              L.Conv2D(5, 3, activation="relu", name="a"), L.Conv2D(4, 3, name="b")])
    images = np.random.default_rng(2).integers(0, 256, (30, 10, 10, 3)).astype(np.float32)
    layers = approximable_layers(model, "conv")
    x_a = images.astype(np.float64) / 127.5 - 1
    kernel, bias = (w.numpy() for w in model.get_layer("a").weights)
    x_b = relu(conv2d(x_a, kernel, bias, padding="valid"))
    assert x_a.min() < 0 and x_b.min() == 0
    full = calibrate_input_ranges(model, images, layers=layers)
    assert np.allclose(full, [(x_a.min(), x_a.max()), (0, x_b.max())], rtol=1e-5, atol=1e-6)
    for p in (99.0, 90.0):
        got = calibrate_input_ranges(model, images, layers=layers, percentile=p)
        expected = [(np.percentile(x_a, 100 - p), np.percentile(x_a, p)), (0, np.percentile(x_b, p))]
        assert np.allclose(got, expected, rtol=1e-5, atol=1e-6), p
        assert got[0][1] < full[0][1] and got[1][1] < full[1][1]
    # a subsample (here 80 values a batch; every 40th would see one channel) follows every
    # channel, even when their scales alternate
    model.get_layer("a").set_weights([np.concatenate([kernel[..., :1], 50 * kernel[..., 1:2], kernel[..., 2:3],
                                                      50 * kernel[..., 3:4], kernel[..., 4:]], -1), 0 * bias])
    x_b = relu(conv2d(x_a, model.get_layer("a").weights[0].numpy(), None, padding="valid"))
    got = calibrate_input_ranges(model, images, layers=layers, percentile=90.0, batch_size=10, max_values=80)
    assert abs((x_b <= got[1][1]).mean() - 0.9) < 0.06  # its rank among all values, not one channel's


def test_dense_on_rank3_input_is_row_wise():
    """AxDense, like Dense, maps the last axis: each position is one row of the reference."""
    from surrogate_nas.emulation.layers import AxDense

    rng = np.random.default_rng(2)
    dense = L.Dense(5, name="d")
    x = rng.normal(0, 1, (3, 4, 6)).astype(np.float32)
    dense(x)
    dense.set_weights([rng.normal(0, 0.5, (6, 5)).astype(np.float32), rng.normal(0, 0.1, 5).astype(np.float32)])
    layer = AxDense.from_dense(dense, input_range=(float(x.min()), float(x.max())))
    layer.set_multiplier(np.asarray(CIRCUITS["noisy"], np.uint16))
    y = np.asarray(layer(x))
    kernel, bias = dense.get_weights()
    expected = approx_dense(x.reshape(-1, 6), kernel, bias, (float(x.min()), float(x.max())), CIRCUITS["noisy"])
    assert y.shape == (3, 4, 5)
    assert np.abs(y.reshape(-1, 5) - expected).max() <= 1e-5 * np.abs(expected).max()


# ------------------------------------------------------------------ unsupported layers


def _seq(*layers, shape=(16, 16, 3)):
    return keras.Sequential([keras.Input(shape), L.Conv2D(4, 3, name="ok"), *layers, L.Flatten(), L.Dense(3)])


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = L.Conv2D(4, 3)

    def call(self, x):
        return self.conv(x)


def _shared():
    inp = keras.Input((16, 16, 4))
    conv = L.Conv2D(4, 3, padding="same", name="twice")
    return keras.Model(inp, L.Flatten()(conv(conv(inp))))


def _nested():
    inner = keras.Sequential([keras.Input((16, 16, 3)), L.Conv2D(4, 3, name="inner_conv")], name="block")
    inp = keras.Input((16, 16, 3))
    return keras.Model(inp, L.Dense(3)(L.Flatten()(inner(inp))))


@pytest.mark.parametrize("make, pattern", [
    (lambda: _seq(L.DepthwiseConv2D(3, name="dw")), r"^layer dw: DepthwiseConv2D is not emulated"),
    (lambda: _seq(L.SeparableConv2D(4, 3, name="sep")), r"^layer sep: SeparableConv2D is not emulated"),
    (lambda: _seq(L.Conv2DTranspose(4, 3, name="up")), r"^layer up: Conv2DTranspose is not emulated"),
    (lambda: _seq(L.Conv2D(4, 3, dilation_rate=2, name="dil")), r"^layer dil: dilation_rate \(2, 2\)"),
    (lambda: _seq(L.Conv2D(4, 3, groups=2, name="grp")), r"^layer grp: groups=2"),
    (_shared, r"^layer twice: used 2 times in the model; a shared Conv2D is not supported$"),
    (_nested, r"^layer block: a nested model holding approximable layers \(inner_conv\)"),
    (lambda: _Subclassed(), r"a subclassed model cannot be rewritten"),
    (lambda: keras.Sequential([keras.Input((16, 16, 3)), L.Flatten(), L.Dense(3)]), r"no Conv2D layer to approximate"),
    (lambda: keras.Sequential([keras.Input((None, None, 3)), L.Conv2D(4, 3), L.GlobalAveragePooling2D()]),
     r"input shape \(None, None, 3\); expected a fixed"),
])
def test_unsupported_layers_are_one_line_errors(make, pattern):
    from surrogate_nas.network.layers import approximable_layers
    from surrogate_nas.network.twin import build_approx_model

    model = make()
    with pytest.raises(UserError, match=pattern) as err:
        build_approx_model(model)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=pattern):
        approximable_layers(model)


def test_already_approximate_model_is_refused():
    from surrogate_nas.network.layers import approximable_layers
    from surrogate_nas.network.twin import build_approx_model

    model = _seq(L.ReLU())
    twin = build_approx_model(model)
    with pytest.raises(UserError, match=r"^layer ok \(AxConv2D\): the model is already approximate; pass the float model"):
        approximable_layers(twin)


# ------------------------------------------------------------------ the CLI, end to end


def test_residual3_evaluate_calibrates_then_run_and_export(cli, nets, tmp_path):
    """No card: `evaluate` calibrates first (one line); the all-exact genome scores the card's
    8-bit validation accuracy; a full run, a surrogate run and an export work with 3 genes."""
    net = nets["residual3"]
    card_path = net["path"].with_suffix(".json")
    r = cli("evaluate", "--genome", "exact,exact,exact", "--images", "30", **flags(nets, "residual3"))
    assert r.rc == 0, r.err
    assert r.out.splitlines()[0] == f"{net['path']}: no model card; calibrating the model first (writes {card_path})"
    assert r.out.splitlines()[1:4] == ["ConvLayer 1: exact.bin [stem]", "ConvLayer 2: exact.bin [res_a]",
                                       "ConvLayer 3: exact.bin [res_b]"]
    card = json.loads(card_path.read_text())
    assert card["layer_names"] == ["stem", "res_a", "res_b", "logits"]
    assert f"Accuracy: {card['int8_exact_val_accuracy']:.4f} (validation, 30 images)" in r.out
    _run_both_modes_and_export(cli, nets, "residual3", 3, tmp_path)
    # conv+dense: the dense layer is the 4th gene
    r = cli("run", "--mode", "full", "--budget", "6", "--pop-size", "4", "--search-images", "30", "--no-test",
            "--compensation", "none", "--approximate", "conv+dense", "--out", tmp_path / "runs", "--run-id", "cd",
            **flags(nets, "residual3"))
    assert r.rc == 0, r.err
    evaluations = read_csv(tmp_path / "runs" / "cd" / "evaluations.csv")
    assert all(len(e["genome_indices"].split(",")) == 4 and e["layers"] == "stem;res_a;res_b;logits" for e in evaluations)
    report = (tmp_path / "runs" / "cd" / "report.txt").read_text()
    assert "DenseLayer 4: " in report and report.count("[logits]") == report.count("# Pareto point")
    config = json.loads((tmp_path / "runs" / "cd" / "config.json").read_text())
    assert config["search"]["approximate"] == "conv+dense" and config["evaluator"]["approximate"] == "conv+dense"


def test_ten_convs_calibrate_evaluate_run_export(cli, nets, tmp_path):
    net = nets["ten"]
    r = cli("calibrate", "--model", net["path"], "--data", net["data"], "--cache", nets["cache"], paths=False)
    assert r.rc == 0, r.err
    card = json.loads(net["path"].with_suffix(".json").read_text())
    assert card["layer_names"] == list(MACS10)
    assert card["macs_per_layer"] == list(MACS10.values())
    assert [layer["kind"] for layer in card["layers"]] == ["conv"] * 10 + ["dense"] * 2
    assert card["input_shape"] == [24, 24, 1] and card["n_classes"] == 5 and card["classes"] == list(GRAY_CLASSES)
    assert card["calibration_images"] == 180 and len(card["input_ranges"]) == 12
    for key in ("float_val_accuracy", "float_test_accuracy", "int8_exact_val_accuracy", "int8_exact_test_accuracy"):
        assert 0 <= card[key] <= 1
    assert card["float_test_accuracy"] > 0.4  # learned something (chance: 0.2)
    assert f"{sum(MACS10.values()):,} MACs per image" in r.out
    again = cli("calibrate", "--model", net["path"], "--data", net["data"], "--cache", nets["cache"], paths=False)
    assert again.rc == 2 and again.err_lines == [f"error: {net['path'].with_suffix('.json')}: the card of {net['path']} "
                                                 "is current; pass --force to measure it again (evaluations cached "
                                                 "under the old card are then not reused)"]

    # all-exact on all 20 validation images = the card's 8-bit validation accuracy
    doc = _evaluate_json(cli, nets, ",".join(["exact"] * 10))
    assert doc["accuracy"] == card["int8_exact_val_accuracy"] and doc["energy"] == 1.0
    assert doc["layers"] == list(MACS10)[:10]
    # energy from the model's MACs
    genome = ["trunc", "lowbits", "noisy", "zero", "exact"] * 2
    from conftest import POWERS

    doc = _evaluate_json(cli, nets, ",".join(genome))
    macs = np.array(list(MACS10.values())[:10], float)
    assert doc["energy"] == pytest.approx((macs * [POWERS[g] for g in genome]).sum() / (macs.sum() * POWERS["exact"]))
    # conv+dense: 12 genes; the dense layers' tables change the result
    exact12 = _evaluate_json(cli, nets, ",".join(["exact"] * 12), "--approximate", "conv+dense")
    assert exact12["layers"] == list(MACS10) and exact12["fingerprint"] != doc["fingerprint"]
    zero_dense = _evaluate_json(cli, nets, ",".join(["exact"] * 10 + ["zero", "zero"]), "--approximate", "conv+dense")
    assert zero_dense["energy"] < 1.0
    r = cli("evaluate", "--genome", ",".join(["exact"] * 10), "--images", "20", "--approximate", "conv+dense",
            **flags(nets, "ten"))
    assert r.rc == 2 and r.err_lines == ["error: --genome: expected 12 multipliers (one per approximable layer), got 10"]
    _run_both_modes_and_export(cli, nets, "ten", 10, tmp_path)


def _evaluate_json(cli, nets, genome, *extra):
    r = cli("evaluate", "--genome", genome, "--images", "20", "--json", "--compensation", "none", *extra,
            **flags(nets, "ten"))
    assert r.rc == 0, r.err
    return json.loads(r.out)


def _run_both_modes_and_export(cli, nets, name, n_layers, tmp_path):
    import surrogate_nas.axconv  # noqa: F401  (registers AxConv2D with Keras)
    from surrogate_nas.data.splits import make_splits
    from surrogate_nas.evaluation.images import select_images

    net = nets[name]
    names = json.loads(net["path"].with_suffix(".json").read_text())["layer_names"][:n_layers]
    runs = tmp_path / "runs"
    n_val = len(make_splits(net["dataset"]).y_val)
    for mode, budget, comp in (("full", 8, "none"), ("surrogate", 10, "auto")):
        r = cli("run", "--mode", mode, "--budget", str(budget), "--pop-size", "4", "--search-images", str(n_val),
                "--test-images", "20", "--compensation", comp, "--out", runs, "--run-id", mode, **flags(nets, name))
        assert r.rc == 0, r.err
        front = read_csv(runs / mode / "front.csv")
        evaluations = read_csv(runs / mode / "evaluations.csv")
        assert len(evaluations) == budget
        assert all(len(e["genome_indices"].split(",")) == n_layers and e["layers"] == ";".join(names)
                   for e in evaluations)
        assert f"{EXACT_INDEX}," * (n_layers - 1) + str(EXACT_INDEX) in {e["genome_indices"] for e in evaluations}
        report = (runs / mode / "report.txt").read_text()
        lines = [line for line in report.splitlines() if line.startswith("ConvLayer")]
        assert len(lines) == n_layers * len(front)
        assert [line.rsplit(" [", 1)[1].rstrip("]") for line in lines[:n_layers]] == names
        config = json.loads((runs / mode / "config.json").read_text())
        assert [layer["name"] for layer in config["layers"]] == names
        assert len(config["evaluator"]["input_ranges"]) == n_layers
    # export the first front point of the full run: loads, and scores what the run scored
    out = tmp_path / "design" / "x.keras"
    r = cli("export", runs / "full", "--point", "1", "--out", out, **flags(nets, name))
    assert r.rc == 0, r.err
    doc = json.loads(out.with_name("design.json").read_text())
    front = read_csv(runs / "full" / "front.csv")
    assert [layer["layer"] for layer in doc["layers"]] == names
    assert doc["search_set_accuracy"] == pytest.approx(float(front[0]["search_accuracy"]), abs=5e-7)
    model = keras.models.load_model(out, compile=False)
    data = net["dataset"]
    images = select_images(make_splits(data), data.source_hash, "validation", n_val)
    pred = np.argmax(np.asarray(model(images.images.astype(np.float32))), axis=1)
    assert np.mean(pred == images.labels) == doc["search_set_accuracy"]
    if name == "ten":  # the exported network is the numpy twin with the design's tables
        card = json.loads(net["path"].with_suffix(".json").read_text())
        ranges = dict(zip(card["layer_names"], card["input_ranges"]))
        luts = {layer["layer"]: CIRCUITS[layer["circuit"]] for layer in doc["layers"]}
        expected = forward10(Ref(net["model"], SPEC10, ranges, luts, twin=model), images.images)
        got = np.asarray(model(images.images.astype(np.float32)), np.float64)
        assert np.abs(got - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


def test_resnet8_one_tiny_epoch(cli, project, tmp_path):
    """`train --arch resnet8` trains tf-approximate's ResNet-8 (here 1 epoch on the tiny
    fixture data) and writes its card: 9 conv layers, 12.5 M conv MACs per 32x32x3 image."""
    model = tmp_path / "r8.keras"
    with isolated_cwd(tmp_path):
        r = cli("train", "--arch", "resnet8", "--epochs", "1", "--batch-size", "32", "--model", model,
                "--data", project.data, "--cache", project.cache, paths=False)
    assert r.rc == 0, r.err
    assert "resnet8: 78,714 parameters, 12,501,632 MACs per image (12,500,992 in conv layers)" in r.out
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["arch"] == "resnet8" and card["epochs"] == 1
    assert card["layer_names"] == ["conv1", "stage1_conv1", "stage1_conv2", "stage2_conv1", "stage2_shortcut",
                                   "stage2_conv2", "stage3_conv1", "stage3_shortcut", "stage3_conv2", "logits"]
    assert sum(card["macs_per_layer"][:9]) == 12_500_992
    r = cli("evaluate", "--genome", ",".join(["exact"] * 9), "--images", "20", "--compensation", "none", model=model)
    assert r.rc == 0, r.err
    assert "ConvLayer 9: exact.bin [stage3_conv2]" in r.out
