"""`design` end to end on the tiny project: calibration rule, search, raced retraining,
soups and the choice on images nothing else used; resume after an interruption in each
phase; bad flags."""

from __future__ import annotations

import json

import numpy as np
import pytest

TINY = ("--budget", "8", "--search-images", "20", "--epochs", "2", "--train-images", "100", "--seeds", "2",
        "--max-candidates", "3")
TOLERANCES = ("0.5", "1", "2")


def _design(cli, out, cache):
    r = cli("design", *TINY, "--out", out, cache=cache)
    assert r.rc == 0, r.err
    return json.loads((out / "design.json").read_text())


@pytest.fixture(scope="module")
def store():
    return {}


def test_design_end_to_end(cli, tmp_path, store, dataset):
    out = tmp_path / "d"
    doc = _design(cli, out, tmp_path / "cache")
    store["doc"], store["out"] = doc, out
    # choosing and search images: disjoint, together the validation split (30 images in the tiny data)
    search, choosing = doc["images"]["search"], doc["images"]["choosing"]
    assert len(search) == 20 and not set(search) & set(choosing)
    assert sorted(search + choosing) == list(range(30)) and doc["images"]["split_of_choosing"] == "validation"
    # the search scored its search set only: no validation re-scoring that would read the choosing images
    config = json.loads((out / "search" / "config.json").read_text())
    assert config["search"]["evaluate_test"] is False and not (out / "search" / "rescored.csv").exists()
    assert set(doc["chosen"]) == set(TOLERANCES) == set(doc["chosen_upper"])
    assert set(doc["cost"]) >= {"wall_s", "float_pass_s", "retrain_epoch_s", "float_train_epoch_s", "phases"}
    assert (out / "design.md").is_file() and (out / "design.png").is_file()
    assert (out / "search" / "report.html").is_file()
    # every candidate either retrained (a soup of its finished seeds) or was dropped with a reason
    for key, race in doc["race"].items():
        assert race["seeds"] or race["dropped"], key
    assert doc["soups"], "no candidate was retrained"


def test_chosen_designs_reproduce_with_plain_keras(store, dataset):
    """Each chosen design's .keras file, loaded with Keras alone, gives its recorded
    choosing and test accuracies, and its losses are the paired counts against all-exact."""
    import keras

    import surrogate_nas  # noqa: F401  (registers AxConv2D)
    from surrogate_nas.data.splits import make_splits

    doc, out = store["doc"], store["out"]
    splits = make_splits(dataset, seed=0)
    choosing = np.asarray(doc["images"]["choosing"])
    for rule in ("chosen", "chosen_upper"):
        for key, c in doc[rule].items():
            if c is None:
                continue
            model = keras.models.load_model(out / c["design"], compile=False)
            pred_test = np.argmax(model.predict(splits.x_test.astype(np.float32), verbose=0), axis=1)
            pred_choose = np.argmax(model.predict(splits.x_val[choosing].astype(np.float32), verbose=0), axis=1)
            assert np.mean(pred_test == splits.y_test) == pytest.approx(c["test_accuracy"], abs=1e-12)
            assert np.mean(pred_choose == splits.y_val[choosing]) == pytest.approx(c["choosing_accuracy"], abs=1e-12)
            ref = doc["reference"]
            assert c["choosing_loss_pp"] == pytest.approx(100 * (ref["choosing_accuracy"] - c["choosing_accuracy"]))
            assert c["test_loss_pp"] == pytest.approx(100 * (ref["test_accuracy"] - c["test_accuracy"]))


