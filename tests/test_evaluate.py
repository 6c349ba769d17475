"""`evaluate` command and `Evaluator`, on the tiny trained model of conftest (no mocks)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from conftest import EXACT_INDEX, POWERS, make_evaluator

from surrogate_nas.evaluation.evaluator import Evaluator

EXACT5 = "exact,exact,exact,exact,exact"


def test_report_style(cli, card):
    r = cli("evaluate", "--genome", "exact,trunc,lowbits,noisy,exact", "--images", "20", "--compensation", "none")
    assert r.rc == 0, r.err
    lines = r.out.strip().splitlines()
    assert lines[:5] == [
        "ConvLayer 1: exact.bin [conv1]",
        "ConvLayer 2: trunc.bin [conv2]",
        "ConvLayer 3: lowbits.bin [conv3]",
        "ConvLayer 4: noisy.bin [conv4]",
        "ConvLayer 5: exact.bin [conv5]",
    ]
    assert re.fullmatch(r"Accuracy: \d\.\d{4} \(validation, 20 images\)", lines[5])
    assert re.fullmatch(r"Relative energy: \d\.\d{4}", lines[6])
    assert re.fullmatch(r"Seconds: \d+\.\d{2}", lines[7])
    assert len(lines) == 8


def _json(cli, genome: str, *extra: str) -> dict:
    r = cli("evaluate", "--genome", genome, "--json", *extra)
    assert r.rc == 0, r.err
    lines = r.out.strip().splitlines()
    assert len(lines) == 1, r.out
    return json.loads(lines[0])


def test_json_all_exact(cli, float_model, card, evaluator):
    from numpy_reference import approx_forward, weights_of

    doc = _json(cli, EXACT5, "--images", "20")
    assert doc["genome"] == ["exact"] * 5
    assert doc["genome_indices"] == [EXACT_INDEX] * 5
    assert doc["energy"] == pytest.approx(1.0, abs=1e-12)
    assert doc["n_images"] == 20
    assert doc["split"] == "validation"
    # the same 20 search-set images, scored by an independent numpy forward pass
    assert evaluator.image_set.description["n_images"] == 20
    logits = approx_forward(evaluator.image_set.images, weights_of(float_model), card["input_ranges"])
    assert doc["accuracy"] == float(np.mean(logits.argmax(1) == evaluator.image_set.labels))
    assert {"seconds", "fingerprint"} <= set(doc)


def test_indices_and_names_agree_and_energy_formula(cli, card):
    by_name = _json(cli, "zero, trunc,lowbits ,noisy,exact", "--images", "20")
    mixed = _json(cli, "zero.bin,0,lowbits,3,1", "--images", "20")  # indices, names, name.bin
    assert by_name["genome"] == ["zero", "trunc", "lowbits", "noisy", "exact"]
    for doc in (mixed,):
        assert doc["genome_indices"] == by_name["genome_indices"] == [4, 0, 2, 3, 1]
        assert doc["accuracy"] == by_name["accuracy"]
        assert doc["energy"] == by_name["energy"]
        assert doc["fingerprint"] == by_name["fingerprint"]
    macs = np.array(card["macs_per_layer"][:5], dtype=np.float64)  # the conv layers (then fc1, logits)
    powers = np.array([POWERS[n] for n in by_name["genome"]])
    expected = float((macs * powers).sum() / (macs * POWERS["exact"]).sum())
    assert by_name["energy"] == pytest.approx(expected, rel=1e-12)
    assert by_name["energy"] < 1.0


def test_test_split_defaults_to_all_test_images(cli):
    doc = _json(cli, EXACT5, "--split", "test")
    assert doc["split"] == "test" and doc["n_images"] == 100


def _one_line_error(r, pattern: str):
    assert r.rc == 2, (r.out, r.err)
    assert len(r.err_lines) == 1, r.err
    assert r.err_lines[0].startswith("error: ")
    assert re.search(pattern, r.err_lines[0]), r.err_lines[0]


@pytest.mark.parametrize(
    "genome, pattern",
    [
        ("exact,exact,exact,exact", r"--genome: expected 5 multipliers .* got 4"),
        ("exact,exact,exact,exact,exact,exact", r"expected 5 multipliers .* got 6"),
        ("exact,exact,bogus,exact,exact", r"--genome: layer 3: unknown multiplier 'bogus'"),
        ("0,0,0,0,5", r"--genome: layer 5: index 5 is out of range 0\.\.4"),
        ("-1,0,0,0,0", r"layer 1: index -1 is out of range"),
    ],
)
def test_bad_genomes(cli, genome, pattern):
    _one_line_error(cli("evaluate", f"--genome={genome}", "--images", "20"), pattern)


def test_bad_split(cli):
    _one_line_error(cli("evaluate", "--genome", EXACT5, "--split", "bogus"), r"--split: expected one of validation, test")


def test_too_many_images(cli):
    _one_line_error(cli("evaluate", "--genome", EXACT5, "--images", "31"), r"--images: must be between 1 and 30")


def test_missing_catalog(cli, tmp_path):
    _one_line_error(cli("evaluate", "--genome", EXACT5, catalog=tmp_path / "nope"), r"--catalog .*nope.* not found")


def test_missing_data(cli, tmp_path):
    _one_line_error(cli("evaluate", "--genome", EXACT5, "--images", "20", data=tmp_path / "nope"), r"--data .*not found")


def test_missing_card_is_calibrated_first(cli, project, tmp_path, card):
    """A model without a card is calibrated (one line says so), with the card `train` wrote."""
    model = tmp_path / "m" / "tiny.keras"
    model.parent.mkdir()
    shutil.copy(project.model, model)
    r = cli("evaluate", "--genome", EXACT5, "--images", "20", "--json", model=model)
    assert r.rc == 0, r.err
    assert r.err_lines == [f"{model}: no model card; calibrating the model first (writes {model.with_suffix('.json')})"]
    written = json.loads(model.with_suffix(".json").read_text())
    for key in ("layer_names", "input_ranges", "input_code_histograms", "kernel_code_histograms", "macs_per_layer",
                "calibration_indices_sha256", "weights_sha256", "float_test_accuracy", "int8_exact_test_accuracy"):
        assert written[key] == card[key], key
    assert json.loads(r.out)["accuracy"] == _json(cli, EXACT5, "--images", "20")["accuracy"]


@pytest.mark.parametrize("card_text, pattern", [
    ("{not json", r"model card is not valid JSON"),
    ('{"epochs": 1}', r"model card lacks 'input_ranges'"),
])
def test_broken_model_card(cli, project, tmp_path, card_text, pattern):
    model = tmp_path / "m" / "tiny.keras"
    model.parent.mkdir()
    shutil.copy(project.model, model)
    if card_text is not None:
        model.with_suffix(".json").write_text(card_text)
    _one_line_error(cli("evaluate", "--genome", EXACT5, "--images", "20", model=model), pattern)


def test_corrupt_model_file(cli, project, tmp_path):
    model = tmp_path / "m" / "tiny.keras"
    model.parent.mkdir()
    model.write_bytes(b"not a keras file")
    shutil.copy(project.model.with_suffix(".json"), model.with_suffix(".json"))
    _one_line_error(cli("evaluate", "--genome", EXACT5, "--images", "20", model=model), r"--model .*cannot load the model")


def test_stale_model_card(cli, project, float_model, tmp_path):
    """Other weights saved under the card's model name: the card's calibration is not theirs."""
    import keras

    model = tmp_path / "m" / "tiny.keras"
    model.parent.mkdir()
    other = keras.models.clone_model(float_model)
    other.set_weights([w * 1.01 for w in float_model.get_weights()])
    other.save(model)
    card = model.with_suffix(".json")
    shutil.copy(project.model.with_suffix(".json"), card)
    r = cli("evaluate", "--genome", EXACT5, "--images", "20", model=model)
    _one_line_error(r, rf"{re.escape(str(card))}: model card is stale")
    shutil.copy(project.model, model)  # the weights the card was written for: accepted
    assert cli("evaluate", "--genome", EXACT5, "--images", "20", model=model).rc == 0


def test_catalog_without_exact(cli, tmp_path):
    from conftest import CIRCUITS, write_catalog

    folder = write_catalog(tmp_path / "noexact", {k: v for k, v in CIRCUITS.items() if k != "exact"})
    _one_line_error(cli("evaluate", "--genome", "0,0,0,0,0", "--images", "20", catalog=folder), r"no exact multiplier")


# --------------------------------------------------------------------------- Evaluator

GENOMES = [(EXACT_INDEX,) * 5, (0, 1, 2, 3, 4), (2, 2, 2, 2, 2), (3, 0, 3, 0, 3), (4,) * 5]


def test_accuracy_repeatable(evaluator):
    first = [evaluator.accuracy(g) for g in GENOMES]
    again = [evaluator.accuracy(g) for g in reversed(GENOMES)][::-1]
    assert first == again
    assert evaluator.accuracy(GENOMES[1]) == first[1]


def test_uniform_genome_energy_is_power_ratio(evaluator):
    assert evaluator.energy((EXACT_INDEX,) * 5) == pytest.approx(1.0, abs=1e-12)
    assert evaluator.energy((4,) * 5) == pytest.approx(POWERS["zero"] / POWERS["exact"], rel=1e-12)


def test_all_exact_energy_is_exactly_one(evaluator, catalog, card):
    from surrogate_nas.evaluation.energy import EnergyModel

    assert evaluator.energy((EXACT_INDEX,) * 5) == 1.0
    model = EnergyModel.from_catalog(card["macs_per_layer"][:5], catalog)
    assert model.batch(np.array([(EXACT_INDEX,) * 5]))[0] == 1.0


def test_batch_size_does_not_change_results(float_model, card, catalog, dataset, evaluator):
    small = make_evaluator(float_model, card, catalog, dataset, batch_size=7)
    large = make_evaluator(float_model, card, catalog, dataset, batch_size=64)
    assert small.fingerprint == large.fingerprint == evaluator.fingerprint
    for genome in GENOMES[:3]:
        assert small.accuracy(genome) == large.accuracy(genome) == evaluator.accuracy(genome)


def test_exact_multiplier_matches_plain_quantized_model(float_model, card, catalog, dataset):
    """The all-exact genome is the 8-bit model: its test accuracy equals that of an
    independent numpy forward pass with exact 8-bit products (not the card's number alone,
    which the same emulation wrote)."""
    from numpy_reference import approx_forward, weights_of

    ev = make_evaluator(float_model, card, catalog, dataset, n_images=None, split="test")
    logits = approx_forward(ev.image_set.images, weights_of(float_model), card["input_ranges"])
    expected = float(np.mean(logits.argmax(1) == ev.image_set.labels))
    assert ev.accuracy((EXACT_INDEX,) * 5) == pytest.approx(expected, abs=1e-12)
    assert card["int8_exact_test_accuracy"] == pytest.approx(expected, abs=1e-12)


def test_swapping_genomes_does_not_retrace(float_model, card, catalog, dataset):
    ev = make_evaluator(float_model, card, catalog, dataset, batch_size=7)  # 7, 7, 6: ragged last batch
    for genome in GENOMES + GENOMES[::-1]:
        ev.accuracy(genome)
    # scoring runs the staged network (kept activations), each stage traced once
    traced = [stage.run.experimental_get_tracing_count() for stage in ev.activations.stages]
    assert traced == [1] * 5 and ev._predict.experimental_get_tracing_count() <= 1


def test_score_fields(evaluator):
    s = evaluator.score(np.array([0, 1, 2, 3, 4]))
    assert s.genome == (0, 1, 2, 3, 4) and all(type(g) is int for g in s.genome)
    assert s.n_images == 20 and s.seconds >= 0
    assert s.accuracy == evaluator.accuracy((0, 1, 2, 3, 4))


def test_from_paths_matches_direct(project, catalog, dataset, evaluator):
    ev = Evaluator.from_paths(project.model, catalog, dataset, "validation", 20, 0, compensation="none")
    assert ev.fingerprint == evaluator.fingerprint
    assert ev.accuracy((0, 1, 2, 3, 4)) == evaluator.accuracy((0, 1, 2, 3, 4))


def test_fingerprint_changes_with_what_changes_an_accuracy(float_model, card, catalog, dataset, evaluator, tmp_path,
                                                           monkeypatch):
    """Other weights, other pixels under the same indices, another catalog or another
    emulation version: another fingerprint (cached accuracies are not reused)."""
    import dataclasses

    import keras
    from conftest import write_catalog

    from surrogate_nas.evaluation import evaluator as evaluate_module
    from surrogate_nas.multipliers.catalog import load_catalog

    base = evaluator.fingerprint
    assert make_evaluator(float_model, card, catalog, dataset).fingerprint == base  # same inputs, same key

    other = keras.models.clone_model(float_model)
    other.set_weights([w * 1.01 for w in float_model.get_weights()])
    assert make_evaluator(other, card, catalog, dataset).fingerprint != base

    # one pixel of one search-set image, with everything else (source hash, indices) equal
    from surrogate_nas.data.splits import make_splits

    val_idx = make_splits(dataset, seed=0).val_idx
    image = val_idx[evaluator.image_set.indices[0]]
    x_train = dataset.x_train.copy()
    x_train[image, 0, 0, 0] ^= 1
    repainted = dataclasses.replace(dataset, x_train=x_train)
    changed = make_evaluator(float_model, card, catalog, repainted)
    assert changed.image_set.description["indices_sha256"] == evaluator.image_set.description["indices_sha256"]
    assert changed.fingerprint != base

    from conftest import CIRCUITS, POWERS

    repriced = load_catalog(write_catalog(tmp_path / "cat", CIRCUITS, {**POWERS, "noisy": 0.36}))
    assert make_evaluator(float_model, card, repriced, dataset).fingerprint != base

    monkeypatch.setattr(evaluate_module, "EMULATION_VERSION", "axconv-next")
    assert make_evaluator(float_model, card, catalog, dataset).fingerprint != base


def test_evaluator_keeps_float32_exact(evaluator):
    """TF32 (on by default on Ampere+ GPUs) would round every conv's operands: an evaluator
    turns it off for the whole process."""
    import tensorflow as tf

    assert not tf.config.experimental.tensor_float_32_execution_enabled()
    assert evaluator.description["emulation"]["device"] in ("CPU", "GPU")  # rows of devices never mix
