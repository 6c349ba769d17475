"""The auto rule is paid for once: `evaluate` of one genome measures only the entries that
genome needs, and a rule shipped beside a model is used instead of measuring it again."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import EXACT_INDEX

GENOME = (0, EXACT_INDEX, EXACT_INDEX, 2, EXACT_INDEX)  # trunc in conv1, lowbits in conv4


def _evaluate(cli, cache):
    r = cli("evaluate", "--genome", ",".join(map(str, GENOME)), "--images", "30", "--json", cache=cache)
    assert r.rc == 0, r.err
    return json.loads(r.out)


def _build(project, cache, model=None, rule_for=None):
    from surrogate_nas.data.datasets import load_cifar10
    from surrogate_nas.evaluation.evaluator import Evaluator
    from surrogate_nas.multipliers.catalog import load_catalog

    data = load_cifar10(project.data, cache_dir=cache, progress=False)
    return Evaluator.from_paths(model or project.model, load_catalog(project.catalog), data, "validation", 30,
                                compensation="auto", rule_store=cache, quiet=True, rule_for=rule_for)


def test_evaluate_measures_only_the_genomes_rule_entries(project, cli, tmp_path):
    cache = tmp_path / "cache"
    lazy = _evaluate(cli, cache)
    assert not list(cache.glob("compensation-rule-*[0-9a-f].json"))  # no whole rule was made
    (partial,) = cache.glob("compensation-rule-*.partial.json")
    assert set(json.loads(partial.read_text())["losses"]) == {"0,0", "3,2"}  # (layer, circuit) of the genome
    whole = _build(project, cache)  # the whole rule, reusing the two measured entries
    assert whole.designs.labels(GENOME) == lazy["layer_compensation"]
    again = _evaluate(cli, cache)  # now from the stored whole rule
    assert again["accuracy"] == lazy["accuracy"] and again["layer_compensation"] == lazy["layer_compensation"]
    assert again["fingerprint"] == whole.fingerprint != lazy["fingerprint"]  # a partial rule is fingerprinted apart


def test_a_rule_shipped_beside_the_model_is_used(project, tmp_path):
    measured = tmp_path / "measured"
    reference = _build(project, measured)
    (rule_file,) = measured.glob("compensation-rule-*[0-9a-f].json")
    models = tmp_path / "models"
    models.mkdir()
    for path in (project.model, project.model.with_suffix(".json")):
        shutil.copy(path, models / path.name)
    model = models / project.model.name
    shutil.copy(rule_file, models / f"{model.stem}.{rule_file.name}")
    fresh = tmp_path / "fresh"
    shipped = _build(project, fresh, model=model)
    assert shipped.designs.rule == reference.designs.rule and shipped.fingerprint == reference.fingerprint
    assert not list(fresh.glob("compensation-rule-*"))  # nothing measured, nothing stored


def test_the_auto_rule_takes_each_designs_lowest_loss_method(project, tmp_path):
    """Each entry of a stored rule is the candidate with the lowest cross-entropy on the rule
    images, and those losses are what a fixed-method network gives there, recomputed here
    with numpy from its logits (conv1 with circuit `trunc`)."""
    from surrogate_nas.data.datasets import load_cifar10
    from surrogate_nas.data.splits import make_splits
    from surrogate_nas.evaluation.designs import RULE_IMAGES
    from surrogate_nas.evaluation.evaluator import Evaluator
    from surrogate_nas.evaluation.images import calibration_set
    from surrogate_nas.multipliers.catalog import load_catalog
    from surrogate_nas.multipliers.compensation import AUTO_CANDIDATES

    _build(project, tmp_path)
    (rule_file,) = tmp_path.glob("compensation-rule-*[0-9a-f].json")
    saved = json.loads(rule_file.read_text())
    for key, losses in saved["losses"].items():
        layer, circuit = map(int, key.split(","))
        assert saved["rule"][layer][circuit] == min(losses, key=losses.get)
    data = load_cifar10(project.data, cache_dir=tmp_path, progress=False)
    calibration = calibration_set(make_splits(data, seed=0), data.source_hash, 0)
    x, y = calibration.images[:RULE_IMAGES], calibration.labels[:RULE_IMAGES]
    genome = (0,) + (EXACT_INDEX,) * 4
    for method in AUTO_CANDIDATES:
        ev = Evaluator.from_paths(project.model, load_catalog(project.catalog), data, "validation", 30,
                                  compensation=method, rule_store=tmp_path, quiet=True)
        ev.set_genome(genome)
        logits = ev.logits(x).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        by_hand = -np.mean(logits[np.arange(len(y)), y] - np.log(np.exp(logits).sum(axis=1)))
        assert saved["losses"]["0,0"][method] == pytest.approx(by_hand, rel=1e-5, abs=1e-6), method
