"""`soup`: the greedy weight average of retrainings of one design (Wortsman et al. 2022),
checked against numpy means of the weights and plain-Keras accuracies."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_evaluator

GENOME = (3, 1, 0, 1, 2)  # noisy, exact, trunc, exact, lowbits


def test_greedy_soup_leaves_out_a_ruined_retraining_and_holds_the_mean_of_the_rest(float_model, card, catalog,
                                                                                     dataset):
    """Three 'retrainings': the design's weights plus and minus the same small noise, and
    with noise ten times the weights' spread (a ruined network), scored by minus the distance
    of the weights the evaluator's network holds to the design's (the tiny net's accuracy and
    cross-entropy are too coarse and machine-dependent to rank such perturbations: on an
    AVX-512 machine the cross-entropy ranked the average of two mild copies below one of
    them). The ruined one ranks last and an average with it is ruined too, so it is left out;
    the network left behind holds the numpy mean of the two others."""
    from surrogate_nas.data.splits import make_splits
    from surrogate_nas.evaluation.images import calibration_set
    from surrogate_nas.workflows.soup import greedy_soup

    ev = make_evaluator(float_model, card, catalog, dataset, n_images=20)
    ev.set_genome(GENOME)
    start = [np.asarray(v.numpy()) for v in ev.model.trainable_variables]
    rng = np.random.default_rng(0)
    noise = [0.02 * w.std() * rng.standard_normal(w.shape).astype(w.dtype) for w in start]
    small = [[w + n for w, n in zip(start, noise)], [w - n * 0.5 for w, n in zip(start, noise)]]
    ruined = [w + 10 * w.std() * rng.standard_normal(w.shape).astype(w.dtype) for w in start]
    calibration = calibration_set(make_splits(dataset, seed=0), dataset.source_hash, int(card.get("seed", 0)))
    def score():
        return -float(sum(np.sum((np.asarray(v.numpy(), np.float64) - w) ** 2)
                          for v, w in zip(ev.model.trainable_variables, start)))

    soup = greedy_soup(ev, GENOME, [small[0], ruined, small[1]], calibration, score=score)

    assert soup["order"][-1] == 1 and soup["added"] == [0, 2], soup
    assert soup["trace"][0] == max(soup["own_accuracy"])
    for v, a, b in zip(ev.model.trainable_variables, *small):
        np.testing.assert_allclose(v.numpy(), (a.astype(np.float64) + b) / 2, rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def soup(project, tmp_path_factory):
    """A tiny run, its cheapest design retrained twice (seeds 0 and 1), and their soup."""
    from conftest import isolated_cwd

    from surrogate_nas import cli

    base = tmp_path_factory.mktemp("soup")
    with isolated_cwd(base):
        flags = project.flags(cache=base / "cache")
        assert cli.main(["run", "--mode", "full", "--budget", "10", "--pop-size", "4", "--search-images", "20",
                         "--test-images", "20", "--compensation", "bias", "--rescore", "all", "--out", "runs",
                         "--run-id", "r"] + flags) == 0
        for seed in (0, 1):
            assert cli.main(["finetune", "runs/r", "--points", "100", "--recipe", "kd-adam1e-3-cos", "--epochs", "1",
                             "--train-images", "64", "--test-images", "20", "--seed", str(seed),
                             "--out", f"ft{seed}"] + flags) == 0
        rc = cli.main(["soup", "ft0/design-1.keras", "ft1/design-1.keras", "--out", "soup"] + flags)
    return rc, base


def test_soup_card_and_network(soup, project):
    """The saved soup reproduces its card's test accuracy with plain Keras, holds the mean of
    the added retrainings' weights when validation kept it, and its card names its
    ingredients relative to the project root."""
    import keras

    import surrogate_nas.emulation.layers  # noqa: F401
    from surrogate_nas.data.datasets import load_cifar10
    from surrogate_nas.data.splits import make_splits
    from surrogate_nas.evaluation.images import select_images

    rc, base = soup
    assert rc == 0
    card = json.loads((base / "soup" / "soup.json").read_text())
    assert [i["path"] for i in card["ingredients"]] == ["ft0/design-1.keras", "ft1/design-1.keras"]
    assert card["ingredients"][card["tuning_order"][0] - 1]["added"]
    assert card["validation_after"] == max(card["validation_before"], card["soup_validation"])
    assert card["kept"] == ("retrained" if card["soup_validation"] > card["validation_before"] else "untuned")
    model = keras.models.load_model(base / "soup" / "soup.keras", compile=False)
    dataset = load_cifar10(project.data, cache_dir=project.cache)
    test = select_images(make_splits(dataset, seed=0), dataset.source_hash, "test", 20)
    logits = model(test.images.astype(np.float32), training=False).numpy()
    assert np.mean(np.argmax(logits, axis=1) == test.labels) == pytest.approx(card["test_after"], abs=1e-12)

    if card["kept"] == "retrained":  # else validation_after == validation_before, checked above
        added = [keras.models.load_model(base / i["path"], compile=False).trainable_variables
                 for i in card["ingredients"] if i["added"]]
        for k, v in enumerate(model.trainable_variables):
            expected = np.mean([np.asarray(a[k], np.float64) for a in added], axis=0)
            np.testing.assert_allclose(np.asarray(v), expected, rtol=1e-6, atol=1e-7)


def test_soup_of_other_designs_or_of_one_is_one_line(soup, cli, tmp_path):
    import shutil

    _, base = soup
    other = tmp_path / "other"
    shutil.copytree(base / "ft1", other)
    doc = json.loads((other / "design-1.json").read_text())
    doc["genome_indices"] = ",".join("0" for _ in doc["genome_indices"].split(","))
    (other / "design-1.json").write_text(json.dumps(doc))
    for argv, needle in ([(base / "ft0" / "design-1.keras", other / "design-1.keras"), "genome_indices"],
                         [(base / "ft0" / "design-1.keras",), "at least two"],
                         [(base / "ft0" / "design-1.keras", tmp_path / "missing.keras"), "missing.keras"],
                         [(base / "ft0" / "design-1.keras", base / "ft1" / "design-1.keras", "--model",
                           tmp_path / "another.keras"), "--model"]):
        r = cli("soup", *argv, "--out", tmp_path / "s")
        assert r.rc == 2 and len(r.err_lines) == 1 and needle in r.err, r.err
