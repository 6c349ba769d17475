"""`export`: a design leaves the tool as a Keras model that scores exactly what the
evaluator scored, plus design.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import read_csv


def test_export_round_trips_exactly(cli, tmp_path, project):
    import keras

    import surrogate_nas.axconv  # noqa: F401  (registers AxConv2D with Keras)
    from surrogate_nas.data.datasets import load_cifar10
    from surrogate_nas.data.splits import make_splits

    cache = tmp_path / "cache"
    r = cli("run", "--mode", "full", "--budget", "8", "--pop-size", "4", "--search-images", "20", "--no-test",
            "--compensation", "tune+bias", "--out", tmp_path / "runs", "--run-id", "e", cache=cache)
    assert r.rc == 0, r.err
    front = read_csv(tmp_path / "runs" / "e" / "front.csv")
    out = tmp_path / "x" / "design.keras"
    r = cli("export", tmp_path / "runs" / "e", "--point", "1", "--out", out, cache=cache)
    assert r.rc == 0, r.err
    doc = json.loads((tmp_path / "x" / "design.json").read_text())
    assert ",".join(map(str, doc["genome"])) == front[0]["genome_indices"]
    assert doc["search_set_accuracy"] == pytest.approx(float(front[0]["search_accuracy"]), abs=5e-7)
    assert [layer["compensation"] for layer in doc["layers"]] == front[0]["compensation"].split(";")
    assert sum(layer["macs"] for layer in doc["layers"]) > 0
    # an independent load, scored on the run's search images, gives the same accuracy
    model = keras.models.load_model(out, compile=False)
    config = json.loads((tmp_path / "runs" / "e" / "config.json").read_text())
    from surrogate_nas.evaluation.images import select_images

    data = load_cifar10(project.data, cache_dir=cache)
    images = select_images(make_splits(data, seed=0), data.source_hash, "validation", config["search"]["search_images"])
    pred = np.argmax(model(images.images.astype(np.float32)).numpy(), axis=1)
    assert np.mean(pred == images.labels) == doc["search_set_accuracy"]
    r = cli("export", tmp_path / "runs" / "e", "--point", "99", "--out", out, cache=cache)
    assert r.rc == 2 and "--point: expected 1.." in r.err
