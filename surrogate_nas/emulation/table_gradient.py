"""The multiplier's own gradient for retraining, as an alternative to the straight-through
estimator (STE). The STE back-propagates as if every product were exact, so training never
sees how the circuit's error changes with an operand: a truncating circuit whose products
grow 10 % slower than a*w still gets the exact slope. Here the error table's leading
components are differentiated instead:

    lut[a, w] = a*w + E[a, w],   E ~ sum_i u_i(a) v_i(w)  (top `rank` SVD components)
    d lut / d w ~ a + sum_i u_i(a) v_i'(w),   d lut / d a ~ w + sum_i u_i'(a) v_i(w)

with u', v' central differences over +-`halfwidth` codes (one-sided at the table's edges).
Only the leading components: they carry the systematic part of the error (a truncating or
scaling circuit is nearly rank 1), while differences of the high-rank remainder are noise
with no useful direction. The forward pass stays the exact table emulation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from surrogate_nas.emulation.decomposition import decompose
from surrogate_nas.emulation.quantization import nudge, output_geometry


@dataclass(frozen=True)
class GradientFactors:
    u: np.ndarray  # (256, r): input-code factors
    du: np.ndarray  # their smoothed derivatives over the code
    v: np.ndarray  # (256, r): weight-code factors
    dv: np.ndarray


def smoothed_difference(f: np.ndarray, halfwidth: int) -> np.ndarray:
    """d f / d code along axis 0: (f[c + h] - f[c - h]) / (2h), the window cut at 0 and 255."""
    if halfwidth < 1:
        raise ValueError(f"halfwidth: must be >= 1, got {halfwidth}")
    c = np.arange(f.shape[0])
    hi = np.minimum(c + halfwidth, f.shape[0] - 1)
    lo = np.maximum(c - halfwidth, 0)
    return ((f[hi] - f[lo]) / (hi - lo)[:, None]).astype(np.float32)


def gradient_factors(lut, rank: int, halfwidth: int) -> GradientFactors:
    """The leading `rank` components of `lut`'s error table and their derivatives."""
    if rank < 1:
        raise ValueError(f"rank: must be >= 1, got {rank}")
    dec = decompose(lut, max_rank=rank)
    return GradientFactors(dec.u, smoothed_difference(dec.u, halfwidth), dec.v, smoothed_difference(dec.v, halfwidth))


def _linearized(codes: tf.Tensor, f: tf.Tensor, df: tf.Tensor) -> tf.Tensor:
    """f(round(codes)) in value, df(round(codes)) as the derivative: (..., r)."""
    idx = tf.cast(tf.stop_gradient(tf.clip_by_value(tf.round(codes), 0.0, 255.0)), tf.int32)
    delta = codes - tf.stop_gradient(codes)  # 0, with gradient 1
    return tf.gather(f, idx) + delta[..., None] * tf.gather(df, idx)


def error_gradient_term(x_q, k_q, input_range, kernel_range, strides, padding, u, du, v, dv) -> tf.Tensor:
    """A tensor whose gradient with respect to (x_q, k_q) is the table-derivative part of
    the layer's gradient: s_in * s_w * sum over the window of E_r(a, w), each factor
    linearised around the operands' codes. Quantization ranges are held fixed, as the STE
    holds them."""
    kh, kw, cin, cout = k_q.shape
    s_in, _, m_in, _ = (tf.stop_gradient(t) for t in nudge(*input_range))
    s_w, _, m_w, _ = (tf.stop_gradient(t) for t in nudge(*kernel_range))
    _, top, bottom = output_geometry(x_q.shape[1], kh, strides[0], padding)
    _, left, right = output_geometry(x_q.shape[2], kw, strides[1], padding)
    x = tf.pad(x_q, [[0, 0], [top, bottom], [left, right], [0, 0]])  # padding taps: the value 0.0
    rank = tf.shape(u)[1]
    a = _linearized((x - m_in) / s_in, u, du)  # (n, h, w, cin, r)
    a = tf.reshape(a, tf.concat([tf.shape(x)[:3], [cin * rank]], 0))
    w = _linearized((k_q - m_w) / s_w, v, dv)  # (kh, kw, cin, cout, r)
    w = tf.reshape(tf.transpose(w, [0, 1, 2, 4, 3]), [kh, kw, cin * rank, cout])
    return (s_in * s_w) * tf.nn.conv2d(a, w, [1, strides[0], strides[1], 1], "VALID")
