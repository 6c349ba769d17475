"""An independent numpy forward pass of the project's network (build_model's layer
sequence) and of its 8-bit twin with an all-exact multiplier: BatchNorm folded by hand, tf-approximate's fake
quantization (TensorFlow's float32 nudge) and its op's output formula on the fake-quantized
operands, `y = s_in s_w SUM(a w) + m_w SUM(x) + m_in SUM(kernel) - K m_in m_w`. No TensorFlow."""

from __future__ import annotations

import math

import numpy as np

F32 = np.float32
POOL_AFTER = (0, 1, 2)


def nudge(lo, hi) -> tuple[np.float32, np.float32, np.float32, int]:
    """(scale, 1/scale, nudged min, zero point) as TensorFlow's FakeQuant computes them in float32."""
    lo, hi = F32(lo), F32(hi)
    if lo == 0 and hi == 0:
        return F32(0), F32(0), F32(0), 0
    scale = F32((hi - lo) / F32(255))
    if scale == 0:
        zp = 0 if lo > 0 else 255
    else:
        zp_float = F32(F32(0) - F32(lo / scale))
        zp = 0 if zp_float < 0 else 255 if zp_float > 255 else int(math.floor(float(zp_float) + 0.5))
    inv = F32(F32(1) / scale) if scale != 0 else F32(0)
    return scale, inv, F32(F32(-zp) * scale), zp


def codes(values, q) -> np.ndarray:
    scale, inv, nudged_min, zp = q
    values = np.asarray(values, F32)
    if scale == 0:
        return np.full(values.shape, zp, np.int64)
    return np.clip(np.floor((values - nudged_min) * inv + F32(0.5)), 0, 255).astype(np.int64)


def conv3x3_same(x: np.ndarray, kernel: np.ndarray, pad_value: float = 0.0) -> np.ndarray:
    """Stride-1 3x3 'same' convolution (cross-correlation, as TensorFlow) in float64."""
    n, h, w, _ = x.shape
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=pad_value)
    out = np.zeros((n, h, w, kernel.shape[-1]))
    for dy in range(3):
        for dx in range(3):
            out += xp[:, dy:dy + h, dx:dx + w, :] @ np.asarray(kernel[dy, dx], np.float64)
    return out


def fold_batchnorm(kernel, gamma, beta, mean, var, eps) -> tuple[np.ndarray, np.ndarray]:
    """conv (no bias) then BatchNorm == conv with kernel * g / sqrt(var + eps) and bias beta - mean * that."""
    factor = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    return np.asarray(kernel, np.float64) * factor, np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * factor


def fake_quant(values, q) -> np.ndarray:
    """TensorFlow's fake_quant_with_min_max_vars: the value of the nearest of the 256 codes.
    Its kernel (TF 2.21) divides by the scale, floor((v - m) / s + 0.5), which in rare
    last-bit cases rounds differently from multiplying by 1/s (measured: 0 differences in
    10^6 values this way, a few with the reciprocal)."""
    scale, _, nudged_min, zp = q
    values = np.asarray(values, F32)
    if scale == 0:
        grid = np.full(values.shape, zp, np.int64)
    else:
        grid = np.clip(np.floor(((values - nudged_min) / scale).astype(F32) + F32(0.5)), 0, 255).astype(np.int64)
    return (grid.astype(F32) * scale + nudged_min).astype(F32)


def approx_conv_exact(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, input_range) -> np.ndarray:
    """One AxConv2D with the exact table, as tf-approximate's FakeApproxConv2D: the input
    (calibrated range) and kernel (own min/max) fake-quantized, then the op's formula on them."""
    x = np.asarray(x, F32)
    kernel = np.asarray(kernel, F32)
    qi, qw = nudge(*input_range), nudge(kernel.min(), kernel.max())
    x_q, k_q = fake_quant(x, qi), fake_quant(kernel, qw)
    a, wc = codes(x_q, qi), codes(k_q, qw)
    pad_code = int(codes(np.zeros(1), qi)[0])  # a padding tap enters as the value 0.0
    products = conv3x3_same(a.astype(np.float64), wc.astype(np.float64), pad_value=pad_code)  # SUM a*w, exact
    x_sum = conv3x3_same(x_q, np.ones(kernel.shape[:3] + (1,)), pad_value=0.0)
    taps = int(np.prod(kernel.shape[:3]))
    kernel_sum = k_q.astype(np.float64).reshape(taps, -1).sum(axis=0)
    s_in, s_w, m_in, m_w = float(qi[0]), float(qw[0]), float(qi[2]), float(qw[2])
    return s_in * s_w * products + m_w * x_sum + m_in * kernel_sum - taps * m_in * m_w + bias


def maxpool2(x: np.ndarray) -> np.ndarray:
    n, h, w, c = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def weights_of(model) -> dict:
    """The numbers of a build_model network, read layer by layer."""
    get = lambda name: [np.asarray(w) for w in model.get_layer(name).get_weights()]  # noqa: E731
    convs = []
    for i in range(5):
        (kernel,) = get(f"conv{i + 1}")
        gamma, beta, mean, var = get(f"bn{i + 1}")
        convs.append((kernel, gamma, beta, mean, var, model.get_layer(f"bn{i + 1}").epsilon))
    return {"convs": convs, "fc1": get("fc1"), "logits": get("logits")}


def _head(x: np.ndarray, weights: dict) -> np.ndarray:
    x = x.reshape(len(x), -1)
    w1, b1 = weights["fc1"]
    x = np.maximum(x @ w1 + b1, 0.0)
    w2, b2 = weights["logits"]
    return x @ w2 + b2


