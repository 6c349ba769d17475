"""`surrogate_nas.axconv` against a naive reference of tf-approximate's op.

The reference below follows `ApproxConv2DWithMinMaxVars` literally: float32 nudge and
quantization exactly as the C++ computes them, one table look-up per product (padding
taps included, as the code of the value 0.0), float64 accumulation, and the affine
correction terms of the original formula:

    y = s_in*s_w*SUM(lut[a, w]) + m_w*SUM(x) + m_in*SUM(kernel) - K*m_in*m_w

Everything here is small (N <= 2, H, W <= 8, C <= 4) so the file runs in seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np
import pytest
import tensorflow as tf

from surrogate_nas.emulation import ops as axconv_ops
from surrogate_nas.emulation import quantization as axconv_q
from surrogate_nas.emulation.decomposition import decompose
from surrogate_nas.emulation.layers import AxConv2D
from surrogate_nas.emulation.ops import ax_conv2d

try:  # OpenBLAS spinning threads make each 256x256 SVD ~100x slower on a busy 2-core box
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

F32 = np.float32
CODES = np.arange(256, dtype=np.int64)
EXACT = np.outer(CODES, CODES)  # [a, w] = a*w, a = activation code (row)
EXACT_LUT = EXACT.astype(np.uint16)
REL_TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _single_blas_thread():
    if threadpool_limits is None:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


# ------------------------------------------------------------------ naive reference


@dataclass(frozen=True)
class Quant:
    scale: np.float32
    inv: np.float32
    nudged_min: np.float32
    zero_point: int


def ref_nudge(lo, hi) -> Quant:
    """TensorFlow's float32 nudge as the original op computes it."""
    lo, hi = F32(lo), F32(hi)
    if lo == 0 and hi == 0:
        return Quant(F32(0), F32(0), F32(0), 0)
    scale = F32((hi - lo) / F32(255))
    if scale == 0:  # -min/0 = -inf (min > 0) or +inf (min < 0): clamps to 0 or 255
        zp = 0 if lo > 0 else 255
    else:
        zp_float = F32(F32(0) - F32(lo / scale))
        if zp_float < 0:
            zp = 0
        elif zp_float > 255:
            zp = 255
        else:  # std::round (halves away from zero) of a non-negative float32, exact in float64
            zp = int(math.floor(float(zp_float) + 0.5))
    nudged_min = F32(F32(-zp) * scale)
    inv = F32(F32(1) / scale) if scale != 0 else F32(0)
    return Quant(scale, inv, nudged_min, zp)


def ref_codes(values, q: Quant) -> np.ndarray:
    """floor((v - nudged_min) * (1/scale) + 0.5) in float32, clamped to [0, 255]."""
    values = np.asarray(values, F32)
    if q.scale == 0:
        return np.full(values.shape, q.zero_point, np.int64)
    codes = np.floor((values - q.nudged_min) * q.inv + F32(0.5))
    assert codes.dtype == F32
    return np.clip(codes, 0, 255).astype(np.int64)


