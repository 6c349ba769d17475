"""surrogate_nas.workflows.retrain on the tiny project: the distillation loss, the schedule, the
teacher-logit cache, resume after a kill, band candidates and keep-the-better."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_evaluator

from surrogate_nas.workflows import retrain as rt


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("alpha,temperature,smoothing", [(0.9, 4.0, 0.0), (0.5, 2.0, 0.1), (0.0, 4.0, 0.1)])
def test_distillation_loss_matches_numpy(alpha, temperature, smoothing):
    rng = np.random.default_rng(0)
    s, t = rng.normal(0, 3, (16, 10)), rng.normal(0, 3, (16, 10))
    y = np.eye(10)[rng.integers(0, 10, 16)]
    ys = y * (1 - smoothing) + smoothing / 10
    ce = -np.sum(ys * np.log(_softmax(s)), axis=1)
    pt, ps = _softmax(t / temperature), _softmax(s / temperature)
    kl = np.sum(pt * (np.log(pt) - np.log(ps)), axis=1)
    expected = np.mean(alpha * temperature**2 * kl + (1 - alpha) * ce)
    loss = rt.DistillationLoss(10, alpha, temperature, smoothing)
    got = float(loss(y.astype(np.float32), np.concatenate([s, t], axis=1).astype(np.float32)))
    assert got == pytest.approx(expected, rel=1e-5)


def test_warmup_cosine_closed_form():
    peak, total, warm = 0.1, 100, 10
    sched = rt.WarmupCosine(peak, total, warm)
    for step in (0, 4, 9):
        assert float(sched(step)) == pytest.approx(peak * (step + 1) / warm, rel=1e-6)
    for step in (10, 37, 55, 99, 100, 150):
        p = min(1.0, (step - warm) / (total - warm))
        assert float(sched(step)) == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * p)), rel=1e-5, abs=1e-9)
    assert float(sched(total)) == pytest.approx(0.0, abs=1e-9)
    assert rt.WarmupCosine.from_config(sched.get_config()).get_config() == sched.get_config()
    no_warm = rt.WarmupCosine(peak, total, 0, min_lr=0.01)
    assert float(no_warm(0)) == pytest.approx(peak)
    assert float(no_warm(total)) == pytest.approx(0.01)


def test_weight_average_matches_numpy_and_swaps_back():
    """The average after each step against a numpy EMA of the weights recorded after each
    step, with TF's num_updates warm-up of the decay."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    start = [np.array(v) for v in model.trainable_variables]
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append([np.array(v) for v in model.trainable_variables])

    average = rt.WeightAverage(model.trainable_variables, 0.9)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype(np.float32), rng.normal(size=(64, 3)).astype(np.float32)
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[Record(), average])
    expected = start
    for t, weights in enumerate(seen):
        d = min(0.9, (1 + t) / (10 + t))
        expected = [d * a + (1 - d) * w for a, w in zip(expected, weights)]
    assert len(seen) == 32 and int(average.updates.numpy()) == 32
    for a, e in zip(average.averages, expected):
        np.testing.assert_allclose(np.array(a), e, rtol=1e-5, atol=1e-6)
    with average.swapped_in():
        for v, e in zip(model.trainable_variables, expected):
            np.testing.assert_allclose(np.array(v), e, rtol=1e-5, atol=1e-6)
    for v, w in zip(model.trainable_variables, seen[-1]):
        np.testing.assert_array_equal(np.array(v), w)


@pytest.fixture(scope="module")
def splits(dataset):
    from surrogate_nas.data.splits import make_splits

    return make_splits(dataset, seed=0)


def _evaluator(float_model, card, catalog, dataset):
    return make_evaluator(float_model, card, catalog, dataset, n_images=20)


GENOME = (3, 1, 0, 1, 2)  # noisy, exact, trunc, exact, lowbits


def test_teacher_cache_reused_and_invalidated(float_model, card, catalog, dataset, splits, tmp_path, monkeypatch):
    ev = _evaluator(float_model, card, catalog, dataset)
    ev.set_genome(GENOME)
    calls = []
    compute = rt._all_exact_logits
    monkeypatch.setattr(rt, "_all_exact_logits", lambda *a, **k: calls.append(1) or compute(*a, **k))
    x = splits.x_train[:64]
    first = rt.teacher_logits(ev, x, tmp_path)
    assert len(calls) == 1 and len(list(tmp_path.glob("teacher-*.npy"))) == 1
    # the all-exact twin's logits, and the design is back in place afterwards
    exact = make_evaluator(float_model, card, catalog, dataset, n_images=20)
    exact.set_genome(rt._exact_genome(exact))
    np.testing.assert_array_equal(first, np.asarray(exact._predict(x.astype(np.float32))))
    assert ev._current == list(GENOME)
    second = rt.teacher_logits(ev, x, tmp_path)
    assert len(calls) == 1
    np.testing.assert_array_equal(first, second)
    kernel = ev.layers[0].kernel
    kernel.assign(kernel.numpy() * 1.01)  # other weights: another teacher
    rt.teacher_logits(ev, x, tmp_path)
    assert len(calls) == 2 and len(list(tmp_path.glob("teacher-*.npy"))) == 2


