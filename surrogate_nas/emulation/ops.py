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

import numpy as np
import tensorflow as tf

from surrogate_nas.emulation.decomposition import as_lut, decompose
from surrogate_nas.emulation.quantization import (
    _pad_spatial,
    nudge,
    output_geometry,
    quantize_codes,
)
from surrogate_nas.multipliers.tables import error_table

# Exact-mode error tables of higher rank are summed by gathering (cost independent of
# rank) instead of by factors; set from bench_axconv.py measurements.
GATHER_RANK_THRESHOLD = 30


# Largest stacked-component tensor (bytes) materialised at once; bigger ranks are chunked.
DEFAULT_CHUNK_BYTES = 192 * 1024 * 1024


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


def exact_float32() -> None:
    """Keep the emulation exact on every device. It sums integer table values in float32,
    so TF32 (on by default on Ampere and newer GPUs: ~1e-3 relative error in every conv)
    must be off; on a GPU the ops it uses must also be deterministic, or the same genome
    could flip an argmax between two evaluations."""
    tf.config.experimental.enable_tensor_float_32_execution(False)
    if tf.config.list_physical_devices("GPU"):
        tf.config.experimental.enable_op_determinism()


def _device() -> str:
    gpus = tf.config.list_logical_devices("GPU")
    return "GPU" if gpus else "CPU"


# Highest first: the flag in /proc/cpuinfo ("flags" on x86, "Features" on ARM) and its level.
_VECTOR_ISAS = (("avx512f", "avx512"), ("avx2", "avx2"), ("avx", "avx"), ("sse4_2", "sse4.2"), ("sve", "sve"),
                ("asimd", "neon"))


def cpu_vector_isa(cpuinfo: str | None = None) -> str:
    """The CPU's vector instruction set level ("avx512", "avx2", ...; `cpuinfo`: the text
    of /proc/cpuinfo, read when None). TensorFlow's CPU kernels (Eigen, oneDNN) pick their
    code by it, and a float sum in another order can break an argmax tie: an AVX2 and an
    AVX-512 machine gave one image a different prediction. "unknown (MACHINE)" where
    /proc/cpuinfo cannot tell."""
    import platform

    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                cpuinfo = fh.read()
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
            break  # the first processor speaks for all
    for flag, level in _VECTOR_ISAS:
        if flag in flags:
            return level
    return f"unknown ({platform.machine() or 'unknown'})"