def test_choice_rules_by_hand():
    """Both rules against paired counts worked out by hand (1,000 images)."""
    from surrogate_nas.results.design_choice import choose

    n = 1000
    exact = np.zeros(n, bool)
    exact[:800] = True

    def point(saving, lost, gained):  # right where all-exact is, minus `lost`, plus `gained` others
        right = exact.copy()
        right[:lost] = False
        right[800:800 + gained] = True
        return {"genome": (int(saving),), "saving_pct": saving, "retrained": False, "right": right}

    # loss (b - c) / n: 0.4 pp, 0.9 pp, 1.9 pp, 3 pp; half-width 1.96 sqrt(b + c - (b-c)^2/n) / n
    points = [point(10, 4, 0), point(40, 12, 3), point(60, 21, 2), point(70, 30, 0)]
    chosen = choose(points, exact)
    assert [chosen["chosen"][k]["saving_pct"] for k in ("0.5", "1", "2")] == [10, 40, 60]
    half = {p["saving_pct"]: 1.96 * np.sqrt((b + c) - (b - c) ** 2 / n) / n * 100
            for p, (b, c) in zip(points, [(4, 0), (12, 3), (21, 2), (30, 0)])}
    upper = {s: loss + half[s] for s, loss in zip((10, 40, 60, 70), (0.4, 0.9, 1.9, 3.0))}
    for key, t in (("0.5", 0.5), ("1", 1.0), ("2", 2.0)):
        ok = [s for s, u in upper.items() if u <= t]
        got = chosen["chosen_upper"][key]
        assert (got and got["saving_pct"]) == (max(ok) if ok else None)
    assert chosen["chosen"]["0.5"]["choosing"]["loss_pp"] == pytest.approx(0.4)