def _online_pair(recipe, float_model, card, catalog, dataset, splits):
    """The design's training model with an online teacher, run on 16 training images, and an
    all-exact evaluator of its own as the reference; checks the design's columns on the way."""
    ev = _evaluator(float_model, card, catalog, dataset)
    ev.set_genome(GENOME)
    layers = ev.layers if recipe.feature_weight else ()
    train_model = rt._training_model(ev.model, recipe, rt.online_teacher(ev), layers)
    x = splits.x_train[:16].astype(np.float32)
    out = np.asarray(train_model(x, training=False))
    c = int(ev.model.output_shape[-1])
    # float32 rounding only: the graphs sum in other orders
    np.testing.assert_allclose(out[:, :c], np.asarray(ev._predict(x)), rtol=1e-5, atol=1e-4)
    exact = _evaluator(float_model, card, catalog, dataset)
    exact.set_genome(rt._exact_genome(exact))
    return ev, exact, train_model, x, out, c


def test_online_teacher_model_pairs_the_design_with_the_all_exact_twin(float_model, card, catalog, dataset, splits):
    """Distillation on augmented batches: the training model's first columns are the design's
    logits, the last ones the all-exact twin's (an evaluator of its own is the reference)."""
    recipe = rt.Recipe("kd-aug", "adam", 1e-3, epochs=1, augment=True, batch_size=32)
    ev, exact, train_model, x, out, c = _online_pair(recipe, float_model, card, catalog, dataset, splits)
    np.testing.assert_allclose(out[:, c:], np.asarray(exact._predict(x)), rtol=1e-5, atol=1e-4)
    assert not np.allclose(out[:, :c], out[:, c:], atol=1e-3)  # the design is not all-exact


def test_feature_match_loss_is_the_mean_relative_error_power_of_the_layers(float_model, card, catalog, dataset,
                                                                            splits):
    """Layer-wise distillation: the loss the training model adds is the weight times the mean,
    over the approximate layers, of |s - t|^2 / var(t), with s, t the layer's outputs in the
    design and in an all-exact evaluator of its own (the reference)."""
    import keras

    recipe = rt.Recipe("kd-feat", "adam", 1e-3, epochs=1, feature_weight=2.5, batch_size=32)
    ev, exact, train_model, x, _, _ = _online_pair(recipe, float_model, card, catalog, dataset, splits)

    def outputs(e):
        return [np.asarray(keras.Model(e.model.inputs, layer.output)(x), np.float64) for layer in e.layers]

    terms = [np.mean((s - t) ** 2) / np.var(t) for s, t in zip(outputs(ev), outputs(exact))]
    assert len(terms) == len(GENOME) and max(terms) > 1e-4  # the design is not all-exact
    assert len(train_model.losses) == 1
    assert float(train_model.losses[0]) == pytest.approx(2.5 * np.mean(terms), rel=1e-3)


class Kill(Exception):
    pass