def ref_geometry(size: int, k: int, stride: int, padding: str) -> tuple[int, int]:
    """(output size, window offset) with the original's C integer division."""
    if padding == "SAME":
        out = -(-size // stride)
        num = (out - 1) * stride + k - size
    else:
        out = -(-(size - k + 1) // stride)
        num = (out - 1) * stride + k - size + 1
    return out, int(num / 2)  # C division truncates toward zero


def ref_conv(x, kernel, lut, strides=(1, 1), padding="SAME", input_range=None, kernel_range=None) -> np.ndarray:
    x = np.asarray(x, F32)
    kernel = np.asarray(kernel, F32)
    lut = np.asarray(getattr(lut, "lut", lut)).astype(np.int64)
    assert lut.shape == (256, 256)
    n, h, w, cin = x.shape
    kh, kw, kcin, cout = kernel.shape
    assert kcin == cin
    qi = ref_nudge(*(input_range if input_range is not None else (x.min(), x.max())))
    qw = ref_nudge(*(kernel_range if kernel_range is not None else (kernel.min(), kernel.max())))
    out_h, top = ref_geometry(h, kh, strides[0], padding)
    out_w, left = ref_geometry(w, kw, strides[1], padding)

    a = ref_codes(x, qi)
    wc = ref_codes(kernel, qw)
    pad_code = int(ref_codes(np.zeros(1), qi)[0])  # a padding tap is the value 0.0
    taps = kh * kw * cin
    s_in, s_w = float(qi.scale), float(qw.scale)
    m_in, m_w = float(qi.nudged_min), float(qw.nudged_min)
    kernel_sum = kernel.astype(np.float64).reshape(taps, cout).sum(axis=0)

    y = np.zeros((n, out_h, out_w, cout), np.float64)
    for b in range(n):
        for oy in range(out_h):
            for ox in range(out_w):
                lut_sum = np.zeros(cout, np.int64)
                x_sum = 0.0
                for fy in range(kh):
                    for fx in range(kw):
                        iy = oy * strides[0] - top + fy
                        ix = ox * strides[1] - left + fx
                        if 0 <= iy < h and 0 <= ix < w:
                            codes = a[b, iy, ix, :]
                            x_sum += float(x[b, iy, ix, :].astype(np.float64).sum())
                        else:
                            codes = np.full(cin, pad_code)
                        lut_sum += lut[codes[:, None], wc[fy, fx]].sum(axis=0)  # (cin, cout) products
                y[b, oy, ox] = s_in * s_w * lut_sum + m_w * x_sum + m_in * kernel_sum - taps * m_in * m_w
    return y


def fake_quant(t, lo, hi):
    return tf.quantization.fake_quant_with_min_max_vars(
        tf.constant(t, tf.float32), float(lo), float(hi), num_bits=8
    ).numpy()


def assert_close(got, ref, rel=REL_TOL, what=""):
    got = np.asarray(got, np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    scale = max(float(np.abs(ref).max()), 1e-30)
    err = float(np.abs(got - ref).max())
    assert err <= rel * scale, f"{what}: max |got - ref| = {err:.3g} > {rel:g} * {scale:.3g}"


# ----------------------------------------------------------------- reference checks


def test_reference_nudge_matches_tensorflow_fake_quant():
    """Sanity of the reference itself: codes*scale + nudged_min is TF's fake-quant."""
    rng = np.random.default_rng(1)
    for lo, hi in [(-1.3, 2.7), (0.2, 5.0), (-4.0, -0.5), (-0.01, 0.0), (0.0, 3.3), (-7.77, 0.3)]:
        v = rng.uniform(lo, hi, size=200).astype(F32)
        q = ref_nudge(lo, hi)
        deq = (ref_codes(v, q).astype(F32) * q.scale + q.nudged_min).astype(F32)
        np.testing.assert_allclose(deq, fake_quant(v, lo, hi), rtol=0, atol=1e-6 * max(abs(lo), abs(hi)))
    assert ref_nudge(-1.0, 0.0).zero_point == 255
    assert ref_nudge(0.5, 1.0).zero_point == 0
    assert ref_nudge(0.0, 0.0) == Quant(0, 0, 0, 0)


def test_library_nudge_and_codes_match_reference_bitwise():
    rng = np.random.default_rng(2)
    ranges = [tuple(sorted(rng.normal(0, 3, size=2))) for _ in range(60)]
    ranges += [(0.1, 2.0), (-3.0, -0.2), (0.0, 0.0), (0.7, 0.7), (-0.7, -0.7), (0.0, 1.0), (-1.0, 0.0),
               (-2.5 / 64, 252.5 / 64), (-0.5 / 64, 254.5 / 64), (-1e-3, 1e3)]
    for lo, hi in ranges:
        q = ref_nudge(lo, hi)
        scale, inv, nudged_min, zp = (float(t) for t in axconv_q.nudge(tf.constant(lo), tf.constant(hi)))
        assert (scale, inv, nudged_min, zp) == (float(q.scale), float(q.inv), float(q.nudged_min), q.zero_point), (lo, hi)
        v = np.concatenate([rng.uniform(lo - 0.5, hi + 0.5, size=64), [lo, hi, 0.0]]).astype(F32)
        codes = axconv_q.quantize_codes(tf.constant(v), *axconv_q.nudge(tf.constant(lo), tf.constant(hi))[1:], scale)
        np.testing.assert_array_equal(codes.numpy(), ref_codes(v, q), err_msg=str((lo, hi)))


def test_zero_point_rounds_half_away_from_zero():
    """-min/scale exactly k + 0.5: std::round goes up (round-half-even would go down)."""
    assert ref_nudge(-2.5 / 64, 252.5 / 64).zero_point == 3
    assert ref_nudge(-0.5 / 64, 254.5 / 64).zero_point == 1
    x, kernel = _conv_problem(19)
    x = np.clip(x, -2.5 / 64, 252.5 / 64)
    check_case(x, kernel, lut_with_nonzero_row0(), (1, 1), "SAME",
               input_range=(-2.5 / 64, 252.5 / 64), kernel_range=(-0.5 / 64, 254.5 / 64))


@pytest.mark.parametrize("size,k,stride", [(s, k, st) for s in (3, 4, 7, 8) for k in (1, 2, 3, 5) for st in (1, 2) if k <= s])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_geometry_matches_tensorflow_for_strides_1_and_2(size, k, stride, padding):
    out, offset = ref_geometry(size, k, stride, padding)
    lib_out, before, _after = axconv_q.output_geometry(size, k, stride, padding)
    assert (lib_out, before) == (out, offset)
    tf_out = tf.nn.conv2d(tf.zeros([1, size, 1, 1]), tf.zeros([k, 1, 1, 1]), [1, stride, 1, 1], padding).shape[1]
    assert out == tf_out
    if padding == "SAME":
        assert offset == max((out - 1) * stride + k - size, 0) // 2
    else:
        assert offset == 0


# --------------------------------------------------------------------- random cases


def random_case(seed: int, strides=None, padding=None):
    """Small random conv problem: x, kernel, strides, padding."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3))
    h, w = (int(v) for v in rng.integers(3, 9, size=2))
    cin, cout = (int(v) for v in rng.integers(1, 5, size=2))
    kh, kw = (int(v) for v in rng.integers(1, 6, size=2))
    padding = padding or ["SAME", "VALID"][seed % 2]
    if padding == "VALID":
        kh, kw = min(kh, h), min(kw, w)
    strides = strides or [(1, 1), (2, 2), (1, 2), (2, 1)][(seed // 2) % 4]
    sign = seed % 5  # 0-2 mixed, 3 positive, 4 negative inputs
    x = rng.normal(0.3, 1.0, size=(n, h, w, cin))
    if sign == 3:
        x = np.abs(x) + 0.05
    elif sign == 4:
        x = -np.abs(x) - 0.05
    kernel = rng.normal(0.0, 0.5, size=(kh, kw, cin, cout))
    return x.astype(F32), kernel.astype(F32), strides, padding


def random_lut(seed: int) -> np.ndarray:
    return np.random.default_rng(10_000 + seed).integers(0, 65536, size=(256, 256)).astype(np.uint16)


def near_exact_lut(seed: int) -> np.ndarray:
    rng = np.random.default_rng(20_000 + seed)
    noise = rng.integers(-40, 41, size=(256, 256)) * (rng.random((256, 256)) < 0.3)
    return np.clip(EXACT + noise, 0, 65535).astype(np.uint16)


def low_rank_lut(seed: int, rank: int) -> np.ndarray:
    """a*w + P Q^T with small non-negative integer factors: error table of exact rank `rank`."""
    rng = np.random.default_rng(30_000 + seed)
    p = rng.integers(0, 4, size=(256, rank))
    q = rng.integers(0, 4, size=(256, rank))
    return (EXACT + p @ q.T).astype(np.uint16)


def check_case(x, kernel, lut, strides, padding, input_range=None, kernel_range=None, what=""):
    ref = ref_conv(x, kernel, lut, strides, padding, input_range, kernel_range)
    got = ax_conv2d(x, kernel, lut, strides=strides, padding=padding, input_range=input_range, kernel_range=kernel_range)
    what = what or f"{x.shape} {kernel.shape} {strides} {padding}"
    assert_close(got.numpy(), ref, what=what)
    return ref


@pytest.mark.parametrize("seed", range(16))
def test_random_tables(seed):
    x, kernel, strides, padding = random_case(seed)
    check_case(x, kernel, random_lut(seed), strides, padding)


@pytest.mark.parametrize("seed", range(100, 112))
def test_near_exact_tables(seed):
    x, kernel, strides, padding = random_case(seed)
    check_case(x, kernel, near_exact_lut(seed), strides, padding)


@pytest.mark.parametrize("seed", range(200, 206))
def test_low_rank_tables(seed):
    x, kernel, strides, padding = random_case(seed)
    check_case(x, kernel, low_rank_lut(seed, 1 + seed % 7), strides, padding)


@pytest.fixture(scope="module")
def catalog():
    from surrogate_nas.config import resolve_paths
    from surrogate_nas.multipliers.catalog import load_catalog

    path = resolve_paths().multipliers
    if path is None or not path.exists():
        pytest.skip(f"multiplier catalog not found at {path}")
    return load_catalog(path)


@pytest.mark.real_data
def test_real_circuits(catalog):
    names = ["mul8u_12N4", "mul8u_2AC", "mul8u_2HH", "mul8u_199Z", "mul8u_L40", "mul8u_17KS", "mul8u_1JFF"]
    chosen = [catalog[n] for n in names if n in catalog]
    # A circuit whose products with activation code 0 are not 0 (the padding taps then matter).
    if not any(m.lut[0].any() for m in chosen):
        extra = next((m for m in catalog if m.lut[0].any()), None)
        if extra is not None:
            chosen.append(extra)
    assert chosen, "none of the test circuits is in the catalog"
    if "mul8u_12N4" in catalog:
        assert decompose(catalog["mul8u_12N4"]).rank == 228
    for i, mult in enumerate(chosen):
        for seed in (300 + 2 * i, 301 + 2 * i):
            x, kernel, strides, padding = random_case(seed)
            check_case(x, kernel, mult, strides, padding, what=f"{mult.name} seed {seed}")


@pytest.mark.parametrize("padding,width,kw", [("VALID", 6, 5), ("SAME", 3, 2)])
def test_tf_conv2d_bug_shapes(padding, width, kw):
    """TF 2.21's oneDNN conv2d returns wrong rows for one input channel, batch 2, stride
    (1, 2 or 3) and output width 1; ax_conv2d must stay right there (it pads cin to 2)."""
    rng = np.random.default_rng(900)
    x = rng.normal(size=(2, 5, width, 1)).astype(F32)
    kernel = rng.normal(size=(3, kw, 1, 2)).astype(F32)
    strides = (1, 3) if padding == "SAME" else (1, 2)
    assert ref_geometry(width, kw, strides[1], padding)[0] == 1
    ref = ref_conv(x, kernel, EXACT_LUT, strides, padding)
    assert_close(ax_conv2d(x, kernel, EXACT_LUT, strides=strides, padding=padding).numpy(), ref)


# -------------------------------------------------------------- special inputs


def _conv_problem(seed=7, shape=(2, 6, 5, 3), kshape=(3, 2, 3, 2)):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype(F32), rng.normal(0, 0.4, size=kshape).astype(F32)


def lut_with_nonzero_row0() -> np.ndarray:
    lut = near_exact_lut(5).astype(np.int64)
    lut[0, :] = np.arange(256) % 97 + 3  # products with activation code 0 are not 0
    lut[:, 0] = np.arange(256) % 13
    return lut.astype(np.uint16)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("sign", ["positive", "negative", "mixed"])
def test_input_sign_and_zero_point(sign, padding):
    x, kernel = _conv_problem(11)
    if sign == "positive":
        x = np.abs(x) + 0.25
        assert ref_nudge(x.min(), x.max()).zero_point == 0
    elif sign == "negative":
        x = -np.abs(x) - 0.25
        assert ref_nudge(x.min(), x.max()).zero_point == 255
    lut = lut_with_nonzero_row0()
    check_case(x, kernel, lut, (1, 1), padding)
    check_case(x, kernel, lut, (2, 2), padding)


def test_positive_kernel_and_negative_input():
    x, kernel = _conv_problem(12)
    check_case(-np.abs(x), np.abs(kernel) + 0.1, lut_with_nonzero_row0(), (1, 2), "SAME")


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_explicit_ranges_narrower_than_data_clamp(padding):
    x, kernel = _conv_problem(13)
    ir, kr = (-0.5, 0.8), (-0.2, 0.1)
    assert x.min() < ir[0] and x.max() > ir[1] and kernel.min() < kr[0] and kernel.max() > kr[1]
    for lut in (near_exact_lut(1), random_lut(1)):
        check_case(x, kernel, lut, (1, 1), padding, input_range=ir, kernel_range=kr)
    # A range not containing 0 (zero point clamps) and clamping on both sides.
    check_case(x, kernel, near_exact_lut(2), (2, 2), padding, input_range=(0.2, 0.9), kernel_range=(-0.6, -0.1))


@pytest.mark.parametrize("value", [0.7, -0.7])
def test_constant_input(value):
    _, kernel = _conv_problem(14)
    x = np.full((1, 5, 4, 3), value, F32)
    for padding in ("SAME", "VALID"):
        ref = check_case(x, kernel, lut_with_nonzero_row0(), (1, 1), padding)
        # scale 0: the table term vanishes, y = m_w*SUM(x) + m_in*SUM(kernel), m_in = 0.
        q = ref_nudge(kernel.min(), kernel.max())
        if padding == "VALID":
            expected = float(q.nudged_min) * float(F32(value)) * kernel[..., 0].size
            np.testing.assert_allclose(ref, expected, rtol=1e-9)


def test_all_zero_input_and_zero_kernel():
    x, kernel = _conv_problem(15)
    lut = lut_with_nonzero_row0()
    zero_x = np.zeros_like(x)
    got = ax_conv2d(zero_x, kernel, lut).numpy()
    ref = ref_conv(zero_x, kernel, lut)
    np.testing.assert_array_equal(ref, 0.0)
    np.testing.assert_allclose(got, 0.0, atol=1e-6)
    zero_k = np.zeros_like(kernel)
    got = ax_conv2d(x, zero_k, lut).numpy()
    np.testing.assert_allclose(got, ref_conv(x, zero_k, lut), atol=1e-6)


def test_default_ranges_equal_explicit_tensor_ranges():
    x, kernel = _conv_problem(16)
    lut = near_exact_lut(3)
    a = ax_conv2d(x, kernel, lut).numpy()
    b = ax_conv2d(x, kernel, lut, input_range=(x.min(), x.max()), kernel_range=(kernel.min(), kernel.max())).numpy()
    np.testing.assert_array_equal(a, b)


def test_accepts_lut_as_path_and_entry_and_4_strides(tmp_path):
    x, kernel = _conv_problem(17)
    lut = near_exact_lut(4)
    path = tmp_path / "m.bin"
    path.write_bytes(lut.astype("<u2").tobytes())

    class Entry:
        def __init__(self, lut):
            self.lut = lut

    ref = ref_conv(x, kernel, lut, (2, 1), "SAME")
    for given in (lut, str(path), path, Entry(lut), lut.astype(np.int32)):
        assert_close(ax_conv2d(x, kernel, given, strides=(2, 1)).numpy(), ref, what=type(given).__name__)
    assert_close(ax_conv2d(x, kernel, lut, strides=[1, 2, 1, 1], padding="same").numpy(), ref)


# ---------------------------------------------------------------- both error paths


@pytest.fixture
def fresh_core(monkeypatch):
    """Spy on which error path is traced (the compiled functions are cached per path)."""
    calls = {"factor": 0, "gathered": 0}
    real_factor, real_gathered = axconv_ops.factor_error, axconv_ops.gathered_error

    def factor(*args, **kwargs):
        calls["factor"] += 1
        return real_factor(*args, **kwargs)

    def gathered(*args, **kwargs):
        calls["gathered"] += 1
        return real_gathered(*args, **kwargs)

    monkeypatch.setattr(axconv_ops, "factor_error", factor)
    monkeypatch.setattr(axconv_ops, "gathered_error", gathered)
    axconv_ops._core_fn.cache_clear()
    yield calls
    axconv_ops._core_fn.cache_clear()


@pytest.mark.parametrize("threshold,path", [(0, "gathered"), (10**6, "factor")])
@pytest.mark.parametrize("kind", ["random", "near_exact", "low_rank", "row0"])
def test_factor_and_gathered_paths(monkeypatch, fresh_core, threshold, path, kind):
    monkeypatch.setattr(axconv_ops, "GATHER_RANK_THRESHOLD", threshold)
    seed = {"random": 400, "near_exact": 401, "low_rank": 402, "row0": 403}[kind]
    lut = {
        "random": lambda: random_lut(seed),
        "near_exact": lambda: near_exact_lut(seed),
        "low_rank": lambda: low_rank_lut(seed, 3),
        "row0": lut_with_nonzero_row0,
    }[kind]()
    for case in (seed, seed + 1):
        x, kernel, strides, padding = random_case(case)
        check_case(x, kernel, lut, strides, padding, what=f"{path} path, {kind} table, case {case}")
    assert fresh_core[path] > 0
    assert fresh_core["factor" if path == "gathered" else "gathered"] == 0


def test_factor_path_is_chunked_over_components(monkeypatch):
    """A tiny chunk budget forces one component per while-loop iteration."""
    monkeypatch.setattr(axconv_ops, "GATHER_RANK_THRESHOLD", 10**6)
    x, kernel, strides, padding = random_case(410)
    lut = near_exact_lut(410)
    ref = ref_conv(x, kernel, lut, strides, padding)
    got = ax_conv2d(x, kernel, lut, strides=strides, padding=padding, chunk_bytes=1)
    assert_close(got.numpy(), ref)


# ---------------------------------------------------------------- truncated mode


@pytest.mark.parametrize(
    "lut_name,ranks",
    [("low_rank6", (1, 3, 5, 6, 20)), ("near_exact", (2, 16)), ("random", (4,))],
)
def test_truncated_mode_bound(lut_name, ranks):
    lut = {"low_rank6": lambda: low_rank_lut(7, 6), "near_exact": lambda: near_exact_lut(7), "random": lambda: random_lut(7)}[lut_name]()
    x, kernel = _conv_problem(18, shape=(2, 6, 6, 3), kshape=(3, 3, 3, 4))
    exact = ax_conv2d(x, kernel, lut).numpy().astype(np.float64)
    ref = ref_conv(x, kernel, lut)
    assert_close(exact, ref)
    s_in = float(ref_nudge(x.min(), x.max()).scale)
    s_w = float(ref_nudge(kernel.min(), kernel.max()).scale)
    taps = 3 * 3 * 3
    full = decompose(lut).full_rank
    slack = 2 * REL_TOL * float(np.abs(ref).max())
    for r in ranks:
        dec = decompose(lut, max_rank=r)
        got = ax_conv2d(x, kernel, lut, max_rank=r).numpy()
        deviation = float(np.abs(got - exact).max())
        if r >= full:
            assert dec.exact and dec.max_abs_error == 0.0
            assert deviation <= slack, f"rank {r} >= full rank {full} but deviation {deviation}"
        else:
            assert not dec.exact and dec.rank == r
            bound = taps * dec.max_abs_error * s_in * s_w
            assert deviation <= bound + slack, f"rank {r}: deviation {deviation} > bound {bound}"


# ---------------------------------------------- exact table = conv of fake-quant


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("strides", [(1, 1), (2, 2)])
@pytest.mark.parametrize("seed", [500, 501])
def test_exact_table_equals_conv2d_of_fake_quant(seed, strides, padding):
    x, kernel, _, _ = random_case(seed, strides, padding)
    ir, kr = (float(x.min()), float(x.max())), (float(kernel.min()), float(kernel.max()))
    x_q, k_q = fake_quant(x, *ir), fake_quant(kernel, *kr)
    expected = tf.nn.conv2d(x_q, k_q, [1, *strides, 1], padding).numpy().astype(np.float64)
    got = ax_conv2d(x_q, k_q, EXACT_LUT, strides=strides, padding=padding, input_range=ir, kernel_range=kr).numpy()
    assert_close(got, expected)
    assert_close(ref_conv(x_q, k_q, EXACT_LUT, strides, padding, ir, kr), expected)


# ----------------------------------------------------------------------- decompose


@pytest.mark.parametrize("kind", ["random", "near_exact", "low_rank", "row0"])
def test_decompose_exact_reconstruction(kind):
    lut = {
        "random": lambda: random_lut(600),
        "near_exact": lambda: near_exact_lut(600),
        "low_rank": lambda: low_rank_lut(600, 5),
        "row0": lut_with_nonzero_row0,
    }[kind]()
    dec = decompose(lut)
    err = lut.astype(np.int64) - EXACT
    assert dec.exact and dec.rank == dec.full_rank and dec.max_abs_error == 0.0
    assert dec.u.shape == dec.v.shape == (256, dec.rank)
    assert dec.u.dtype == dec.v.dtype == np.float32
    if kind == "low_rank":
        assert dec.full_rank == 5
    recon = dec.u.astype(np.float64) @ dec.v.astype(np.float64).T
    assert np.abs(recon - err).max() <= 1e-4 * np.abs(err).max()


def test_decompose_exact_table_has_rank_zero():
    dec = decompose(EXACT_LUT)
    assert dec.rank == dec.full_rank == 0 and dec.exact
    assert dec.u.shape == (256, 0) and dec.v.shape == (256, 0)
    assert dec.max_abs_error == 0.0 and dec.weighted_rms_error == 0.0


def test_decompose_truncated_reports_errors():
    lut = low_rank_lut(601, 6)
    err = lut.astype(np.int64) - EXACT
    for r in (1, 3):
        dec = decompose(lut, max_rank=r)
        residual = err - dec.u.astype(np.float64) @ dec.v.astype(np.float64).T
        assert dec.rank == r and dec.full_rank == 6 and not dec.exact
        assert dec.max_abs_error == pytest.approx(np.abs(residual).max(), rel=1e-3)
        assert dec.weighted_rms_error == pytest.approx(np.sqrt(np.mean(residual**2)), rel=1e-3)
    # Weighted truncation: smaller residual where the activation codes are frequent.
    hist = np.zeros(256)
    hist[:16] = 1.0
    weights = np.outer(hist / hist.sum(), np.full(256, 1 / 256))

    def weighted_rms(dec):
        residual = err - dec.u.astype(np.float64) @ dec.v.astype(np.float64).T
        return float(np.sqrt(np.sum(weights * residual**2)))

    weighted = decompose(lut, max_rank=2, input_weights=hist)
    uniform = decompose(lut, max_rank=2)
    assert weighted.rank == 2 and not weighted.exact
    assert weighted_rms(weighted) <= weighted_rms(uniform) * 1.001
    assert weighted.weighted_rms_error == pytest.approx(weighted_rms(weighted), rel=1e-2, abs=1e-3)


def test_decompose_accepts_array_path_and_entry(tmp_path):
    lut = near_exact_lut(602)
    path = tmp_path / "table.bin"
    lut.astype("<u2").tofile(path)
    assert path.stat().st_size == 65_536 * 2

    class Entry:
        lut = None

    entry = Entry()
    entry.lut = lut
    base = decompose(lut)
    for given in (path, str(path), entry):
        dec = decompose(given)
        assert dec.rank == base.rank
        np.testing.assert_array_equal(dec.u, base.u)
        np.testing.assert_array_equal(dec.v, base.v)


# ---------------------------------------------------------------------- Keras layer


def _layer_reference(x, kernel, bias, lut, strides, padding, input_range, activation):
    """FakeApproxConv2D: fake-quant input and kernel, table op, bias, activation."""
    kr = (float(kernel.min()), float(kernel.max()))
    x_q, k_q = fake_quant(x, *input_range), fake_quant(kernel, *kr)
    y = ref_conv(x_q, k_q, lut, strides, padding, input_range, kr) + bias.astype(np.float64)
    return activation(y)


RELU = lambda y: np.maximum(y, 0.0)  # noqa: E731
IDENTITY = lambda y: y  # noqa: E731


def _set_weights(layer, seed):
    rng = np.random.default_rng(seed)
    layer.kernel.assign(rng.normal(0, 0.4, size=layer.kernel.shape).astype(F32))
    if layer.bias is not None:
        layer.bias.assign(rng.normal(0, 0.3, size=layer.bias.shape).astype(F32))


@pytest.mark.parametrize("strides,padding,activation", [((1, 1), "same", "relu"), ((2, 2), "valid", None), ((2, 1), "same", None)])
def test_layer_batch_quantization(strides, padding, activation):
    lut = lut_with_nonzero_row0()
    layer = AxConv2D(3, (3, 2), strides=strides, padding=padding, activation=activation, quantization="batch")
    x = np.random.default_rng(700).normal(size=(2, 7, 6, 2)).astype(F32)
    layer.build(x.shape)
    _set_weights(layer, 701)
    layer.set_multiplier(lut)
    got = layer(x).numpy()
    act = RELU if activation == "relu" else IDENTITY
    ref = _layer_reference(
        x, layer.kernel.numpy(), layer.bias.numpy(), lut, strides, padding.upper(), (x.min(), x.max()), act
    )
    assert_close(got, ref)
    assert layer.compute_output_shape(x.shape) == got.shape


def test_layer_calibrated_range_and_batch_independence():
    lut = near_exact_lut(710)
    ir = (-1.5, 2.0)
    layer = AxConv2D(2, 3, padding="same", quantization="calibrated", input_range=ir, use_bias=False)
    rng = np.random.default_rng(711)
    x = rng.normal(size=(4, 6, 6, 2)).astype(F32)
    x[0] *= 3.0  # image 0 exceeds the range (clamped), the others mostly do not
    layer.build(x.shape)
    _set_weights(layer, 712)
    layer.set_multiplier(lut)
    np.testing.assert_array_equal(layer.input_range.numpy(), np.array(ir, F32))
    full = layer(x).numpy()
    ref = _layer_reference(x, layer.kernel.numpy(), np.zeros(2, F32), lut, (1, 1), "SAME", ir, IDENTITY)
    assert_close(full, ref)
    for i in range(4):
        alone = layer(x[i : i + 1]).numpy()
        np.testing.assert_allclose(alone[0], full[i], rtol=0, atol=1e-6 * np.abs(full).max())
    mixed = layer(np.stack([x[2], x[0] * 10.0, x[1]])).numpy()
    np.testing.assert_allclose(mixed[0], full[2], rtol=0, atol=1e-6 * np.abs(full).max())
    np.testing.assert_allclose(mixed[2], full[1], rtol=0, atol=1e-6 * np.abs(full).max())
    # set_input_range moves the range used by later calls.
    layer.set_input_range(-1.0, 1.0)
    ref2 = _layer_reference(x, layer.kernel.numpy(), np.zeros(2, F32), lut, (1, 1), "SAME", (-1.0, 1.0), IDENTITY)
    assert_close(layer(x).numpy(), ref2)
    with pytest.raises(ValueError, match="input range"):
        layer.set_input_range(1.0, -1.0)


def _functional_conv(input_shape, **conv_kwargs):
    inputs = keras.Input(shape=input_shape)
    conv = keras.layers.Conv2D(**conv_kwargs)
    keras.Model(inputs, conv(inputs))
    return conv


@pytest.mark.parametrize("padding,strides", [("same", 1), ("valid", 2)])
def test_from_conv2d_exact_table_matches_fake_quant_conv(padding, strides):
    conv = _functional_conv((7, 7, 3), filters=4, kernel_size=3, strides=strides, padding=padding, activation="relu")
    rng = np.random.default_rng(720)
    conv.kernel.assign(rng.normal(0, 0.3, size=conv.kernel.shape).astype(F32))
    conv.bias.assign(rng.normal(0, 0.2, size=conv.bias.shape).astype(F32))
    x = rng.normal(size=(2, 7, 7, 3)).astype(F32)

    layer = AxConv2D.from_conv2d(conv, quantization="batch")
    np.testing.assert_array_equal(layer.kernel.numpy(), conv.kernel.numpy())
    np.testing.assert_array_equal(layer.bias.numpy(), conv.bias.numpy())
    assert layer.name == conv.name and layer.strides == (strides, strides) and layer.padding == padding
    kernel = conv.kernel.numpy()
    x_q = fake_quant(x, x.min(), x.max())
    k_q = fake_quant(kernel, kernel.min(), kernel.max())
    pre = tf.nn.conv2d(x_q, k_q, strides, padding.upper()).numpy().astype(np.float64) + conv.bias.numpy()
    expected = np.maximum(pre, 0.0)
    got = layer(x).numpy()
    assert_close(got, expected)
    # The same layer with a table: equal to the reference op on the fake-quantized tensors.
    lut = lut_with_nonzero_row0()
    layer.set_multiplier(lut)
    ref = _layer_reference(x, kernel, conv.bias.numpy(), lut, (strides,) * 2, padding.upper(), (x.min(), x.max()), RELU)
    assert_close(layer(x).numpy(), ref)


def test_from_conv2d_calibrated_with_range():
    conv = _functional_conv((5, 5, 2), filters=2, kernel_size=(2, 3), padding="same")
    x = np.random.default_rng(721).normal(size=(1, 5, 5, 2)).astype(F32)
    layer = AxConv2D.from_conv2d(conv, input_range=(-2.0, 2.0), name="ax")
    assert layer.name == "ax" and layer.quantization == "calibrated"
    ref = _layer_reference(x, conv.kernel.numpy(), conv.bias.numpy(), EXACT_LUT, (1, 1), "SAME", (-2.0, 2.0), IDENTITY)
    assert_close(layer(x).numpy(), ref)


def test_from_conv2d_rejects_dilation():
    conv = _functional_conv((6, 6, 2), filters=2, kernel_size=3, dilation_rate=2)
    with pytest.raises(ValueError, match="dilation"):
        AxConv2D.from_conv2d(conv)




def test_from_conv2d_with_high_rank_multiplier_uses_copied_weights(tmp_path, monkeypatch):
    """The gathered path's per-tap table must be built from the copied kernel."""
    monkeypatch.setattr(axconv_ops, "GATHER_RANK_THRESHOLD", 0)
    lut = random_lut(722)
    path = tmp_path / "rand.bin"
    path.write_bytes(lut.astype("<u2").tobytes())
    conv = _functional_conv((5, 5, 2), filters=3, kernel_size=3, padding="same")
    rng = np.random.default_rng(723)
    conv.kernel.assign(rng.normal(0, 0.3, size=conv.kernel.shape).astype(F32))
    x = rng.normal(size=(1, 5, 5, 2)).astype(F32)
    layer = AxConv2D.from_conv2d(conv, quantization="batch", multiplier=str(path))
    assert layer.multiplier == str(path) and layer.rank == 256
    ref = _layer_reference(x, conv.kernel.numpy(), conv.bias.numpy(), lut, (1, 1), "SAME", (x.min(), x.max()), IDENTITY)
    assert_close(layer(x).numpy(), ref)


def test_set_multiplier_swaps_without_retracing(monkeypatch):
    monkeypatch.setattr(axconv_ops, "GATHER_RANK_THRESHOLD", 48)
    inputs = keras.Input(shape=(6, 6, 2))
    layer = AxConv2D(3, 3, padding="same", quantization="batch", activation="relu")
    model = keras.Model(inputs, layer(inputs))
    _set_weights(layer, 730)
    x = np.random.default_rng(731).normal(size=(2, 6, 6, 2)).astype(F32)
    x_t = tf.constant(x)
    fn = tf.function(lambda t: model(t, training=False))

    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    low = low_rank_lut(732, 4)
    high = random_lut(733)
    assert decompose(high).rank > axconv_ops.GATHER_RANK_THRESHOLD >= decompose(low).rank
    steps = [("exact", None, EXACT_LUT), ("low", low, low), ("high", high, high), ("low again", low, low),
             ("near exact", near_exact_lut(734), near_exact_lut(734)), ("high again", high, high), ("exact again", None, EXACT_LUT)]
    for name, given, table in steps:
        if name != "exact":
            layer.set_multiplier(given)
        gathered = decompose(table).rank > axconv_ops.GATHER_RANK_THRESHOLD
        assert bool(layer._tables.use_table.numpy()) == gathered, name
        assert layer.rank == decompose(table).rank
        got = fn(x_t).numpy()
        ref = _layer_reference(x, kernel, bias, table, (1, 1), "SAME", (x.min(), x.max()), RELU)
        assert_close(got, ref, what=name)
        assert fn.experimental_get_tracing_count() == 1, f"retraced after {name}"


def test_high_rank_multiplier_set_before_build_follows_the_weights(monkeypatch):
    """The gathered path's per-tap table is rebuilt for whatever kernel the layer has
    when it runs, however the weights got there."""
    monkeypatch.setattr(axconv_ops, "GATHER_RANK_THRESHOLD", 48)
    lut = random_lut(740)
    layer = AxConv2D(2, 3, padding="same", quantization="batch")
    layer.set_multiplier(lut)
    x = np.random.default_rng(741).normal(size=(2, 5, 5, 3)).astype(F32)
    layer(x)  # builds with random initial weights and caches their table
    _set_weights(layer, 742)
    got = layer(x).numpy()
    ref = _layer_reference(x, layer.kernel.numpy(), layer.bias.numpy(), lut, (1, 1), "SAME", (x.min(), x.max()), lambda v: v)
    assert_close(got, ref, what="after set_weights")


def test_get_config_from_config_round_trip(tmp_path):
    path = tmp_path / "low.bin"
    lut = low_rank_lut(750, 5)  # factor path: the table does not depend on the kernel
    path.write_bytes(lut.astype("<u2").tobytes())
    layer = AxConv2D(
        3, (3, 2), strides=(2, 1), padding="same", activation="relu", use_bias=True,
        quantization="calibrated", input_range=(-1.0, 1.5), multiplier=str(path), max_rank=None, name="axc",
    )
    x = np.random.default_rng(751).normal(size=(2, 6, 5, 2)).astype(F32)
    layer.build(x.shape)
    _set_weights(layer, 752)
    config = layer.get_config()
    assert config["filters"] == 3 and tuple(config["kernel_size"]) == (3, 2) and tuple(config["strides"]) == (2, 1)
    assert config["padding"] == "same" and config["quantization"] == "calibrated"
    assert tuple(config["input_range"]) == (-1.0, 1.5) and config["multiplier"] == str(path)
    clone = AxConv2D.from_config(config)
    assert clone.get_config() == config
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(x).numpy(), layer(x).numpy())
    ref = _layer_reference(x, layer.kernel.numpy(), layer.bias.numpy(), lut, (2, 1), "SAME", (-1.0, 1.5), RELU)
    assert_close(layer(x).numpy(), ref)
    # A table given as an array is not serialisable: the config says exact (None).
    layer.set_multiplier(lut)
    assert layer.get_config()["multiplier"] is None


@pytest.mark.parametrize(
    "table", ["low_rank", "high_rank"]
)
def test_model_save_and_load(tmp_path, table):
    lut = low_rank_lut(760, 4) if table == "low_rank" else random_lut(760)
    assert (decompose(lut).rank > axconv_ops.GATHER_RANK_THRESHOLD) == (table == "high_rank")
    path = tmp_path / "mult.bin"
    path.write_bytes(lut.astype("<u2").tobytes())
    inputs = keras.Input(shape=(6, 6, 2))
    layer = AxConv2D(3, 3, padding="same", activation="relu", input_range=(-2.0, 2.0), multiplier=str(path))
    outputs = keras.layers.GlobalAveragePooling2D()(layer(inputs))
    model = keras.Model(inputs, outputs)
    _set_weights(layer, 761)
    layer.set_multiplier(str(path))  # rebuild the per-tap table after changing the kernel
    layer.set_input_range(-1.5, 1.8)
    x = np.random.default_rng(762).normal(size=(2, 6, 6, 2)).astype(F32)
    before = model(x).numpy()
    ref = _layer_reference(x, layer.kernel.numpy(), layer.bias.numpy(), lut, (1, 1), "SAME", (-1.5, 1.8), RELU)
    assert_close(before, ref.mean(axis=(1, 2)))

    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    loaded_layer = next(lyr for lyr in loaded.layers if isinstance(lyr, AxConv2D))
    assert loaded_layer.multiplier == str(path)
    np.testing.assert_array_equal(loaded_layer.input_range.numpy(), np.array([-1.5, 1.8], F32))
    np.testing.assert_allclose(loaded(x).numpy(), before, rtol=0, atol=1e-6 * np.abs(before).max())


# --------------------------------------------------------------------------- errors


def _ok():
    x, kernel = _conv_problem(800, shape=(1, 4, 4, 2), kshape=(2, 2, 2, 1))
    return x, kernel


@pytest.mark.parametrize(
    "bad_lut,exc",
    [
        (np.zeros((256, 255), np.uint16), ValueError),
        (np.zeros((65536,), np.uint16), ValueError),
        (np.zeros((256, 256), np.float32), ValueError),
        (np.full((256, 256), 70000, np.int64), ValueError),
        (np.full((256, 256), -1, np.int32), ValueError),
        ([[0] * 256] * 256, TypeError),
    ],
)
def test_error_bad_lut(bad_lut, exc):
    x, kernel = _ok()
    with pytest.raises(exc, match="lut"):
        ax_conv2d(x, kernel, bad_lut)
    with pytest.raises(exc, match="lut"):
        decompose(bad_lut)


def test_error_channel_mismatch():
    x, kernel = _ok()
    with pytest.raises(ValueError, match="kernel.*channels"):
        ax_conv2d(x, np.zeros((2, 2, 3, 1), F32), EXACT_LUT)


@pytest.mark.parametrize("which", ["x", "kernel"])
@pytest.mark.parametrize("shape", [(4, 4, 2), (1, 1, 4, 4, 2)])
def test_error_rank(which, shape):
    x, kernel = _ok()
    bad = np.zeros(shape, F32)
    with pytest.raises(ValueError, match=f"{which}.*rank 4"):
        ax_conv2d(bad if which == "x" else x, bad if which == "kernel" else kernel, EXACT_LUT)


@pytest.mark.parametrize("name", ["input_range", "kernel_range"])
def test_error_bad_ranges(name):
    x, kernel = _ok()
    with pytest.raises(ValueError, match=name):
        ax_conv2d(x, kernel, EXACT_LUT, **{name: (1.0, -1.0)})
    with pytest.raises(ValueError, match=name):
        ax_conv2d(x, kernel, EXACT_LUT, **{name: (0.0, np.inf)})


@pytest.mark.parametrize("which", ["x", "kernel"])
@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_error_non_finite(which, bad_value):
    x, kernel = _ok()
    target = x if which == "x" else kernel
    target = target.copy()
    target.flat[1] = bad_value
    args = (target, kernel) if which == "x" else (x, target)
    with pytest.raises(ValueError, match=f"{which}: contains NaN or inf"):
        ax_conv2d(*args, EXACT_LUT)


def test_error_integer_input():
    x, kernel = _ok()
    with pytest.raises(TypeError, match="x"):
        ax_conv2d(x.astype(np.int32), kernel, EXACT_LUT)


@pytest.mark.parametrize("padding", ["FULL", "", "causal"])
def test_error_padding(padding):
    x, kernel = _ok()
    with pytest.raises(ValueError, match="padding"):
        ax_conv2d(x, kernel, EXACT_LUT, padding=padding)
    with pytest.raises(ValueError, match="padding"):
        AxConv2D(2, 3, padding=padding)


@pytest.mark.parametrize("strides", [0, (1, 0), (-1, 1), (0, 0), (1, 2, 3)])
def test_error_strides(strides):
    x, kernel = _ok()
    with pytest.raises(ValueError, match="strides"):
        ax_conv2d(x, kernel, EXACT_LUT, strides=strides)
    with pytest.raises(ValueError, match="strides"):
        AxConv2D(2, 3, strides=strides)


def test_error_valid_kernel_larger_than_input():
    x, _ = _ok()
    with pytest.raises(ValueError, match="kernel"):
        ax_conv2d(x, np.zeros((5, 1, 2, 1), F32), EXACT_LUT, padding="VALID")


def test_error_layer_quantization_mode():
    with pytest.raises(ValueError, match="quantization"):
        AxConv2D(2, 3, quantization="dynamic")
    layer = AxConv2D(2, 3, quantization="batch")
    layer.build((1, 4, 4, 1))
    with pytest.raises(ValueError, match="calibrated"):
        layer.set_input_range(0.0, 1.0)
