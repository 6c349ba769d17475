"""Accuracy surrogate, genome features, seeding and screening, and a surrogate-mode run
through the CLI (real model, sklearn, pymoo and SQLite cache)."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from conftest import EXACT_INDEX, POWERS, isolated_cwd, read_csv
from sklearn.base import clone

from surrogate_nas.results.tables import SURROGATE_COLUMNS
from surrogate_nas.search.seeding import seed_genomes
from surrogate_nas.search.surrogate import AccuracySurrogate, feature_names, select_kind
from surrogate_nas.search.surrogate_nsga2 import front_shortfall, pick_for_truth
from surrogate_nas.workflows.context import build_features

EXACT = (EXACT_INDEX,) * 5
SMALL = dict(n_estimators=15, n_members=3)

REF = (0.30, 1.0)  # HV reference point of these unit tests (accuracy floor 0.70)


def toy_data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    y = 0.5 + 0.2 * np.tanh(X[:, 0]) - 0.1 * X[:, 1] ** 2 + 0.01 * rng.normal(size=n)
    return X, y


# --------------------------------------------------------------------------- AccuracySurrogate


def test_surrogate_sklearn_params_and_clone():
    est = AccuracySurrogate(kind="hgb", n_estimators=15, learning_rate=0.1, max_depth=2, n_members=3, random_state=7)
    params = est.get_params()
    assert params == {"kind": "hgb", "n_estimators": 15, "learning_rate": 0.1, "max_depth": 2, "n_members": 3,
                      "random_state": 7}
    copy = clone(est)
    assert copy is not est and copy.get_params() == params and not hasattr(copy, "members_")
    assert copy.set_params(kind="gbr", n_members=2) is copy
    assert copy.kind == "gbr" and copy.n_members == 2 and est.kind == "hgb"
    with pytest.raises(ValueError):
        est.set_params(no_such_param=1)


@pytest.mark.parametrize("kind", ["gbr", "hgb"])
def test_surrogate_fit_predict_shapes_and_std(kind):
    X, y = toy_data()
    est = AccuracySurrogate(kind=kind, random_state=1, **SMALL)
    assert est.fit(X, y) is est
    assert est.n_features_in_ == 6 and len(est.members_) == 3
    mean = est.predict(X[:7])
    assert mean.shape == (7,)
    mu, sd = est.predict(X[:7], return_std=True)
    assert mu.shape == sd.shape == (7,)
    assert np.array_equal(mu, mean)
    assert np.all(sd >= 0) and np.any(sd > 0)  # bootstrap members disagree somewhere
    residual = ((y - est.predict(X)) ** 2).sum()
    assert est.score(X, y) == pytest.approx(1.0 - residual / ((y - y.mean()) ** 2).sum(), rel=1e-12)  # R^2
    assert est.score(X, y) > 0.5  # 15 small trees already explain most of the toy function


def test_surrogate_deterministic_per_random_state():
    X, y = toy_data()
    a = AccuracySurrogate(random_state=3, **SMALL).fit(X, y).predict(X, return_std=True)
    b = AccuracySurrogate(random_state=3, **SMALL).fit(X, y).predict(X, return_std=True)
    c = AccuracySurrogate(random_state=4, **SMALL).fit(X, y).predict(X, return_std=True)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_surrogate_single_member_has_zero_std():
    X, y = toy_data()
    _, sd = AccuracySurrogate(kind="gbr", n_estimators=10, n_members=1).fit(X, y).predict(X, return_std=True)
    assert np.all(sd == 0)


def test_surrogate_bad_kind():
    X, y = toy_data()
    with pytest.raises(ValueError, match="kind"):
        AccuracySurrogate(kind="svm").fit(X, y)


def test_select_kind():
    """The CV scores recomputed by hand: 5 shuffled folds, one single-member surrogate per fold."""
    from sklearn.model_selection import KFold

    X, y = toy_data(30)
    kind, scores = select_kind(X, y, random_state=0)
    for k in ("gbr", "hgb"):
        r2 = []
        for train, test in KFold(n_splits=5, shuffle=True, random_state=0).split(X):
            pred = AccuracySurrogate(kind=k, n_members=1, random_state=0).fit(X[train], y[train]).predict(X[test])
            r2.append(1.0 - ((y[test] - pred) ** 2).sum() / ((y[test] - y[test].mean()) ** 2).sum())
        assert scores[k] == pytest.approx(np.mean(r2), rel=1e-9)
    assert set(scores) == {"gbr", "hgb"} and kind == max(scores, key=scores.get)
    assert select_kind(X, y, random_state=0) == (kind, scores)


def test_select_kind_few_points():
    """The surrogate run starts from as few as pop_size seed points."""
    X, y = toy_data(4)
    assert select_kind(X, y, random_state=0) == ("gbr", {})  # too few points to score: the default


# --------------------------------------------------------------------------- features


@pytest.fixture(scope="module")
def features(evaluator, catalog):
    ctx = types.SimpleNamespace(evaluator=evaluator, catalog=catalog)
    return build_features(ctx, evaluator.energy_model)


def _noise_reference(evaluator, catalog) -> np.ndarray:
    """(layer, circuit) -> (bias, std, mean |error|) each uncompensated table adds to its
    layer's outputs in units of their spread, recomputed from the definition: the product
    error T[a, w] - a*w under the layer's input and kernel code distributions, times K
    (bias, mean |error|) or sqrt(K) (std), times s_in * s_w / std(outputs)."""
    output_std = evaluator.layer_statistics()["output_std"]
    codes = np.arange(256, dtype=np.float64)
    out = np.zeros((5, len(catalog), 3))
    for l, layer in enumerate(evaluator.layers):
        taps = int(np.prod(layer.kernel.shape[:3]))
        s_in, s_w = layer.scales()
        unit = s_in * s_w / output_std[l]
        p_a = evaluator.designs.channel_hists[l].sum(axis=0).astype(np.float64)
        p_a /= p_a.sum()
        p_w = np.bincount(layer.kernel_codes().ravel(), minlength=256).astype(np.float64)
        p_w /= p_w.sum()
        for m, entry in enumerate(catalog):
            err = entry.lut.astype(np.float64) - codes[:, None] * codes[None, :]
            mean = float(np.einsum("a,aw,w->", p_a, err, p_w))
            var = float(np.einsum("a,aw,w->", p_a, err**2, p_w)) - mean**2
            mae = float(np.einsum("a,aw,w->", p_a, np.abs(err), p_w))
            out[l, m] = (taps * mean * unit, np.sqrt(taps * max(var, 0.0)) * unit, taps * mae * unit)
    return out


def test_feature_matrix_columns(features, evaluator, catalog):
    """Every column of the feature matrix, recomputed from its definition."""
    names = feature_names(5)
    assert len(set(names)) == len(names)
    genomes = np.array([EXACT, (0, 1, 2, 3, 4), (4, 4, 4, 4, 4), (2, 0, 3, 1, 4)])
    F = features.transform(genomes)
    assert F.shape == (4, len(names)) and np.all(np.isfinite(F))
    macs = np.array([i.macs for i in evaluator.infos], dtype=np.float64)
    noise = _noise_reference(evaluator, catalog)
    metrics = ("mae", "wce", "ep_pct", "mre_pct", "mse", "mean_error", "error_std")
    for r, genome in enumerate(genomes):
        expected = {}
        for l, m in enumerate(genome):
            entry = catalog[int(m)]
            expected.update({f"l{l + 1}_{k}": getattr(entry.metrics, k) for k in metrics})
            expected[f"l{l + 1}_power_mw"] = entry.power_mw
            expected[f"l{l + 1}_mac_share"] = macs[l] / macs.sum()
            for k, what in enumerate(("noise_bias", "noise_std", "noise_mae")):
                expected[f"l{l + 1}_{what}"] = noise[l, m, k]
        per_layer = noise[np.arange(5), genome]
        expected["energy"] = float((macs * catalog.powers[genome]).sum() / (macs * catalog.exact.power_mw).sum())
        expected["noise_std_sum"] = per_layer[:, 1].sum()
        expected["noise_std_max"] = per_layer[:, 1].max()
        expected["noise_bias_abs_sum"] = np.abs(per_layer[:, 0]).sum()
        assert set(expected) == set(names)  # every column is checked
        for c, name in enumerate(names):
            assert F[r, c] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), (genome, name)
    # the exact multiplier adds no noise; the constant-0 one a negative bias
    assert np.all(F[0, [names.index(f"l{l + 1}_noise_std") for l in range(5)]] == 0)
    assert np.all(F[2, [names.index(f"l{l + 1}_noise_bias") for l in range(5)]] < 0)
    assert np.array_equal(features.transform([0, 1, 2, 3, 4]), F[1:2])  # one genome, flat


# --------------------------------------------------------------------------- seeding, screening


def test_seed_genomes():
    powers = np.array([POWERS[n] for n in ("trunc", "exact", "lowbits", "noisy", "zero")])
    seeds = seed_genomes(12, 5, EXACT_INDEX, powers, np.random.default_rng(0), 5)
    assert len(seeds) == 12 and len(set(seeds)) == 12
    assert seeds[0] == EXACT
    uniform = [g for g in seeds[1:] if len(set(g)) == 1]
    # the four other circuits, each everywhere, by power: zero, lowbits, trunc, noisy
    assert uniform == [(4,) * 5, (2,) * 5, (0,) * 5, (3,) * 5] == seeds[1:5]
    assert all(0 <= v < 5 for g in seeds for v in g)
    assert seeds == seed_genomes(12, 5, EXACT_INDEX, powers, np.random.default_rng(0), 5)
    assert seeds != seed_genomes(12, 5, EXACT_INDEX, powers, np.random.default_rng(1), 5)
    few = seed_genomes(3, 5, EXACT_INDEX, powers, np.random.default_rng(0), 5)
    assert few[0] == EXACT and len(set(few)) == 3


def test_pick_for_truth_prefers_clear_improvement():
    # points as (1 - accuracy, energy), inside the default HV reference
    front = [[0.05, 0.95], [0.2, 0.6]]  # accuracy 0.95 at energy 0.95, 0.80 at 0.6
    mu = np.array([0.75, 0.94, 0.85, 0.93])
    energies = np.array([0.9, 0.3, 0.95, 0.35])
    assert pick_for_truth(mu, np.zeros(4), energies, front, 1, REF) == [1]
    two = pick_for_truth(mu, np.zeros(4), energies, front, 2, REF)
    assert two[0] == 1 and len(set(two)) == 2
    # an uncertain candidate can win through its optimistic bound (mean + kappa * std)
    uncertain = np.array([0.0, 0.0, 0.15, 0.0])
    cheap = np.array([0.9, 0.3, 0.25, 0.35])
    assert pick_for_truth(mu, np.zeros(4), cheap, front, 1, REF) == [1]
    assert pick_for_truth(mu, uncertain, cheap, front, 1, REF, kappa=1.0) == [2]
    assert pick_for_truth(mu, uncertain, cheap, front, 1, REF, kappa=0.0) == [1]


def test_pick_for_truth_without_gain_falls_back():
    front = [[0.0, 0.05]]  # perfect accuracy at 5 % energy dominates everything
    mu = np.array([0.5, 0.9, 0.8])
    picked = pick_for_truth(mu, np.zeros(3), np.array([0.5, 0.5, 0.9]), front, 2, REF)
    assert picked == [1, 2]  # smallest shortfall to the front first: 0.1, then 0.2 (0.5 is below the floor)
    everything = pick_for_truth(mu, np.zeros(3), np.array([0.5, 0.5, 0.9]), front, 5, REF)
    assert sorted(everything) == [0, 1, 2]  # k larger than the candidates: each once


def test_fallback_prefers_the_front_neighbourhood_to_cheap_junk():
    """The old fallback (accuracy per energy) took a near-zero-energy design far below the
    floor; the shortfall to the front takes the ones just behind it."""
    front = [[0.10, 0.50], [0.20, 0.30]]  # accuracy 0.90 at energy 0.5, 0.80 at 0.3
    mu = np.array([0.20, 0.79, 0.88])  # junk at 1 % energy, just behind (0.80, 0.3), just behind (0.90, 0.5)
    energies = np.array([0.01, 0.35, 0.60])
    # shortfalls by hand: 0.80 - 0.79 = 0.01 behind (0.80, 0.3); 0.90 - 0.88 = 0.02 behind (0.90, 0.5);
    # junk: nothing of the front is cheaper (0), but it is below the floor (+1)
    got = front_shortfall(np.column_stack([1 - mu, energies]), np.array(front), REF)
    assert np.allclose(got, [1.0, 0.01, 0.02])
    assert pick_for_truth(mu, np.zeros(3), energies, front, 3, REF) == [1, 2, 0]


# --------------------------------------------------------------------------- surrogate-mode run


@pytest.fixture(scope="module")
def surrogate_run(project, tmp_path_factory):
    from surrogate_nas import cli

    base = tmp_path_factory.mktemp("surrogate")
    out, cache = base / "runs", base / "cache"
    argv = ["run", "--budget", "25", "--pop-size", "4", "--offspring-factor", "3", "--search-images", "20",
            "--test-images", "20", "--seed", "2", "--out", str(out), "--run-id", "s"]
    with isolated_cwd(base):
        rc = cli.main(argv + project.flags(cache=cache))
    return rc, out / "s", cache


def test_surrogate_run_outputs(surrogate_run):
    rc, run, _ = surrogate_run
    assert rc == 0
    for name in ("config.json", "evaluations.csv", "front.csv", "front.png", "hv.png", "report.txt",
                 "surrogate.csv", "surrogate.png", "surrogate_choice.txt"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())["search"]
    assert config["mode"] == "surrogate" and config["offspring_factor"] == 3
    log = read_csv(run / "surrogate.csv")
    assert log and list(log[0]) == list(SURROGATE_COLUMNS)
    chosen = (run / "surrogate_choice.txt").read_text().split(";")[0].removeprefix("chosen: ")
    assert {row["kind"] for row in log} == {chosen}
    generations = [int(row["generation"]) for row in log]
    assert generations == sorted(generations) and len(set(generations)) == len(generations)
    assert (run / "surrogate_choice.txt").read_text().startswith("chosen: ")


def test_surrogate_run_reports_only_true_evaluations(surrogate_run):
    _, run, cache = surrogate_run
    rows = read_csv(run / "evaluations.csv")
    assert 0 < len(rows) <= 25
    genomes = [r["genome_indices"] for r in rows]
    assert len(set(genomes)) == len(genomes)
    assert genomes[0] == ",".join(map(str, EXACT)) and rows[0]["reason"] == "seed"
    assert {r["reason"] for r in rows} <= {"seed", "screened", "drift"}
    accuracy = {r["genome_indices"]: r["accuracy"] for r in rows}
    front = read_csv(run / "front.csv")
    assert front
    for r in front:
        assert r["genome_indices"] in accuracy, r  # never a predicted-only genome
        assert r["search_accuracy"] == accuracy[r["genome_indices"]]
    progress = json.loads((run / "progress.json").read_text())
    assert progress["evaluations"] == len(rows) <= progress["budget"] == 25
    # every truly evaluated genome is in the cache under the search fingerprint
    from surrogate_nas.evaluation.cache import EvalCache

    fp = json.loads((run / "config.json").read_text())["fingerprint"]
    with EvalCache(cache / "evaluations.sqlite") as c:
        cached = c.get_many(fp, [tuple(int(v) for v in g.split(",")) for g in genomes])
    assert len(cached) == len(genomes)
    n_log = sum(int(row["n_fresh"]) for row in read_csv(run / "surrogate.csv"))
    assert n_log == sum(r["reason"] in ("screened", "drift") for r in rows)


class PerfectLiar(AccuracySurrogate):
    """A surrogate that predicts accuracy 1.0 for every genome, with full confidence."""

    def predict(self, X, return_std=False):
        ones = np.ones(len(np.asarray(X)))
        return (ones, np.zeros_like(ones)) if return_std else ones


def test_front_never_holds_an_unevaluated_genome(cli, tmp_path, monkeypatch):
    """Predicted 1.0 everywhere: every offspring dominates every true point in the
    population, yet the front holds only truly evaluated genomes with their true accuracy."""
    monkeypatch.setattr("surrogate_nas.search.surrogate_nsga2.AccuracySurrogate", PerfectLiar)
    out = tmp_path / "runs"
    r = cli("run", "--budget", "16", "--pop-size", "4", "--offspring-factor", "3", "--search-images", "20",
            "--no-test", "--compensation", "none", "--out", out, "--run-id", "liar", cache=tmp_path / "c")
    assert r.rc == 0, r.err
    rows = {x["genome_indices"]: x for x in read_csv(out / "liar" / "evaluations.csv")}
    assert len(rows) == 16 and {x["reason"] for x in rows.values()} >= {"seed", "screened"}
    front = read_csv(out / "liar" / "front.csv")
    assert front
    for point in front:
        assert point["genome_indices"] in rows
        assert point["search_accuracy"] == rows[point["genome_indices"]]["accuracy"]
        assert float(point["search_accuracy"]) < 1.0  # a prediction would have read 1.0
    log = read_csv(out / "liar" / "surrogate.csv")
    assert log and all(float(x["mae"]) > 0 for x in log)  # the lie was measured against the truth
