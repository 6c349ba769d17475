"""Exact emulation of tf-approximate's approximate convolution on stock TensorFlow.

tf-approximate (`ApproxConv2DWithMinMaxVars`) quantizes input and kernel to 8-bit codes
and looks every product up in a 256x256 table. A per-product gather is hundreds of times
slower than a float convolution on a CPU, so we split each table into the exact product
and an error table, ``lut[a, w] = a*w + E[a, w]``, and factor ``E = sum_i u_i(a) v_i(w)``
(SVD). Then the sum of table values over a window is one ordinary convolution of the
codes plus one convolution of channel-stacked ``u_i(codes)`` with ``v_i(kernel codes)``:
exact up to float32 rounding when every component is kept (mode "exact"), or a bounded
approximation when the rank is cut (mode "truncated").

The arithmetic reproduced per output (K = kh*kw*cin taps, m = nudged minimum, s = scale):

    y = s_in*s_w*SUM(lut[a_k, w_k]) + m_w*SUM(x_k) + m_in*SUM(kernel_k) - K*m_in*m_w

evaluated here in the numerically better conditioned but algebraically identical form

    y = conv(deq(a), deq(w)) + s_in*s_w*SUM(E[a_k, w_k])
        + m_w*SUM(x_k - deq(a_k)) + m_in*SUM(kernel_k - deq(w_k))

where deq(code) = code*s + m (0.0 exactly for the zero-point code of padding taps).

Deviations from the original, all in cases where its C++ is undefined behaviour:
codes outside [0, 255] are clamped (the original wraps them modulo 256), and a range with
min == max != 0 (scale 0) maps every value to the zero-point code, which makes the table
term vanish as the original's formula does (y = m_w*SUM(x) + m_in*SUM(kernel)).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from threadpoolctl import threadpool_limits

from surrogate_nas.multipliers import error_table, exact_table, load_lut

QMAX = 255.0
# Exact-mode error tables of higher rank are summed by gathering (cost independent of
# rank) instead of by factors; set from bench_axconv.py measurements.
GATHER_RANK_THRESHOLD = 30
# Largest stacked-component tensor (bytes) materialised at once; bigger ranks are chunked.
DEFAULT_CHUNK_BYTES = 192 * 1024 * 1024


# ----------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Decomposition:
    """Error table factors: E[a, w] ~= sum_i u[a, i] * v[w, i].

    `max_abs_error` bounds |E - u v^T| over all 65,536 code pairs (0 when exact up to
    rounding); `weighted_rms_error` is the RMS of that residual under the code
    distributions used to weight the truncation (uniform when none were given).
    """

    u: np.ndarray  # (256, rank) float32, activation side
    v: np.ndarray  # (256, rank) float32, weight side
    full_rank: int
    exact: bool
    max_abs_error: float
    weighted_rms_error: float

    @property
    def rank(self) -> int:
        return int(self.u.shape[1])


def as_lut(lut) -> np.ndarray:
    """Accept a uint16 (256, 256) array, a `.bin` path, or a catalog entry (has `.lut`)."""
    if hasattr(lut, "lut"):
        lut = lut.lut
    if isinstance(lut, (str, Path)):
        lut = load_lut(Path(lut))
    if isinstance(lut, tf.Tensor):
        lut = lut.numpy()
    if not isinstance(lut, np.ndarray):
        raise TypeError(f"lut: expected a (256, 256) uint16 array, a .bin path or a catalog entry, got {type(lut).__name__}")
    if lut.shape != (256, 256):
        raise ValueError(f"lut: expected shape (256, 256), got {lut.shape}")
    if lut.dtype != np.uint16:
        if not np.issubdtype(lut.dtype, np.integer) or lut.min() < 0 or lut.max() > 65535:
            raise ValueError(f"lut: expected dtype uint16 (or integers in 0..65535), got {lut.dtype}")
        lut = lut.astype(np.uint16)
    return lut


@functools.lru_cache(maxsize=256)
def _svd(key: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    err = error_table(np.frombuffer(key, dtype=np.uint16).reshape(256, 256)).astype(np.float64)
    with threadpool_limits(1):  # 256x256: threads only add contention on a busy 2-core machine
        return np.linalg.svd(err)


def decompose(
    lut,
    max_rank: int | None = None,
    input_weights: np.ndarray | None = None,
    kernel_weights: np.ndarray | None = None,
) -> Decomposition:
    """Factor the error table of `lut`.

    With `max_rank=None` all components are kept (exact mode). With a `max_rank` the
    truncation minimises the error weighted by the code distributions the layer really
    sees (`input_weights`, `kernel_weights`: histograms over the 256 codes), so the
    neglected part is small where codes are frequent.
    """
    lut = as_lut(lut)
    err = error_table(lut).astype(np.float64)
    if max_rank is None or input_weights is None and kernel_weights is None:
        left, sing, right_t = _svd(np.ascontiguousarray(lut).tobytes())
        p_in = p_w = np.ones(256)
    else:
        p_in = _distribution(input_weights)
        p_w = _distribution(kernel_weights)
        ra, rw = np.sqrt(p_in), np.sqrt(p_w)
        left, sing, right_t = np.linalg.svd(ra[:, None] * err * rw[None, :])
        left = left / ra[:, None]
        right_t = right_t / rw[None, :]
    tol = sing[0] * 256 * np.finfo(np.float64).eps if sing.size and sing[0] > 0 else 0.0
    full_rank = int(np.sum(sing > tol))
    rank = full_rank if max_rank is None else min(full_rank, int(max_rank))
    root = np.sqrt(sing[:rank])
    u = left[:, :rank] * root[None, :]
    v = right_t[:rank, :].T * root[None, :]
    residual = err - u @ v.T
    weights = np.outer(p_in, p_w)
    weights /= weights.sum()
    return Decomposition(
        u=u.astype(np.float32),
        v=v.astype(np.float32),
        full_rank=full_rank,
        exact=rank == full_rank,
        max_abs_error=float(np.abs(residual).max()) if rank < full_rank else 0.0,
        weighted_rms_error=float(np.sqrt(np.sum(weights * residual**2))),
    )


def _distribution(hist: np.ndarray | None) -> np.ndarray:
    """A strictly positive distribution over codes, so no code is ignored entirely."""
    if hist is None:
        return np.full(256, 1.0 / 256)
    p = np.asarray(hist, dtype=np.float64).reshape(256)
    p = p / max(p.sum(), 1e-300)
    p = p + 1e-6
    return p / p.sum()


# ----------------------------------------------------------------- quantization maths


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


# ------------------------------------------------------------------------ geometry


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


# ----------------------------------------------------------------------- the core op


def _conv(x: tf.Tensor, kernel: tf.Tensor, strides) -> tf.Tensor:
    """VALID conv2d; a single input channel is padded with a zero channel because
    TF 2.21's oneDNN conv2d returns wrong rows for cin=1, batch>=2, strides (1, >=2)
    and output width 1 (mathematically identical, and cheap)."""
    if x.shape[-1] == 1:  # concat, not tf.pad: grappler fuses Pad into oneDNN's conv
        x = tf.concat([x, tf.zeros_like(x)], axis=3)
        kernel = tf.concat([kernel, tf.zeros_like(kernel)], axis=2)
    return tf.nn.conv2d(x, kernel, strides, "VALID")


def approx_conv_core(
    x: tf.Tensor,
    kernel: tf.Tensor,
    input_range: tuple[tf.Tensor, tf.Tensor],
    kernel_range: tuple[tf.Tensor, tf.Tensor],
    strides: tuple[int, int],
    padding: str,
    error_fn,
) -> tf.Tensor:
    """The emulated op on tensors; graph-friendly.

    `error_fn(codes, kernel_codes, conv_strides)` returns the per-output sum of the
    error table over the window (see `factor_error` and `gathered_error`); `codes` are
    already padded. Spatial sizes of `x` and `kernel` must be static.
    """
    kh, kw, cin, cout = kernel.shape
    height, width = x.shape[1], x.shape[2]
    s_in, inv_in, m_in, zp_in = nudge(*input_range)
    s_w, inv_w, m_w, zp_w = nudge(*kernel_range)

    out_h, top, bottom = output_geometry(height, kh, strides[0], padding)
    out_w, left, right = output_geometry(width, kw, strides[1], padding)
    pads = ((top, bottom), (left, right))
    conv_strides = [1, strides[0], strides[1], 1]

    a = quantize_codes(x, inv_in, m_in, zp_in, s_in)
    a = _pad_spatial(a, pads, zp_in)  # padding taps are the value 0.0 -> zero-point code
    x_deq = a * s_in + m_in  # exactly 0.0 on padding taps
    wc = quantize_codes(kernel, inv_w, m_w, zp_w, s_w)
    w_deq = wc * s_w + m_w

    y = _conv(x_deq, w_deq, conv_strides)

    # Raw-minus-dequantized corrections (zero when inputs were fake-quantized first).
    x_res = _pad_spatial(x, pads, 0.0) - x_deq
    box = tf.ones([kh, kw, cin, 1], tf.float32)
    y += m_w * _conv(x_res, box, conv_strides)
    y += m_in * tf.reduce_sum(kernel - w_deq, axis=[0, 1, 2])

    y += (s_in * s_w) * error_fn(a, wc, conv_strides)
    return y


def factor_error(a, wc, u, v, conv_strides, chunk_bytes=DEFAULT_CHUNK_BYTES) -> tf.Tensor:
    """sum over taps of E[a, w] = sum_i conv(u_i(a), v_i(w)), chunked over components.

    Cost grows with the rank: best for the many circuits whose error table has low rank.
    """
    kh, kw, cin, cout = wc.shape
    a_idx = tf.cast(a, tf.int32)
    w_idx = tf.cast(wc, tf.int32)
    rank = tf.shape(u)[1]
    shape = tf.shape(a)
    elems = tf.cast(shape[0] * shape[1] * shape[2] * cin * 4, tf.int64)
    chunk = tf.cast(tf.maximum(tf.constant(1, tf.int64), tf.constant(chunk_bytes, tf.int64) // elems), tf.int32)
    n_chunks = (rank + chunk - 1) // chunk
    out_shape = tf.stack(
        [
            shape[0],
            (shape[1] - kh) // conv_strides[1] + 1,
            (shape[2] - kw) // conv_strides[2] + 1,
            cout,
        ]
    )

    def body(i, acc):
        lo = i * chunk
        hi = tf.minimum(lo + chunk, rank)
        u_part = u[:, lo:hi]
        v_part = v[:, lo:hi]
        feats = tf.gather(u_part, a_idx)  # N, H, W, cin, c
        feats = tf.reshape(feats, tf.concat([shape[:3], [-1]], 0))
        kern = tf.gather(v_part, w_idx)  # kh, kw, cin, cout, c
        kern = tf.transpose(kern, [0, 1, 2, 4, 3])
        kern = tf.reshape(kern, [kh, kw, -1, cout])
        return i + 1, acc + _conv(feats, kern, conv_strides)

    _, total = tf.while_loop(
        lambda i, acc: i < n_chunks,
        body,
        (tf.constant(0), tf.zeros(out_shape, tf.float32)),
        shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, None, None, cout])),
    )
    return total


def per_tap_table(err: tf.Tensor, wc: tf.Tensor) -> tf.Tensor:
    """Per-tap error lookup: row k*256 + a holds E[a, w_(k, o)] for every output o."""
    cout = wc.shape[3]
    idx = tf.reshape(tf.cast(wc, tf.int32), [-1, cout])  # taps x cout
    return tf.reshape(tf.transpose(tf.gather(err, idx, axis=1), [1, 0, 2]), [-1, cout])


def gathered_error(a, table, kernel_shape, conv_strides) -> tf.Tensor:
    """sum over taps of E[a, w] by fused gather-and-sum of per-tap table rows.

    Cost does not depend on the rank (one row add per tap), so it wins for the few
    circuits whose error table has a high rank.
    """
    kh, kw, cin, cout = kernel_shape
    taps = kh * kw * cin
    patches = tf.image.extract_patches(a, [1, kh, kw, 1], conv_strides, [1, 1, 1, 1], "VALID")
    out_shape = tf.shape(patches)[:3]
    idx = tf.cast(patches, tf.int32) + tf.range(taps, dtype=tf.int32) * 256
    n_out = tf.reduce_prod(out_shape)
    segments = tf.repeat(tf.range(n_out), taps)
    total = tf.sparse.segment_sum(table, tf.reshape(idx, [-1]), segments, num_segments=n_out)
    return tf.reshape(total, tf.concat([out_shape, [cout]], 0))


@functools.lru_cache(maxsize=64)
def _core_fn(strides: tuple[int, int], padding: str, chunk_bytes: int, gathered: bool):
    @tf.function(autograph=False)
    def run(x, kernel, u, v, err, in_min, in_max, k_min, k_max):
        if gathered:

            def error_fn(a, wc, conv_strides):
                return gathered_error(a, per_tap_table(err, wc), wc.shape, conv_strides)

        else:

            def error_fn(a, wc, conv_strides):
                return factor_error(a, wc, u, v, conv_strides, chunk_bytes)

        return approx_conv_core(x, kernel, (in_min, in_max), (k_min, k_max), strides, padding, error_fn)

    return run


# --------------------------------------------------------------- functional public API


def ax_conv2d(
    x,
    kernel,
    lut,
    strides=(1, 1),
    padding="SAME",
    input_range=None,
    kernel_range=None,
    *,
    max_rank: int | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> tf.Tensor:
    """Approximate 2-D convolution, bit-faithful to tf-approximate's op.

    x: float32 NHWC; kernel: float32 HWIO; lut: uint16 (256, 256) table (row = input
    code, column = weight code), a `.bin` path or a catalog entry. `input_range` /
    `kernel_range`: (min, max), default the tensor's own min and max. No bias, no
    activation. `max_rank` selects the truncated mode (rank-limited error table).
    """
    x = _as_float_tensor(x, "x")
    kernel = _as_float_tensor(kernel, "kernel")
    if x.shape.rank != 4:
        raise ValueError(f"x: expected rank 4 (NHWC), got shape {tuple(x.shape)}")
    if kernel.shape.rank != 4:
        raise ValueError(f"kernel: expected rank 4 (HWIO), got shape {tuple(kernel.shape)}")
    if x.shape[3] != kernel.shape[2]:
        raise ValueError(
            f"kernel: input channels {kernel.shape[2]} do not match x channels {x.shape[3]}"
        )
    strides = _pair(strides, "strides")
    padding = str(padding).upper()
    if padding not in ("SAME", "VALID"):
        raise ValueError(f"padding: expected 'SAME' or 'VALID', got {padding!r}")
    for name, size, k in (("height", x.shape[1], kernel.shape[0]), ("width", x.shape[2], kernel.shape[1])):
        if padding == "VALID" and k > size:
            raise ValueError(f"kernel: {name} {k} is larger than the input {name} {size} with VALID padding")
    in_min, in_max = _range(input_range, x, "input_range")
    k_min, k_max = _range(kernel_range, kernel, "kernel_range")
    lut = as_lut(lut)
    dec = decompose(lut, max_rank=max_rank)
    gathered = max_rank is None and dec.rank > GATHER_RANK_THRESHOLD
    err = tf.constant(error_table(lut).astype(np.float32)) if gathered else tf.zeros([256, 256])
    fn = _core_fn(strides, padding, int(chunk_bytes), gathered)
    return fn(x, kernel, tf.constant(dec.u), tf.constant(dec.v), err, in_min, in_max, k_min, k_max)


def _as_float_tensor(value, name: str) -> tf.Tensor:
    t = tf.convert_to_tensor(value)
    if not t.dtype.is_floating:
        raise TypeError(f"{name}: expected a float32 tensor, got {t.dtype.name}")
    t = tf.cast(t, tf.float32)
    if not bool(tf.reduce_all(tf.math.is_finite(t))):
        raise ValueError(f"{name}: contains NaN or inf")
    return t


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(s) for s in value)
    if len(value) == 4:
        value = value[1:3]
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f"{name}: expected two positive integers, got {value}")
    return value  # type: ignore[return-value]


def _range(given, tensor: tf.Tensor, name: str) -> tuple[tf.Tensor, tf.Tensor]:
    if given is None:
        return tf.reduce_min(tensor), tf.reduce_max(tensor)
    lo, hi = (float(v) for v in given)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{name}: bounds must be finite, got ({lo}, {hi})")
    if lo > hi:
        raise ValueError(f"{name}: min {lo} is greater than max {hi}")
    return tf.constant(lo, tf.float32), tf.constant(hi, tf.float32)


# ------------------------------------------------------------------------ Keras layer

QUANTIZATION_MODES = ("calibrated", "batch")


class _Tables:
    """Holds the factor variables outside Keras' weight tracking: they are not weights
    (never trained or saved) and their rank dimension changes when the multiplier does."""

    def __init__(self):
        self.u = tf.Variable(np.zeros((256, 0), np.float32), shape=tf.TensorShape([256, None]), trainable=False)
        self.v = tf.Variable(np.zeros((256, 0), np.float32), shape=tf.TensorShape([256, None]), trainable=False)
        # Gathered path for high-rank tables: the error table, and the per-tap table
        # (rows k*256 + a, one column per output channel) built from it for the kernel
        # codes in `seen_codes`; rebuilt inside the graph whenever the kernel changes.
        self.err = tf.Variable(np.zeros((256, 256), np.float32), trainable=False)
        self.table = tf.Variable(np.zeros((0, 0), np.float32), shape=tf.TensorShape([None, None]), trainable=False)
        self.seen_codes = None  # created when the layer is built (kernel size known)
        self.use_table = tf.Variable(False, trainable=False)

    def build(self, kernel_size: int) -> None:
        self.seen_codes = tf.Variable(np.full((kernel_size,), -1.0, np.float32), trainable=False)

    def mark_stale(self) -> None:
        if self.seen_codes is not None:
            self.seen_codes.assign(tf.fill(tf.shape(self.seen_codes), -1.0))

    def gathered(self, a, wc, conv_strides):
        codes = tf.reshape(wc, [-1])
        same = tf.reduce_all(tf.equal(self.seen_codes, codes))

        def rebuild():
            table = per_tap_table(self.err, wc)
            with tf.control_dependencies([self.table.assign(table), self.seen_codes.assign(codes)]):
                return tf.identity(table)

        table = tf.cond(same, self.table.read_value, rebuild)
        return gathered_error(a, table, wc.shape, conv_strides)


@keras.saving.register_keras_serializable(package="surrogate_nas")
class AxConv2D(keras.layers.Layer):
    """Drop-in `Conv2D` whose products go through an approximate multiplier's table.

    Layer semantics follow tf-approximate's `FakeApproxConv2D`: input and kernel are
    fake-quantized to 8 bits (`tf.quantization.fake_quant_with_min_max_vars`) with
    their ranges, then the table-based op runs, then bias and activation.

    quantization="calibrated" (default) uses a fixed input range per layer, measured
    once on calibration images, so an image's result does not depend on which other
    images share its batch, nor on the batch size: what a deployed accelerator does and
    what a search needs for reproducible accuracies. "batch" takes the range of each
    batch, as tf-approximate's layer does.

    `set_multiplier` swaps the table in place (variables with a free rank dimension),
    so a compiled model is neither rebuilt nor retraced.
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1),
        padding: str = "valid",
        activation=None,
        use_bias: bool = True,
        quantization: str = "calibrated",
        input_range=None,
        multiplier: str | None = None,
        max_rank: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if quantization not in QUANTIZATION_MODES:
            raise ValueError(f"quantization: expected one of {QUANTIZATION_MODES}, got {quantization!r}")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.padding = str(padding).lower()
        if self.padding not in ("same", "valid"):
            raise ValueError(f"padding: expected 'same' or 'valid', got {padding!r}")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.quantization = quantization
        self.initial_input_range = None if input_range is None else tuple(float(v) for v in input_range)
        self.max_rank = max_rank
        self.multiplier = multiplier
        self._tables = _Tables()
        self._lut = exact_table()
        self.rank = 0
        self.compensation = None
        if multiplier is not None:
            self.set_multiplier(multiplier, max_rank=max_rank)

    def build(self, input_shape):
        self._build_weights(input_shape)

    def _build_weights(self, input_shape):
        cin = int(input_shape[-1])
        self.kernel = self.add_weight(
            name="kernel", shape=(*self.kernel_size, cin, self.filters), initializer="glorot_uniform"
        )
        self._tables.build(int(np.prod(self.kernel.shape)))
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") if self.use_bias else None
        if self.quantization == "calibrated":
            init = self.initial_input_range or (0.0, 1.0)
            self.input_range = self.add_weight(
                name="input_range",
                shape=(2,),
                initializer=keras.initializers.Constant(np.array(init, np.float32)),
                trainable=False,
            )
        # Compensation offsets (see surrogate_nas.compensation), subtracted from the output,
        # and the table the layer multiplies with (weight columns already remapped by a
        # tuning compensation): weights, so that a saved model is the whole design.
        self.bias_offset = self.add_weight(name="bias_offset", shape=(self.filters,), initializer="zeros", trainable=False)
        self.table = self.add_weight(
            name="table", shape=(256, 256), dtype="int32", trainable=False,
            initializer=keras.initializers.Constant(self._lut.astype(np.int32)),
        )

    def load_own_variables(self, store):
        """After `keras.models.load_model`: rebuild the table factors from the saved table."""
        super().load_own_variables(store)
        if hasattr(self, "table"):
            self._set_table(self.table.numpy().astype(np.uint16), self.max_rank)

    def set_multiplier(
        self, lut=None, max_rank: int | None = None, input_weights=None, kernel_weights=None, compensation=None
    ) -> Decomposition:
        """Use table `lut` (None = exact); with `max_rank`, the truncated mode.

        `compensation` (a `surrogate_nas.compensation.Compensation`) remaps the table's
        weight columns and sets the per-channel bias offsets; None clears both.
        High-rank tables in exact mode use the gathered path; its per-tap table follows
        the kernel (rebuilt in the graph on the first call after the weights change).
        """
        if lut is None:
            lut = exact_table()
            name = None
        else:
            name = getattr(lut, "name", None) or (str(lut) if isinstance(lut, (str, Path)) else "custom")
        path = str(lut) if isinstance(lut, (str, Path)) else None
        lut = as_lut(lut)
        self.compensation = compensation
        if compensation is not None:
            lut = as_lut(compensation.table(lut))
        if self.built:
            offset = None if compensation is None else compensation.bias_offset
            self.bias_offset.assign(np.zeros(self.filters, np.float32) if offset is None else np.asarray(offset, np.float32))
            self.table.assign(lut.astype(np.int32))
        elif compensation is not None and compensation.bias_offset is not None:
            raise ValueError(f"layer {self.name}: build the layer before setting bias offsets")
        dec = self._set_table(lut, max_rank, input_weights, kernel_weights)
        self.multiplier = path or name
        return dec

    def _set_table(self, lut: np.ndarray, max_rank=None, input_weights=None, kernel_weights=None) -> Decomposition:
        """Point the op at `lut` (factors, or the error table for the gathered path)."""
        self._lut = lut
        dec = decompose(lut, max_rank=max_rank, input_weights=input_weights, kernel_weights=kernel_weights)
        gathered = max_rank is None and dec.rank > GATHER_RANK_THRESHOLD
        tables = self._tables
        tables.mark_stale()
        tables.table.assign(np.zeros((0, 0), np.float32))
        if gathered:
            tables.err.assign(error_table(lut).astype(np.float32))
            tables.u.assign(np.zeros((256, 0), np.float32))
            tables.v.assign(np.zeros((256, 0), np.float32))
        else:
            tables.u.assign(dec.u)
            tables.v.assign(dec.v)
        tables.use_table.assign(gathered)
        self.max_rank = max_rank
        self.rank = dec.rank
        return dec

    def kernel_codes(self) -> np.ndarray:
        """The 8-bit codes of the kernel as the op quantizes it (int, HWIO)."""
        kernel = tf.convert_to_tensor(self.kernel)
        k_min, k_max = tf.reduce_min(kernel), tf.reduce_max(kernel)
        k_q = tf.quantization.fake_quant_with_min_max_vars(kernel, k_min, k_max, num_bits=8)
        scale, inv, m, zp = nudge(k_min, k_max)
        return quantize_codes(k_q, inv, m, zp, scale).numpy().astype(np.int64)

    def scales(self) -> tuple[float, float]:
        """(input scale, kernel scale) of the calibrated quantization."""
        lo, hi = (float(v) for v in self.input_range.numpy())
        kernel = self.kernel.numpy()
        s_in = nudge(tf.constant(lo), tf.constant(hi))[0]
        s_w = nudge(tf.reduce_min(kernel), tf.reduce_max(kernel))[0]
        return float(s_in), float(s_w)

    def set_input_range(self, low: float, high: float) -> None:
        if self.quantization != "calibrated":
            raise ValueError(f"layer {self.name}: input_range only applies to calibrated quantization")
        if not low <= high:
            raise ValueError(f"layer {self.name}: input range min {low} > max {high}")
        self.input_range.assign(np.array([low, high], np.float32))

    def call(self, inputs):
        inputs = tf.cast(inputs, tf.float32)
        if self.quantization == "batch":
            in_min, in_max = tf.reduce_min(inputs), tf.reduce_max(inputs)
        else:
            in_min, in_max = self.input_range[0], self.input_range[1]
        kernel = tf.convert_to_tensor(self.kernel)
        k_min, k_max = tf.reduce_min(kernel), tf.reduce_max(kernel)
        x_q = tf.quantization.fake_quant_with_min_max_vars(inputs, in_min, in_max, num_bits=8)
        k_q = tf.quantization.fake_quant_with_min_max_vars(kernel, k_min, k_max, num_bits=8)
        tables = self._tables

        def error_fn(a, wc, conv_strides):
            return tf.cond(
                tables.use_table,
                lambda: tables.gathered(a, wc, conv_strides),
                lambda: factor_error(a, wc, tables.u.read_value(), tables.v.read_value(), conv_strides),
            )

        strides, padding = self.strides, self.padding.upper()

        @tf.custom_gradient
        def table_conv(x_q, k_q):
            """Forward: the table emulation. Backward: the straight-through estimator of
            tf-approximate, TorchApprox and AdaPT, the gradient of the float convolution
            of the fake-quantized operands (fake quantization passes gradients inside
            its range)."""
            y = approx_conv_core(x_q, k_q, (in_min, in_max), (k_min, k_max), strides, padding, error_fn)

            def grad(dy, variables=None):
                s4 = [1, strides[0], strides[1], 1]
                dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x_q), filter=k_q, out_backprop=dy,
                                                    strides=s4, padding=padding)
                dk = tf.raw_ops.Conv2DBackpropFilter(input=x_q, filter_sizes=tf.shape(k_q), out_backprop=dy,
                                                     strides=s4, padding=padding)
                return ((dx, dk), [None] * len(variables)) if variables else (dx, dk)

            return y, grad

        y = table_conv(x_q, k_q) - self.bias_offset
        if self.use_bias:
            y = y + self.bias
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        out_h = output_geometry(h, self.kernel_size[0], self.strides[0], self.padding.upper())[0]
        out_w = output_geometry(w, self.kernel_size[1], self.strides[1], self.padding.upper())[0]
        return (n, out_h, out_w, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
            quantization=self.quantization,
            input_range=self.initial_input_range,
            multiplier=self.multiplier if self.multiplier and Path(self.multiplier).suffix == ".bin" else None,
            max_rank=self.max_rank,
        )
        return config

    @classmethod
    def from_conv2d(cls, conv: keras.layers.Conv2D, **kwargs) -> "AxConv2D":
        """A built AxConv2D carrying a trained Conv2D's weights."""
        if tuple(conv.dilation_rate) != (1, 1) or conv.groups != 1:
            raise ValueError(f"layer {conv.name}: dilation and groups are not supported by AxConv2D")
        layer = cls(
            conv.filters,
            conv.kernel_size,
            strides=conv.strides,
            padding=conv.padding,
            activation=keras.activations.serialize(conv.activation),
            use_bias=conv.use_bias,
            name=kwargs.pop("name", conv.name),
            **kwargs,
        )
        layer.build(conv.input.shape)
        layer.kernel.assign(conv.kernel)
        if conv.use_bias:
            layer.bias.assign(conv.bias)
        return layer


