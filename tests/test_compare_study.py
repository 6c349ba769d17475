"""compare and study commands end to end on the tiny project (real model, pymoo, Optuna, SQLite)."""

from __future__ import annotations

import csv

import pytest

from surrogate_nas.study import load_study
from surrogate_nas.errors import UserError


def test_compare_writes_tables_and_plots(cli, tmp_path):
    pytest.importorskip("optuna")
    out = tmp_path / "cmp"
    result = cli("compare", "--budget", "8", "--seeds", "1", "--full-budget", "10", "--pop-size", "4",
                 "--offspring-factor", "2", "--search-images", "20", "--out", str(out), cache=tmp_path / "c")
    assert result.rc == 0, result.err
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["method"] for r in rows] == ["surrogate", "full", "random", "optuna"]
    budgets = {r["method"]: int(r["budget"]) for r in rows}
    assert budgets == {"surrogate": 8, "full": 10, "random": 8, "optuna": 8}
    for r in rows:
        assert int(r["computed_total"]) + int(r["cache_hits_total"]) <= budgets[r["method"]]
        assert float(r["final_hv_min"]) <= float(r["final_hv_median"]) <= float(r["final_hv_max"])
    assert (out / "hv_vs_evaluations.png").stat().st_size > 0 and (out / "fronts.png").stat().st_size > 0
    assert "HV reference point" in (out / "summary.md").read_text()


def test_compare_rejects_bad_flags(cli, tmp_path):
    for argv, word in ((("--methods", "surrogate,bogus"), "--methods"), (("--seeds", "0"), "--seeds"),
                       (("--budget", "10", "--full-budget", "5"), "--full-budget")):
        result = cli("compare", *argv, "--out", str(tmp_path / "x"), cache=tmp_path / "c")
        assert result.rc == 2 and word in result.err and len(result.err.strip().splitlines()) == 1


def test_study_runs_both_modes_and_summarises(cli, tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text('name = "tiny"\npop_size = 4\ngenerations = 2\ncrossover_prob = 1.0\ncrossover_eta = 3\n'
                    'mutation_prob = 0.5\nmutation_eta = 3\nmodes = ["full", "surrogate"]\nbudget = 8\n')
    out = tmp_path / "studies"
    result = cli("study", str(spec), "--search-images", "20", "--test-images", "20", "--out", str(out), cache=tmp_path / "c")
    assert result.rc == 0, result.err
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [(r["study"], r["mode"]) for r in rows] == [("tiny", "full"), ("tiny", "surrogate")]
    for r in rows:
        assert int(r["true_evals"]) <= 8 and int(r["pareto_points"]) >= 1
        assert 0.0 <= float(r["saving_at_0.5pp_%"]) <= float(r["saving_at_1pp_%"]) <= 100.0
    assert (out / "fronts.png").is_file() and (out / "runs" / "tiny-full-b8-s0" / "front.csv").is_file()


def test_study_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\npop_size = 1\n')
    with pytest.raises(UserError, match="pop-size"):
        load_study(bad)
    bad.write_text('name = "x"\nwhatever = 3\n')
    with pytest.raises(UserError, match="unknown key"):
        load_study(bad)
    with pytest.raises(UserError, match="not found"):
        load_study(tmp_path / "missing.toml")


def test_shipped_studies_are_the_original_four():
    from pathlib import Path

    specs = sorted(Path(__file__).parents[1].glob("experiments/studies/*.toml"))
    settings = {load_study(p)[2].pop_size: load_study(p)[2] for p in specs}
    assert sorted(settings) == [20, 40, 70, 100]
    c = settings[70]
    assert (c.generations, c.crossover_prob, c.crossover_eta, c.mutation_prob, c.mutation_eta) == (10, 0.5, 30, 0.5, 30)