def float_forward(images: np.ndarray, weights: dict) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits of the float network (BatchNorm as inference normalisation, not folded) and
    the input of every conv layer."""
    x = np.asarray(images, F32) * F32(1.0 / 255.0)
    conv_inputs = []
    for i, (kernel, gamma, beta, mean, var, eps) in enumerate(weights["convs"]):
        conv_inputs.append(x)
        y = conv3x3_same(x, kernel)
        y = (y - mean) / np.sqrt(var.astype(np.float64) + eps) * gamma + beta
        x = np.maximum(y, 0.0)
        if i in POOL_AFTER:
            x = maxpool2(x)
    return _head(x, weights), conv_inputs


def approx_forward(images: np.ndarray, weights: dict, input_ranges) -> np.ndarray:
    """Logits of the 8-bit twin with the exact multiplier in every conv layer."""
    x = np.asarray(images, F32) * F32(1.0 / 255.0)
    for i, (kernel, gamma, beta, mean, var, eps) in enumerate(weights["convs"]):
        folded, bias = fold_batchnorm(kernel, gamma, beta, mean, var, eps)
        y = approx_conv_exact(x, folded.astype(F32), bias.astype(F32), input_ranges[i])
        x = np.maximum(y, 0.0).astype(F32)
        if i in POOL_AFTER:
            x = maxpool2(x)
    return _head(x, weights)


# --------------------------------------------------------------------------- any network
# Building blocks for hand-written references of other networks (tests/test_any_model.py):
# convolutions of any kernel size, stride and TensorFlow padding, and the 8-bit layer with
# any 256x256 table, summing table entries tap by tap (no factorisation, no TensorFlow).


def _pads(size: int, k: int, stride: int, padding: str) -> tuple[int, int, int]:
    """(output size, pad before, pad after) as TensorFlow's SAME / VALID define them."""
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
        return out, total // 2, total - total // 2
    return (size - k) // stride + 1, 0, 0


def patches(x: np.ndarray, kh: int, kw: int, strides=(1, 1), padding: str = "same", pad_value=0.0) -> np.ndarray:
    """(N, OH, OW, kh*kw*cin) windows of an NHWC array, taps in HWIO kernel order."""
    n, h, w, c = x.shape
    oh, top, bottom = _pads(h, kh, strides[0], padding)
    ow, left, right = _pads(w, kw, strides[1], padding)
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=pad_value)
    cols = [xp[:, dy:dy + (oh - 1) * strides[0] + 1:strides[0], dx:dx + (ow - 1) * strides[1] + 1:strides[1], :]
            for dy in range(kh) for dx in range(kw)]
    return np.concatenate(cols, axis=3)


def conv2d(x, kernel, bias=None, strides=(1, 1), padding: str = "same") -> np.ndarray:
    """Float convolution (cross-correlation, as TensorFlow) in float64."""
    kh, kw, cin, cout = kernel.shape
    out = patches(np.asarray(x, np.float64), kh, kw, strides, padding) @ np.asarray(kernel, np.float64).reshape(-1, cout)
    return out if bias is None else out + np.asarray(bias, np.float64)


def approx_conv(x, kernel, bias, input_range, lut=None, strides=(1, 1), padding: str = "same") -> np.ndarray:
    """tf-approximate's FakeApproxConv2D with table `lut` (None: exact): input (calibrated
    range) and kernel (own min/max) fake-quantized, then per output
    `s_in s_w SUM lut[a, w] + m_w SUM x + m_in SUM kernel - K m_in m_w + bias`, the table
    looked up for every tap (a padding tap is the value 0.0: code = zero point)."""
    x = np.asarray(x, F32)
    kernel = np.asarray(kernel, F32)
    kh, kw, cin, cout = kernel.shape
    qi, qw = nudge(*input_range), nudge(kernel.min(), kernel.max())
    x_q, k_q = fake_quant(x, qi), fake_quant(kernel, qw)
    a, wc = codes(x_q, qi), codes(k_q, qw).reshape(-1, cout)
    pad_code = int(codes(np.zeros(1), qi)[0])
    table = (np.multiply.outer(np.arange(256), np.arange(256)) if lut is None else np.asarray(lut)).astype(np.int64)
    a_taps = patches(a, kh, kw, strides, padding, pad_value=pad_code)  # N, OH, OW, K
    products = table[a_taps[..., :, None], wc[None, None, None, :, :]].sum(axis=3).astype(np.float64)
    x_sum = patches(x_q.astype(np.float64), kh, kw, strides, padding).sum(axis=3, keepdims=True)
    taps = kh * kw * cin
    kernel_sum = k_q.astype(np.float64).reshape(taps, -1).sum(axis=0)
    s_in, s_w, m_in, m_w = float(qi[0]), float(qw[0]), float(qi[2]), float(qw[2])
    return s_in * s_w * products + m_w * x_sum + m_in * kernel_sum - taps * m_in * m_w + np.asarray(bias, np.float64)


def approx_dense(x, kernel, bias, input_range, lut=None) -> np.ndarray:
    """A dense layer with the same table semantics: a 1x1 convolution on a 1x1 image."""
    x = np.asarray(x, F32)
    return approx_conv(x.reshape(len(x), 1, 1, -1), np.asarray(kernel).reshape(1, 1, *np.shape(kernel)), bias,
                       input_range, lut, padding="valid").reshape(len(x), -1)


def batchnorm(x, gamma, beta, mean, var, eps) -> np.ndarray:
    return (np.asarray(x, np.float64) - mean) / np.sqrt(np.asarray(var, np.float64) + eps) * gamma + beta


def maxpool(x: np.ndarray, k: int = 2) -> np.ndarray:
    n, h, w, c = x.shape
    return x[:, : h // k * k, : w // k * k].reshape(n, h // k, k, w // k, k, c).max(axis=(2, 4))
