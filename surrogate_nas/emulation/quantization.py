"""8-bit quantization exactly as TF's fake-quant (nudged range, round half away from
zero) and the output geometry of a convolution."""

from __future__ import annotations

import tensorflow as tf

QMAX = 255.0


def nudge(vmin: tf.Tensor, vmax: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """TensorFlow's fake-quant nudge in float32, as the original op computes it.

    Returns (scale, inverse scale, nudged minimum, zero-point code). A (0, 0) range gives
    all zeros, as in the original; min == max != 0 gives scale 0 (see module docstring).
    """
    vmin = tf.cast(vmin, tf.float32)
    vmax = tf.cast(vmax, tf.float32)
    both_zero = tf.logical_and(tf.equal(vmin, 0.0), tf.equal(vmax, 0.0))
    scale = (vmax - vmin) / tf.constant(QMAX, tf.float32)
    safe_scale = tf.where(tf.equal(scale, 0.0), tf.ones_like(scale), scale)
    zp_from_min = tf.where(
        tf.equal(scale, 0.0),
        # min/0 is +-inf in the original: the zero point then clamps to 0 or 255.
        tf.where(vmin > 0.0, -tf.ones_like(vmin), tf.fill(tf.shape(vmin), QMAX + 1.0)),
        0.0 - vmin / safe_scale,
    )
    zero_point = tf.clip_by_value(_round_half_away(zp_from_min), 0.0, QMAX)
    nudged_min = (0.0 - zero_point) * scale
    inv_scale = tf.where(tf.equal(scale, 0.0), tf.zeros_like(scale), 1.0 / safe_scale)
    zeros = tf.zeros_like(scale)
    return (
        tf.where(both_zero, zeros, scale),
        tf.where(both_zero, zeros, inv_scale),
        tf.where(both_zero, zeros, nudged_min),
        tf.where(both_zero, zeros, zero_point),
    )


def _round_half_away(x: tf.Tensor) -> tf.Tensor:
    """std::round: halves go away from zero (tf.round would round them to even)."""
    whole = tf.math.sign(x) * tf.floor(tf.abs(x))
    frac = tf.abs(x - whole)
    return whole + tf.where(frac >= 0.5, tf.math.sign(x), tf.zeros_like(x))


def quantize_codes(values: tf.Tensor, inv_scale, nudged_min, zero_point, scale) -> tf.Tensor:
    """8-bit codes as floats: floor((v - m) * (1/s) + 0.5), clamped to [0, 255]."""
    codes = tf.floor((values - nudged_min) * inv_scale + 0.5)
    codes = tf.clip_by_value(codes, 0.0, QMAX)
    return tf.where(tf.equal(scale, 0.0), tf.fill(tf.shape(values), zero_point), codes)


def output_geometry(size: int, k: int, stride: int, padding: str) -> tuple[int, int, int]:
    """(output size, pad before, pad after) with the original's window origin.

    The original places windows at ``out*stride - offset`` with a C-integer-division
    offset; for the usual strides this equals TensorFlow's SAME/VALID padding, and in
    the rare cases where it differs we follow the original. Negative pads crop.
    """
    if padding == "SAME":
        out = -(-size // stride)
        offset = _c_div((out - 1) * stride + k - size, 2)
    else:
        out = -(-(size - k + 1) // stride)
        offset = _c_div((out - 1) * stride + k - size + 1, 2)
    needed = (out - 1) * stride + k
    return out, offset, needed - size - offset


def _c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _pad_spatial(t: tf.Tensor, pads: tuple[tuple[int, int], tuple[int, int]], value) -> tf.Tensor:
    """Pad (or crop, for negative amounts) the H and W axes of an NHWC tensor."""
    (top, bottom), (left, right) = pads
    crop = [max(0, -top), max(0, -bottom), max(0, -left), max(0, -right)]
    if any(crop):
        h = tf.shape(t)[1]
        w = tf.shape(t)[2]
        t = t[:, crop[0] : h - crop[1], crop[2] : w - crop[3], :]
    grow = [[0, 0], [max(0, top), max(0, bottom)], [max(0, left), max(0, right)], [0, 0]]
    if any(max(0, p) for p in (top, bottom, left, right)):
        t = tf.pad(t, grow, constant_values=value)
    return t