def test_clipped_kernels_are_what_the_twin_quantizes(float_model):
    """The calibrated model's folded kernels are the original folded kernels clipped at
    mean +- c std (numpy), layer by layer; an unclipped layer is unchanged."""
    from surrogate_nas.network.layers import approximable_layers
    from surrogate_nas.network.range_rule import clipped_float_model
    from surrogate_nas.network.twin import folded_weights

    clips = [0.0, 3.0, 0.0, 2.0, 4.0]
    before = folded_weights(float_model, approximable_layers(float_model, "conv"))
    model = clipped_float_model(float_model, clips)
    after = folded_weights(model, approximable_layers(model, "conv"))
    for (k0, b0), (k1, b1), c in zip(before, after, clips):
        k = k0.astype(np.float64)
        expected = k0 if not c else np.clip(k0, k.mean() - c * k.std(), k.mean() + c * k.std())
        np.testing.assert_allclose(k1, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(b1, b0)


def test_rule_picks_its_lowest_score(float_model, catalog, dataset):
    from surrogate_nas.data.splits import make_splits
    from surrogate_nas.evaluation.images import calibration_set
    from surrogate_nas.network.range_rule import choose_calibration, clipped_float_model
    from surrogate_nas.network.twin import build_approx_model

    guard = calibration_set(make_splits(dataset, seed=0), dataset.source_hash, 0)
    images, labels = guard.images[:32], guard.labels[:32]
    options = dict(percentiles=(100.0, 99.0), clips=(0.0, 3.0), panel=2, guard_labels=labels)
    rule = choose_calibration(float_model, images, catalog, guard_pct=100.0, **options)
    for layer, scores in zip(rule["layers"], rule["scores"]):
        assert len(scores) == 4
        key = f"p{layer['input_percentile']:g}-clip{layer['kernel_clip_std']:g}"
        assert scores[key] == min(scores.values())  # every candidate admissible
    # the guard's reference: the error-free 8-bit network at each conv input's min..max on the same images
    import keras

    convs = [layer for layer in float_model.layers if isinstance(layer, keras.layers.Conv2D)]
    inputs = [np.asarray(keras.Model(float_model.inputs, layer.input)(images)) for layer in convs]
    twin = build_approx_model(float_model, [(float(x.min()), float(x.max())) for x in inputs])
    expected = np.argmax(np.asarray(twin(images, training=False)), axis=1)
    assert rule["widest_accuracy_pct"] == pytest.approx(100 * np.mean(expected == labels.reshape(-1)))
    # a guard of 0 admits only what keeps every prediction of that network, counted from the first layer on
    strict = choose_calibration(float_model, images, catalog, guard_pct=0.0, **options)
    for layer, changed in zip(strict["layers"], strict["changed_predictions_pct"]):
        assert changed[f"p{layer['input_percentile']:g}-clip{layer['kernel_clip_std']:g}"] == 0.0
        assert changed["p100-clip0"] == 0.0
    # what it chose reproduces: the chosen ranges and clips in a fresh twin predict as the widest one does
    model = clipped_float_model(float_model, [layer["kernel_clip_std"] for layer in strict["layers"]])
    chosen = build_approx_model(model, [tuple(layer["input_range"]) for layer in strict["layers"]])
    np.testing.assert_array_equal(np.argmax(np.asarray(chosen(images, training=False)), axis=1), expected)


def test_resume_after_an_interruption_in_each_phase(cli, tmp_path, store, monkeypatch):
    """Interrupted (Ctrl-C) once in each phase, rerun each time: the same design.json as the
    uninterrupted run, and the retraining restarts at its last finished epoch."""
    import surrogate_nas.network.calibrate as calibrate
    import surrogate_nas.results.design_choice as design_choice
    import surrogate_nas.workflows.design_retrain as design_retrain
    import surrogate_nas.workflows.finetune as finetune
    import surrogate_nas.workflows.run as run

    def once(module, name, after: int = 0):
        real, calls = getattr(module, name), {"n": 0}

        def wrapped(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > after:
                monkeypatch.setattr(module, name, real)
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapped)

    out = tmp_path / "d"
    trains = []
    real_train = design_retrain.Retrainer.train
    monkeypatch.setattr(design_retrain.Retrainer, "train",
                        lambda self, c, s, until: trains.append((c.key, s, max(0, len(self.history(c, s)) - 1), until))
                        or real_train(self, c, s, until))
    for module, name, after in ((calibrate, "calibrate_model", 0), (run, "write_outputs", 0),
                                (design_retrain.Retrainer, "train", 1), (finetune, "save_design", 1),
                                (design_choice, "write_table", 0)):
        once(module, name, after)
        r = cli("design", *TINY, "--out", out, cache=tmp_path / "cache")
        assert r.rc == 130, (name, r.err)
    doc = _design(cli, out, tmp_path / "cache")
    reference = store["doc"]
    for rule in ("chosen", "chosen_upper"):
        assert doc[rule] == reference[rule]
    assert doc["race"] == reference["race"] and doc["soups"] == reference["soups"]
    # no epoch trained twice: each call starts where the checkpoint ended
    starts = {}
    for key, seed, done, until in trains:
        assert done >= starts.get((key, seed), 0)
        starts[(key, seed)] = until


@pytest.mark.parametrize("flags, message", [
    (("--budget", "2"), "--budget: must be at least 4"),
    (("--retrain-hours", "-1"), "--retrain-hours: must be >= 0"),
    (("--retrain-epochs", "-1"), "--retrain-epochs: must be between 0 and 10000"),
    (("--seeds", "0"), "--seeds: must be between 1 and 10"),
    (("--from", "no-such-run"), "--from no-such-run: no such run folder"),
    (("--train-images", "-5"), "--train-images: must be >= 0"),
    (("--max-distinct", "0"), "--max-distinct: must be between 1 and the number of approximable layers"),
    (("--search-images", "30"), "the search used every validation image"),
    (("--recipe", "kd-nothing"), "--recipe kd-nothing: no such recipe"),
])
def test_bad_flags_one_line(cli, tmp_path, flags, message):
    r = cli("design", "--out", tmp_path / "d", *flags, cache=tmp_path / "cache")
    assert r.rc == 2 and len(r.err_lines) == 1 and message in r.err_lines[0], r.err


def test_other_settings_in_the_same_folder_one_line(cli, tmp_path, store):
    r = cli("design", *TINY, "--seed", "5", "--out", store["out"], cache=tmp_path / "cache")
    assert r.rc == 2 and len(r.err_lines) == 1 and "holds a design made with other settings" in r.err_lines[0]


def test_epoch_budget_bounds_the_race(cli, tmp_path, store, monkeypatch):
    """--retrain-epochs counts every epoch of every candidate and seed: the race stops there."""
    monkeypatch.chdir(store["out"].parent)  # the project root the first design's records are relative to
    out = tmp_path / "b"
    r = cli("design", *TINY, "--retrain-epochs", "4", "--from", store["out"] / "search", "--out", out,
            cache=tmp_path / "cache")
    assert r.rc == 0, r.err
    state = json.loads((out / "design-state.json").read_text())
    trained = sum(len(json.loads(h.read_text())["history"]) - 1 for h in out.glob("retraining/*.work/history.json"))
    assert trained == state["phases"]["retraining"]["epochs_used"] <= 4
    assert trained >= min(4, len(state["phases"]["candidates"]))  # every candidate's first epoch fits first


def test_max_distinct_one(cli, tmp_path):
    """With --max-distinct 1 every candidate and every chosen design uses one circuit."""
    out = tmp_path / "d"
    r = cli("design", *TINY, "--max-distinct", "1", "--retrain-epochs", "0", "--out", out, cache=tmp_path / "cache")
    assert r.rc == 0, r.err
    doc = json.loads((out / "design.json").read_text())
    assert json.loads((out / "search" / "config.json").read_text())["search"]["max_distinct"] == 1
    assert all(len(set(c["genome"])) == 1 for c in doc["candidates"])
    chosen = [c for rule in ("chosen", "chosen_upper") for c in doc[rule].values() if c is not None]
    assert chosen and all(len(set(c["genome"])) == 1 for c in chosen)


def test_candidates_rule_by_hand():
    """The most accurate front point in each 5 % band from each target, the quiet design of
    each target, duplicates once, and a limit that keeps front points first, spread over the
    savings."""
    from surrogate_nas.workflows.design_retrain import choose_candidates

    front = [{"genome": (1,), "accuracy": 0.80, "energy": 0.58},   # 42 %
             {"genome": (2,), "accuracy": 0.82, "energy": 0.57},   # 43 %: the better one of 40-45
             {"genome": (3,), "accuracy": 0.70, "energy": 0.38},   # 62 %
             {"genome": (4,), "accuracy": 0.90, "energy": 0.90}]   # 10 %: no target
    quiet = [(3,), (5,)]
    energy = {(5,): 0.25, (3,): 0.38}.get
    got = choose_candidates(front, quiet, energy, targets=(40, 60, 75))
    assert [(c.genome, c.source, round(c.saving_pct)) for c in got] == [((5,), "quiet", 75), ((3,), "front", 62),
                                                                         ((2,), "front", 43)]
    assert [c.key for c in got] == ["c1", "c2", "c3"]
    # a limit keeps the front points (measured accuracy) first; quiet designs fill what is left
    assert [c.genome for c in choose_candidates(front, quiet, energy, targets=(40, 60, 75), limit=2)] == [(3,), (2,)]
    assert [c.genome for c in choose_candidates(front, quiet, energy, targets=(40, 60, 75), limit=1)] == [(3,)]
    # more front points than the limit: spread evenly over the savings (highest, lowest, middle)
    many = [{"genome": (10 + k,), "accuracy": 0.8, "energy": 1 - s / 100} for k, s in enumerate((41, 46, 51, 56, 61))]
    spread = choose_candidates(many, quiet, energy, targets=(40, 45, 50, 55, 60), limit=3)
    assert [round(c.saving_pct) for c in spread] == [61, 51, 41] and all(c.source == "front" for c in spread)


def test_tolerances_get_their_candidates_tightest_first():
    """Each tolerance, tightest first, gets the highest-saving survivor whose loss after epoch 1
    is within the tolerance plus the recovery, and that saves more than those already taken;
    the rest follow, highest saving first."""
    from surrogate_nas.workflows.design_retrain import Candidate, serve_tolerances

    cands = {k: Candidate(k, (i,), s, "front") for i, (k, s) in enumerate([("a", 70.0), ("b", 65.0), ("c", 60.0),
                                                                           ("d", 55.0), ("e", 45.0)])}
    loss = {"a": 3.4, "b": 3.6, "c": 1.9, "d": 1.2, "e": 0.1}
    got = serve_tolerances(list(cands.values()), loss, tolerances=(0.5, 1.0, 2.0), recovery_pp=1.5)
    # 0.5 pp: c and d and e fit (<= 2.0), c saves most; 1 pp (<= 2.5): nothing above c's 60 %;
    # 2 pp (<= 3.5): a (b's 3.6 does not fit)
    assert [(c.key, t) for c, t in got] == [("c", 0.5), ("a", 2.0), ("b", None), ("d", None), ("e", None)]
    # with no recovery only e is within 0.5; c (1.9) is the highest saving within 2
    got = serve_tolerances(list(cands.values()), loss, tolerances=(0.5, 1.0, 2.0), recovery_pp=0.0)
    assert [(c.key, t) for c, t in got] == [("e", 0.5), ("c", 2.0), ("a", None), ("b", None), ("d", None)]