class KillAtEpoch:
    """A Keras callback that raises when epoch `k` (0-based) begins."""

    def __new__(cls, k):
        import keras

        class _Kill(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == k:
                    raise Kill(f"killed at epoch {epoch}")

        return _Kill()


def _strip(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


@pytest.mark.slow  # trains the tiny model several epochs (minutes); run in benchmarks, not CI
@pytest.mark.parametrize("recipe", [
    rt.Recipe("kd", "adam", 3e-3, epochs=2, warmup_epochs=0.5, batch_size=32),
    rt.Recipe("ce-aug", "sgd", 1e-2, epochs=2, alpha=0.0, augment=True, batch_size=32),
    rt.Recipe("kd-tg", "adam", 3e-3, epochs=2, warmup_epochs=0.5, batch_size=32, gradient_rank=4),
    rt.Recipe("kd-ema", "adam", 3e-3, epochs=2, warmup_epochs=0.5, batch_size=32, ema=0.99),
    rt.Recipe("kd-feat", "adam", 3e-3, epochs=2, warmup_epochs=0.5, batch_size=32, feature_weight=1.0),
    rt.Recipe("kd-clip", "adam", 3e-3, epochs=2, warmup_epochs=0.5, batch_size=32, weight_clip=2.0),
], ids=["kd-cached", "ce-augmented", "kd-table-gradient", "kd-weight-average", "kd-feature-match", "kd-weight-clip"])
def test_resume_after_kill_equals_uninterrupted(recipe, float_model, card, catalog, dataset, splits, tmp_path):
    whole = rt.retrain(_evaluator(float_model, card, catalog, dataset), GENOME, splits, recipe, tmp_path / "whole",
                       teacher_cache=tmp_path / "cache", verbose=0, quiet=True)
    ev = _evaluator(float_model, card, catalog, dataset)
    with pytest.raises(Kill):
        rt.retrain(ev, GENOME, splits, recipe, tmp_path / "killed", teacher_cache=tmp_path / "cache", verbose=0,
                   quiet=True, callbacks=[KillAtEpoch(1)])
    import json

    assert [h["epoch"] for h in json.loads((tmp_path / "killed" / "history.json").read_text())["history"]] == [0, 1]
    ev2 = _evaluator(float_model, card, catalog, dataset)
    resumed = rt.retrain(ev2, GENOME, splits, recipe, tmp_path / "killed", teacher_cache=tmp_path / "cache", verbose=0,
                         quiet=True)
    assert [h["epoch"] for h in whole.history] == [0, 1, 2]
    assert _strip(resumed.history) == _strip(whole.history)
    assert resumed.best_epoch == whole.best_epoch


def test_weight_clip_keeps_every_step_within_the_starting_range(float_model, card, catalog, dataset, splits, tmp_path):
    """With weight_clip = c every approximate kernel stays, after every training step, within
    its starting mean +- c standard deviations (numpy on the starting kernel is the reference);
    epoch 0 is the design as searched (unclipped), and no constraint outlives the retraining."""
    import keras

    ev = _evaluator(float_model, card, catalog, dataset)
    ev.set_genome(GENOME)
    before = ev.accuracy(GENOME)
    start = [np.asarray(layer.kernel.numpy(), np.float64) for layer in ev.layers]
    bounds = [(k.mean() - 1.5 * k.std(), k.mean() + 1.5 * k.std()) for k in start]
    assert all((k < lo).any() and (k > hi).any() for k, (lo, hi) in zip(start, bounds))  # the clip bites
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append([layer.kernel.numpy() for layer in ev.layers])

    recipe = rt.Recipe("kd-clip", "adam", 3e-3, epochs=1, train_images=96, batch_size=32, weight_clip=1.5)
    result = rt.retrain(ev, GENOME, splits, recipe, tmp_path / "w", teacher_cache=tmp_path / "cache", verbose=0,
                        quiet=True, callbacks=[Record()])
    assert result.history[0]["tune_accuracy"] == before
    assert len(seen) == 3
    for kernels in seen:
        for k, (lo, hi) in zip(kernels, bounds):
            assert k.min() >= lo - 1e-6 and k.max() <= hi + 1e-6
            assert np.isclose(k.min(), lo, atol=1e-6) or np.isclose(k.max(), hi, atol=1e-6)
    assert all(layer.kernel.constraint is None for layer in ev.layers)


def test_band_candidates_on_a_hand_made_front():
    from surrogate_nas.results.summary import band_candidates

    front = [
        {"energy": 0.64, "validation_accuracy": 0.80},  # 36 % saving
        {"energy": 0.62, "validation_accuracy": 0.81},  # 38 %: best of band 35-40
        {"energy": 0.58, "validation_accuracy": 0.79},  # 42 %
        {"energy": 0.56, "validation_accuracy": 0.79},  # 44 %: same accuracy, cheaper: kept
        {"energy": 0.45, "validation_accuracy": 0.70},  # 55 %: band 55-60 (lower edge inside)
        {"energy": 0.20, "validation_accuracy": 0.30},  # 80 %: outside 35-70
        {"energy": 0.70, "validation_accuracy": 0.83},  # 30 %: outside
    ]
    got = band_candidates(front)
    assert [(c["band"], c["energy"]) for c in got] == [((35, 40), 0.62), ((40, 45), 0.56), ((55, 60), 0.45)]
    assert band_candidates(front, lo=40, hi=50, width=10)[0]["energy"] == 0.56
    assert band_candidates([], 35, 70) == []


@pytest.mark.slow  # trains the tiny model several epochs (minutes); run in benchmarks, not CI
@pytest.mark.parametrize("recipe", [
    rt.Recipe("wreck", "sgd", 5.0, epochs=1, schedule="constant", warmup_epochs=0, alpha=0.0, batch_size=32),
    rt.Recipe("mild", "adam", 1e-3, epochs=2, batch_size=32),
], ids=["destructive", "mild"])
def test_keep_better_never_worse_than_untuned_on_choosing_images(recipe, float_model, card, catalog, dataset, splits,
                                                                  tmp_path):
    from surrogate_nas.evaluation.images import select_images

    choosing = select_images(splits, dataset.source_hash, "validation", None)
    ev = _evaluator(float_model, card, catalog, dataset)
    ev.set_genome(GENOME)
    untuned = rt.image_accuracy(ev, choosing)
    result = rt.retrain(ev, GENOME, splits, recipe, tmp_path / "w", teacher_cache=tmp_path / "cache", choosing=choosing,
                        verbose=0, quiet=True)
    final = rt.image_accuracy(ev, choosing)
    assert result.choosing_before == pytest.approx(untuned)
    assert final >= untuned
    assert final == pytest.approx(result.choosing_after if result.kept == "retrained" else result.choosing_before)
    if result.kept == "untuned":
        fresh = _evaluator(float_model, card, catalog, dataset)
        fresh.set_genome(GENOME)
        for a, b in zip(ev.model.get_weights(), fresh.model.get_weights()):
            np.testing.assert_array_equal(a, b)
    if recipe.name == "wreck":
        assert result.kept == "untuned"