@keras.saving.register_keras_serializable(package="surrogate_nas")
class AxDense(AxConv2D):
    """Drop-in `Dense` with the same table semantics as `AxConv2D`: a dense layer is a
    1x1 convolution on a 1x1 image, so each row of the input (any leading axes) is
    fake-quantized with the layer's input range, the kernel with its own range, and
    every product is looked up in the table. The kernel is stored as (1, 1, cin, units)."""

    def __init__(self, units: int, activation=None, use_bias: bool = True, quantization: str = "calibrated",
                 input_range=None, multiplier: str | None = None, max_rank: int | None = None, **kwargs):
        for key in ("filters", "kernel_size", "strides", "padding"):  # AxConv2D's config keys
            kwargs.pop(key, None)
        super().__init__(units, (1, 1), activation=activation, use_bias=use_bias, quantization=quantization,
                         input_range=input_range, multiplier=multiplier, max_rank=max_rank, **kwargs)
        self.units = int(units)

    def call(self, inputs):
        inputs = tf.cast(inputs, tf.float32)
        cin = self.kernel.shape[2]
        rows = tf.reshape(inputs, [-1, 1, 1, cin])
        y = super().call(rows)
        return tf.reshape(y, tf.concat([tf.shape(inputs)[:-1], [self.units]], 0))

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.units)

    def get_config(self):
        config = super().get_config()
        for key in ("filters", "kernel_size", "strides", "padding"):
            config.pop(key)
        config["units"] = self.units
        return config

    @classmethod
    def from_dense(cls, dense: keras.layers.Dense, **kwargs) -> "AxDense":
        """A built AxDense carrying a trained Dense's weights."""
        layer = cls(dense.units, activation=keras.activations.serialize(dense.activation), use_bias=dense.use_bias,
                    name=kwargs.pop("name", dense.name), **kwargs)
        layer.build((None, int(dense.kernel.shape[0])))
        layer.kernel.assign(np.asarray(dense.kernel).reshape(layer.kernel.shape))
        if dense.use_bias:
            layer.bias.assign(dense.bias)
        return layer


@keras.saving.register_keras_serializable(package="surrogate_nas")
class FoldedBatchNorm(keras.layers.Layer):
    """Where a twin's BatchNormalization was: it is folded into the preceding conv's kernel
    and bias, so this layer passes its input through (whatever the BatchNorm was called with)."""

    def call(self, inputs, *args, **kwargs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape
