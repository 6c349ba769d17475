"""`evaluate --check`: each non-exact table of a genome changes its layers' outputs, on the
tiny trained model of conftest. Reference numbers come from an independent numpy forward
pass (tests/numpy_reference.py: every product looked up in the table, no TensorFlow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import CIRCUITS, POWERS, _A, _B, write_catalog
from numpy_reference import F32, POOL_AFTER, approx_conv, codes, fold_batchnorm, maxpool2, nudge, weights_of

from surrogate_nas.evaluation.table_check import compare_outputs

NOT_IN_EFFECT = "its table is not in effect, or differs from exact only where this layer's codes never go"
N_IMAGES = 20  # the conftest evaluator's search set: `evaluate --images 20` scores the same images


def _reference(images, weights, input_ranges, luts) -> list[dict]:
    """Per conv layer with a table: its input in the genome's network, then the layer once
    with the table and once with the exact product; outputs that differ, by whole units of
    summed table entries (s_in * s_w each), and the largest |difference|."""
    x = np.asarray(images, F32) * F32(1.0 / 255.0)
    out = []
    for i, ((kernel, gamma, beta, mean, var, eps), lut) in enumerate(zip(weights["convs"], luts)):
        folded, bias = fold_batchnorm(kernel, gamma, beta, mean, var, eps)
        folded, bias = folded.astype(F32), bias.astype(F32)
        with_table = approx_conv(x, folded, bias, input_ranges[i], lut)
        if lut is not None:
            with_exact = approx_conv(x, folded, bias, input_ranges[i], None)
            unit = float(nudge(*input_ranges[i])[0]) * float(nudge(folded.min(), folded.max())[0])
            units = np.rint((with_table - with_exact) / unit)  # integers: the table's sums minus a*w's
            out.append({"layer": f"conv{i + 1}", "n_outputs": with_table.size, "n_differ": int(np.count_nonzero(units)),
                        "max_abs_difference": float(np.abs(with_table - with_exact).max())})
        x = np.maximum(with_table, 0.0).astype(F32)
        if i in POOL_AFTER:
            x = maxpool2(x)
    return out


def _check(cli, genome: str, *extra, **override) -> tuple[dict, object]:
    r = cli("evaluate", "--genome", genome, "--images", N_IMAGES, "--compensation", "none", "--check", "--json",
            *extra, **override)
    lines = r.out.strip().splitlines()
    assert len(lines) == 1, (r.out, r.err)
    return json.loads(lines[0]), r


def test_every_non_exact_circuit_changes_its_layers(cli, evaluator, float_model, card):
    genome = ["trunc", "lowbits", "noisy", "trunc", "zero"]
    doc, r = _check(cli, ",".join(genome))
    assert r.rc == 0 and r.err == "", r.err
    check = doc["check"]
    assert check["ok"] is True and check["n_images"] == N_IMAGES and check["split"] == "validation"
    assert "exact table" in check["compared"] and "bias offsets in both" in check["compared"]
    images = evaluator.image_set.images[:N_IMAGES]
    expected = _reference(images, weights_of(float_model), card["input_ranges"], [CIRCUITS[n] for n in genome])
    assert [(c["circuit"], c["layer"]) for c in check["layers"]] == list(zip(genome, [e["layer"] for e in expected]))
    for got, want in zip(check["layers"], expected):
        assert got["status"] == "changes outputs" and got["compensation"] == "none"
        assert got["n_outputs"] == want["n_outputs"]
        assert got["n_differ"] == want["n_differ"] > 0
        assert got["share_differ"] == pytest.approx(want["n_differ"] / want["n_outputs"], abs=1e-12)
        assert got["max_abs_difference"] == pytest.approx(want["max_abs_difference"], rel=1e-4)


def test_report_lines(cli):
    r = cli("evaluate", "--genome", "exact,trunc,exact,zero,exact", "--images", N_IMAGES, "--compensation", "none",
            "--check")
    assert r.rc == 0, r.err
    lines = r.out.strip().splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("Tables in effect"))
    assert lines[head] == f"Tables in effect ({N_IMAGES} validation images):"
    assert lines[head + 1].startswith("  compared: each layer run on its inputs in this genome's network")
    rows = lines[head + 2:]
    assert len(rows) == 2  # the exact reference is the baseline, not reported
    assert rows[0].split()[:4] == ["trunc", "conv2", "changes", "outputs:"]
    assert rows[1].split()[:4] == ["zero", "conv4", "changes", "outputs:"]
    assert all(row.endswith("[compensation: none]") and "% of " in row for row in rows)


def test_all_exact_genome_has_nothing_to_check(cli):
    doc, r = _check(cli, "exact,exact,exact,exact,exact")
    assert r.rc == 0 and doc["check"]["layers"] == [] and doc["check"]["ok"] is True


def test_table_equal_to_exact_says_so(cli, tmp_path):
    """A second circuit with the a*b table (dearer, so `exact` stays the reference)."""
    catalog = write_catalog(tmp_path / "cat", {**CIRCUITS, "same": _A * _B}, {**POWERS, "same": 0.45})
    doc, r = _check(cli, "same,trunc,exact,exact,same", catalog=catalog)
    assert r.rc == 0 and r.err == "", r.err
    statuses = [(c["circuit"], c["layer"], c["status"]) for c in doc["check"]["layers"]]
    assert statuses == [("same", "conv1", "equal to exact"), ("trunc", "conv2", "changes outputs"),
                        ("same", "conv5", "equal to exact")]
    r = cli("evaluate", "--genome", "same,exact,exact,exact,exact", "--images", N_IMAGES, "--compensation", "none",
            "--check", catalog=catalog)
    assert r.rc == 0, r.err
    assert r.out.strip().splitlines()[-1].split() == ["same", "conv1", "equal", "to", "exact:", "no", "change",
                                                      "expected"]


def _kernel_codes(float_model) -> list[set[int]]:
    """The 8-bit codes each conv's folded kernel takes (its own min/max range)."""
    out = []
    for kernel, gamma, beta, mean, var, eps in weights_of(float_model)["convs"]:
        folded = fold_batchnorm(kernel, gamma, beta, mean, var, eps)[0].astype(F32)
        out.append(set(codes(folded, nudge(folded.min(), folded.max())).ravel().tolist()))
    return out


