"""Compensation (bias offsets, ALWANN weight tuning) against independent numpy
computations, and its use by the layer, the evaluator, the CLI and the summary."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_axconv import (
    _layer_reference,
    _set_weights,
    assert_close,
    fake_quant,
    ref_codes,
    ref_nudge,
)

from surrogate_nas.emulation.layers import AxConv2D
from surrogate_nas.multipliers import compensation as comp
from surrogate_nas.results.summary import choose_within

F32 = np.float32
A = np.arange(256)
EXACT = np.multiply.outer(A, A)


def _biased_lut(seed: int = 0) -> np.ndarray:
    """A one-signed, data-dependent error, like an EvoApprox truncation circuit."""
    noise = np.random.default_rng(seed).integers(0, 200, size=(256, 256))
    return np.clip(EXACT + noise + (EXACT >> 6), 0, 65535).astype(np.uint16)


def test_alwann_rule_on_hand_checked_table():
    # Columns 3 and 6 swapped: storing 6 for weight 3 (and 3 for 6) is exact again.
    lut = EXACT.copy()
    lut[:, 3], lut[:, 6] = EXACT[:, 6], EXACT[:, 3]
    lut[:, 200] = EXACT[:, 200] + 1000
    mapping = comp.tuned_weight_map(lut.astype(np.uint16), None)
    assert mapping[3] == 6 and mapping[6] == 3
    assert mapping[0] == 0 and mapping[255] == 255
    # weight 200's own column is off by 1000 everywhere: the rule takes whichever column
    # minimises SUM_a |200a - LUT[a, w']| (brute force here)
    cost = np.abs(200 * A[:, None] - lut).sum(axis=0)
    assert mapping[200] == int(np.argmin(cost))
    # the exact table maps every code to itself
    assert np.array_equal(comp.tuned_weight_map(EXACT.astype(np.uint16), None), A)


def test_tune_minimises_expected_error_under_the_histogram():
    lut = _biased_lut(1)
    hist = np.random.default_rng(2).integers(0, 50, 256)
    mapping = comp.tuned_weight_map(lut, hist)
    p = hist / hist.sum()
    for w in (0, 1, 17, 128, 255):
        cost = [float(np.sum(p * np.abs(A * w - lut[:, v].astype(np.int64)))) for v in range(256)]
        assert cost[mapping[w]] == pytest.approx(min(cost), rel=1e-12)
    uniform = comp.tuned_weight_map(lut, None)
    assert not np.array_equal(uniform, mapping)  # the histogram matters


def test_bias_offsets_against_a_loop():
    rng = np.random.default_rng(3)
    lut = _biased_lut(4)
    hists = rng.integers(0, 30, size=(2, 256))
    codes = rng.integers(0, 256, size=(3, 2, 2, 4))
    got = comp.bias_offsets(lut, hists, codes, 0.01, 0.02)
    want = np.zeros(4)
    for c in range(4):
        for i in range(3):
            for j in range(2):
                for ci in range(2):
                    w = codes[i, j, ci, c]
                    p = hists[ci] / hists[ci].sum()
                    want[c] += 0.01 * 0.02 * sum(p[a] * (int(lut[a, w]) - a * w) for a in range(256))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def _calibrated_layer(lut, compensation=None, seed=10, padding="same"):
    layer = AxConv2D(4, (3, 3), padding=padding, input_range=(0.0, 2.0))
    x = np.abs(np.random.default_rng(seed).normal(0, 0.7, size=(8, 9, 9, 3))).astype(F32)
    layer.build(x.shape)
    _set_weights(layer, seed + 1)
    layer.set_multiplier(lut, compensation=compensation)
    return layer, x


def _channel_hists(x, lo=0.0, hi=2.0):
    codes = ref_codes(fake_quant(x, lo, hi), ref_nudge(lo, hi)).astype(np.int64)
    return np.stack([np.bincount(codes[..., c].ravel(), minlength=256) for c in range(x.shape[-1])])


def test_none_is_the_uncompensated_emulation_bit_for_bit():
    lut = _biased_lut(5)
    plain, x = _calibrated_layer(lut)
    none, _ = _calibrated_layer(lut, compensation=comp.fit("none", lut, _channel_hists(x), plain.kernel_codes(), 1, 1))
    np.testing.assert_array_equal(plain(x).numpy(), none(x).numpy())
    ref = _layer_reference(x, plain.kernel.numpy(), plain.bias.numpy(), lut, (1, 1), "SAME", (0.0, 2.0), lambda y: y)
    assert_close(plain(x).numpy(), ref)


def test_layer_kernel_codes_and_scales_match_the_reference_quantizer():
    layer, _ = _calibrated_layer(_biased_lut(6))
    k = layer.kernel.numpy()
    q = ref_nudge(float(k.min()), float(k.max()))
    np.testing.assert_array_equal(layer.kernel_codes(), ref_codes(fake_quant(k, k.min(), k.max()), q))
    s_in, s_w = layer.scales()
    assert s_in == pytest.approx(2.0 / 255, rel=1e-6) and s_w == pytest.approx(q.scale, rel=1e-6)


def test_bias_removes_the_mean_output_error_on_calibration_data():
    lut = _biased_lut(7)
    exact, x = _calibrated_layer(None, padding="valid")  # padding taps are not in the histograms
    approx, _ = _calibrated_layer(lut, padding="valid")
    hists = _channel_hists(x)
    s_in, s_w = approx.scales()
    fitted = comp.fit("bias", lut, hists, approx.kernel_codes(), s_in, s_w)
    corrected, _ = _calibrated_layer(lut, compensation=fitted, padding="valid")
    y0 = exact(x).numpy()
    before = (approx(x).numpy() - y0).mean(axis=(0, 1, 2))
    after = (corrected(x).numpy() - y0).mean(axis=(0, 1, 2))
    assert np.all(np.abs(before) > 0.05)  # the circuit's error is strongly biased
    # left: border pixels are in the histogram but under fewer taps, and rounding
    assert np.all(np.abs(after) < 0.03 * np.abs(before))
    # the offsets are exactly what the layer subtracts
    np.testing.assert_allclose(approx(x).numpy() - corrected(x).numpy(), np.broadcast_to(fitted.bias_offset, y0.shape),
                               rtol=1e-4, atol=1e-5)


def test_tuned_layer_multiplies_with_the_remapped_table():
    """tune+bias against references built here: the weight map is optimal for the pooled
    histogram (brute force), the offsets are the loop of `test_bias_offsets_against_a_loop`
    over the remapped table, and the layer computes the reference op with both."""
    lut = _biased_lut(8)
    layer, x = _calibrated_layer(lut)
    hists = _channel_hists(x)
    k = layer.kernel.numpy()
    q = ref_nudge(float(k.min()), float(k.max()))
    codes = ref_codes(fake_quant(k, k.min(), k.max()), q).astype(np.int64)
    s_in, s_w = 2.0 / 255, q.scale
    tuned = comp.fit("tune+bias", lut, hists, codes, s_in, s_w)
    p = hists.sum(axis=0) / hists.sum()
    table = lut.astype(np.int64)
    for w in range(256):
        cost = (p[:, None] * np.abs(A[:, None] * w - table)).sum(axis=0)
        assert cost[tuned.weight_map[w]] == pytest.approx(cost.min(), rel=1e-12, abs=1e-9)
    want = np.zeros(4)
    for c in range(4):
        for i, j, ci in np.ndindex(3, 3, 3):
            w = codes[i, j, ci, c]
            pc = hists[ci] / hists[ci].sum()
            want[c] += s_in * s_w * float(np.sum(pc * (table[:, tuned.weight_map[w]] - A * w)))
    np.testing.assert_allclose(tuned.bias_offset, want, rtol=1e-5, atol=1e-7)
    layer.set_multiplier(lut, compensation=tuned)
    ref = _layer_reference(x, k, layer.bias.numpy() - want.astype(F32),
                           lut[:, tuned.weight_map], (1, 1), "SAME", (0.0, 2.0), lambda y: y)
    assert_close(layer(x).numpy(), ref)
    layer.set_multiplier(lut)  # swapping back clears the compensation
    assert np.all(layer.bias_offset.numpy() == 0) and layer.compensation is None


def test_residual_statistics_after_bias_have_no_mean():
    lut = _biased_lut(9)
    hist, khist = np.ones(256), np.ones(256)
    raw = comp.residual_statistics(comp.Compensation("none"), lut, hist, khist)
    biased = comp.residual_statistics(comp.Compensation("bias", None, np.zeros(1, F32)), lut, hist, khist)
    assert raw[0] > 50 and biased[0] == 0.0 and biased[1] == pytest.approx(raw[1])
    assert biased[2] < raw[2]


def test_evaluate_reports_compensation(cli):
    genome = "trunc,trunc,trunc,trunc,trunc"
    out = {}
    for method in ("none", "bias", "tune", "tune+bias", "auto"):
        r = cli("evaluate", "--genome", genome, "--compensation", method, "--json", "--images", "20")
        assert r.rc == 0, r.err
        out[method] = json.loads(r.out.strip().splitlines()[-1])
        assert out[method]["compensation"] == method
    assert out["bias"]["layer_compensation"] == ["bias"] * 5
    assert set(out["auto"]["layer_compensation"]) <= set(comp.AUTO_CANDIDATES)
    assert len({out[m]["fingerprint"] for m in out}) == 5  # each method its own cache key
    r = cli("evaluate", "--genome", genome, "--compensation", "bias", "--images", "20")
    assert "ConvLayer 2: trunc.bin (bias)" in r.out
    r = cli("evaluate", "--genome", genome, "--compensation", "magic")
    assert r.rc == 2 and r.err.strip().startswith("error: --compensation: expected one of")


def test_exact_genome_is_never_compensated(cli):
    exact = ",".join(["exact"] * 5)
    accs = {m: json.loads(cli("evaluate", "--genome", exact, "--compensation", m, "--json", "--images", "20")
                          .out.strip().splitlines()[-1]) for m in ("none", "tune+bias")}
    assert accs["tune+bias"]["layer_compensation"] == ["none"] * 5
    assert accs["none"]["accuracy"] == accs["tune+bias"]["accuracy"]


def test_choose_within_uses_validation_not_test():
    exact = {"validation_accuracy": 0.80, "test_accuracy": 0.80}
    points = [
        {"genome": "a", "energy": 0.9, "validation_accuracy": 0.799, "test_accuracy": 0.70},  # test is ignored
        {"genome": "b", "energy": 0.5, "validation_accuracy": 0.790, "test_accuracy": 0.80},  # 1 pp below
        {"genome": "c", "energy": 0.95, "validation_accuracy": 0.802, "test_accuracy": 0.79},
    ]
    half = choose_within(points, exact, 0.5)
    assert half["genome"] == "a" and half["test_loss_pp"] == pytest.approx(10.0)
    assert half["energy_saving_pct"] == pytest.approx(10.0)
    assert choose_within(points, exact, 1.0)["genome"] == "b"
    assert choose_within(points[1:2], exact, 0.5) is None


# ------------------------------------------------------- training through the emulation


def _float_conv_of_quantized(x, k, lo=0.0, hi=2.0):
    import tensorflow as tf

    x_q = tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, num_bits=8)
    k_q = tf.quantization.fake_quant_with_min_max_vars(k, tf.reduce_min(k), tf.reduce_max(k), num_bits=8)
    return tf.nn.conv2d(x_q, k_q, 1, "SAME")


def test_straight_through_gradient_is_the_float_conv_gradient():
    import tensorflow as tf

    lut = _biased_lut(11)
    layer, x = _calibrated_layer(lut)
    x = tf.constant(np.clip(x, 0.05, 1.95))  # inside the range: fake quant passes gradients
    dy = tf.constant(np.random.default_rng(12).normal(size=layer(x).shape).astype(F32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x) * dy)
    gx, gk = tape.gradient(loss, [x, layer.kernel])
    # finite differences of the float convolution of the quantized operands (linear in
    # each operand, so central differences are exact up to rounding)
    k_q = tf.quantization.fake_quant_with_min_max_vars(layer.kernel, tf.reduce_min(layer.kernel),
                                                       tf.reduce_max(layer.kernel), num_bits=8).numpy()
    x_q = tf.quantization.fake_quant_with_min_max_vars(x, 0.0, 2.0, num_bits=8).numpy()

    def f_x(xv):
        return float(np.sum(tf.nn.conv2d(xv.astype(np.float64), k_q.astype(np.float64), 1, "SAME").numpy() * dy.numpy()))

    def f_k(kv):
        return float(np.sum(tf.nn.conv2d(x_q.astype(np.float64), kv.astype(np.float64), 1, "SAME").numpy() * dy.numpy()))

    rng = np.random.default_rng(13)
    for _ in range(6):
        idx = tuple(int(rng.integers(0, n)) for n in x.shape)
        e = np.zeros(x.shape)
        e[idx] = 1e-3
        fd = (f_x(x.numpy() + e) - f_x(x.numpy() - e)) / 2e-3
        assert gx.numpy()[idx] == pytest.approx(fd, rel=1e-3, abs=1e-4)
        kidx = tuple(int(rng.integers(0, n)) for n in k_q.shape)
        e = np.zeros(k_q.shape)
        e[kidx] = 1e-3
        fd = (f_k(k_q + e) - f_k(k_q - e)) / 2e-3
        assert gk.numpy()[kidx] == pytest.approx(fd, rel=1e-3, abs=1e-4)
    # and the whole gradient equals TF's autodiff of the float conv of quantized operands
    kernel = tf.convert_to_tensor(layer.kernel)
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        ref = tf.reduce_sum(_float_conv_of_quantized(x, kernel) * dy)
    rx, rk = tape.gradient(ref, [x, kernel])
    np.testing.assert_allclose(gx.numpy(), rx.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gk.numpy(), rk.numpy(), rtol=1e-5, atol=1e-5)


def test_forward_values_under_a_tape_are_those_of_inference():
    import tensorflow as tf

    lut = _biased_lut(14)
    layer, x = _calibrated_layer(lut)
    s_in, s_w = layer.scales()
    layer.set_multiplier(lut, compensation=comp.fit("tune+bias", lut, _channel_hists(x), layer.kernel_codes(), s_in, s_w))
    with tf.GradientTape() as tape:
        y_train = layer(x, training=True)
    np.testing.assert_array_equal(y_train.numpy(), layer(x).numpy())


def test_saved_design_loads_with_its_table_and_compensation(tmp_path):
    import keras

    lut = _biased_lut(15)
    layer, x = _calibrated_layer(lut)
    s_in, s_w = layer.scales()
    layer.set_multiplier(lut, compensation=comp.fit("tune+bias", lut, _channel_hists(x), layer.kernel_codes(), s_in, s_w))
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "design.keras")
    loaded = keras.models.load_model(tmp_path / "design.keras")
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    plain, _ = _calibrated_layer(None)
    assert not np.array_equal(plain(x).numpy(), model(x).numpy())


def test_search_mode_makes_compensation_a_gene(cli):
    r = cli("evaluate", "--genome", "trunc+bias,trunc,trunc+tune+bias,exact,noisy+tune", "--compensation", "search",
            "--json", "--images", "20")
    assert r.rc == 0, r.err
    doc = json.loads(r.out.strip().splitlines()[-1])
    assert doc["layer_compensation"] == ["bias", "none", "tune+bias", "none", "tune"]
    assert doc["genome"] == ["trunc", "trunc", "trunc", "exact", "noisy"]
    bias = json.loads(cli("evaluate", "--genome", ",".join(["trunc"] * 5), "--compensation", "bias", "--json",
                          "--images", "20").out.strip().splitlines()[-1])
    same = json.loads(cli("evaluate", "--genome", ",".join(["trunc+bias"] * 5), "--compensation", "search", "--json",
                          "--images", "20").out.strip().splitlines()[-1])
    assert same["accuracy"] == bias["accuracy"] and same["energy"] == bias["energy"]