def test_a_table_that_changes_nothing_is_an_error(cli, tmp_path, evaluator, float_model, card):
    """A circuit that differs from a*b only for a weight code conv1's kernel never takes:
    non-exact, yet in conv1 it cannot change a single output -- what a table that never
    reaches the op looks like. In a layer whose kernel takes that code it does change them."""
    used = _kernel_codes(float_model)
    candidates = sorted((set(range(256)) - used[0]) & used[4])
    assert candidates, "every code conv5 takes is also in conv1"
    w0 = candidates[len(candidates) // 2]
    blind = _A * _B
    blind[:, w0] += 1  # products with weight code w0 are one too large
    catalog = write_catalog(tmp_path / "cat", {**CIRCUITS, "blind": blind}, {**POWERS, "blind": 0.39})

    r = cli("evaluate", "--genome", "blind,exact,exact,exact,exact", "--images", N_IMAGES, "--compensation", "none",
            "--check", catalog=catalog)
    assert r.rc == 2
    assert r.err_lines == [f"error: --check: circuit 'blind' changes no output of layer conv1 on {N_IMAGES} "
                           f"validation images: {NOT_IN_EFFECT}"]
    assert r.out.strip().splitlines()[-1].split()[:3] == ["blind", "conv1", "UNUSED:"]

    doc, r = _check(cli, "blind,exact,exact,exact,blind", catalog=catalog)
    assert r.rc == 2 and len(r.err_lines) == 1 and "'blind'" in r.err_lines[0]
    assert doc["check"]["ok"] is False
    first, last = doc["check"]["layers"]
    assert (first["layer"], first["status"], first["n_differ"]) == ("conv1", "unused", 0)
    assert (last["layer"], last["status"]) == ("conv5", "changes outputs")
    images = evaluator.image_set.images[:N_IMAGES]
    want = _reference(images, weights_of(float_model), card["input_ranges"], [blind, None, None, None, blind])
    assert [w["n_differ"] for w in want] == [0, last["n_differ"]] and last["n_differ"] > 0
    assert last["max_abs_difference"] == pytest.approx(want[1]["max_abs_difference"], rel=1e-4)


def test_a_starved_layer_is_reported(cli, evaluator, float_model, card):
    """`zero` in conv4 leaves conv5 nothing but zero inputs (after the ReLU): all its input
    codes are 0, where trunc's table equals a*b, so trunc cannot act there. The numpy
    network agrees that no output of conv5 differs."""
    genome = ["exact", "exact", "exact", "zero", "trunc"]
    doc, r = _check(cli, ",".join(genome))
    assert r.rc == 2
    assert r.err_lines == [f"error: --check: circuit 'trunc' changes no output of layer conv5 on {N_IMAGES} "
                           f"validation images: {NOT_IN_EFFECT}"]
    images = evaluator.image_set.images[:N_IMAGES]
    want = _reference(images, weights_of(float_model), card["input_ranges"], [None, None, None] +
                      [CIRCUITS[n] for n in genome[3:]])
    assert [(c["layer"], c["status"], c["n_differ"]) for c in doc["check"]["layers"]] == [
        ("conv4", "changes outputs", want[0]["n_differ"]), ("conv5", "unused", 0)]
    assert want[1]["n_differ"] == 0


def test_bias_offsets_are_held_equal(cli, evaluator, float_model, card):
    """With bias compensation the design subtracts per-channel offsets; both runs keep them,
    so conv1 (inputs: the images themselves) shows the table's own differences, the same
    as without compensation."""
    genome = ["trunc", "exact", "exact", "exact", "exact"]
    doc, r = _check(cli, ",".join(genome), "--compensation", "bias")
    assert r.rc == 0, r.err
    (got,) = doc["check"]["layers"]
    assert doc["layer_compensation"][0] == got["compensation"] != "none"
    images = evaluator.image_set.images[:N_IMAGES]
    (want,) = _reference(images, weights_of(float_model), card["input_ranges"], [CIRCUITS["trunc"]] + [None] * 4)
    assert got["n_differ"] == want["n_differ"]
    assert got["max_abs_difference"] == pytest.approx(want["max_abs_difference"], rel=1e-4)


def test_compare_outputs_counts_whole_units():
    """The rule that decides: a table moves an output by whole units, rounding by far less."""
    exact = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    unit = 0.01
    assert compare_outputs(exact, exact.copy(), unit) == (0, 0.0)  # the silently unused table
    noise = exact + np.float32(1e-6)
    assert compare_outputs(noise, exact, unit)[0] == 0
    moved = exact + np.array([0.0, unit, -2 * unit, 0.0], np.float32)
    n, biggest = compare_outputs(moved, exact, unit)
    assert n == 2 and biggest == pytest.approx(2 * unit, rel=1e-5)

