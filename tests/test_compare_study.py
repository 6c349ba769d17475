"""compare and study commands end to end on the tiny project (real model, pymoo, Optuna, SQLite)."""

from __future__ import annotations

import csv
import json
import sqlite3

import pytest
from conftest import read_csv

from surrogate_nas.errors import UserError
from surrogate_nas.evaluation.cache import EvalCache
from surrogate_nas.experiments.study import load_study


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
    # every method used its whole budget, and its final HV is that of the genomes it used,
    # recomputed: NSGA-II runs from their run folders, random and Optuna from the cache
    ref = _hv_reference(out / "runs" / "cmp-full-b10-s0")
    search = json.loads((out / "runs" / "cmp-full-b10-s0" / "config.json").read_text())["fingerprint"]
    used = _genomes_used_per_run(tmp_path / "c" / "evaluations.sqlite", search)
    for r in rows:
        method, budget = r["method"], budgets[r["method"]]
        assert int(r["computed_total"]) + int(r["cache_hits_total"]) == budget
        # every method writes its evaluations.csv, and they are the cache's rows of its run
        points = [(1 - float(e["accuracy"]), float(e["energy"]))
                  for e in read_csv(out / "runs" / f"cmp-{method}-b{budget}-s0" / "evaluations.csv")]
        def rounded(pts):
            return sorted((round(x, 6), round(y, 6)) for x, y in pts)

        assert rounded(points) == rounded(used[f"cmp-{method}-b{budget}-s0"])
        assert len(points) == budget
        assert float(r["final_hv_median"]) == pytest.approx(hv2d(points, ref), rel=1e-9, abs=1e-12)
        assert r["final_hv_min"] == r["final_hv_median"] == r["final_hv_max"]  # one seed
    assert (out / "hv_vs_evaluations.png").stat().st_size > 0 and (out / "fronts.png").stat().st_size > 0
    assert "HV reference point" in (out / "summary.md").read_text()
    # every method's final front is re-scored as a default run does, and the table's savings
    # are the validation choices recomputed here from its rescored.csv
    floor = 1 - ref[0]
    exact_validation = set()
    for r in rows:
        run_dir = out / "runs" / f"cmp-{r['method']}-b{budgets[r['method']]}-s0"
        evaluations = read_csv(run_dir / "evaluations.csv")
        front = {e["genome_indices"] for e in evaluations
                 if not any(float(o["accuracy"]) >= float(e["accuracy"]) and float(o["energy"]) <= float(e["energy"])
                            and (float(o["accuracy"]), float(o["energy"])) != (float(e["accuracy"]), float(e["energy"]))
                            for o in evaluations)}
        rescored = read_csv(run_dir / "rescored.csv")
        exact = [x for x in rescored if x["role"] == "all-exact"]
        assert len(exact) == 1 and exact[0]["test_accuracy"], r["method"]
        exact_validation.add(exact[0]["validation_accuracy"])
        points = [x for x in rescored if x["role"] == "front"]
        on_front = [e for e in evaluations if e["genome_indices"] in front]
        # a point exactly at the floor (20 images: accuracies are multiples of 0.05) may fall
        # either side of it after float rounding (the floor is read back from the HV reference)
        above = {e["genome_indices"] for e in on_front
                 if float(e["accuracy"]) > floor + 1e-6 or e["genome_indices"] == exact[0]["genome_indices"]}
        at_floor = {e["genome_indices"] for e in on_front if abs(float(e["accuracy"]) - floor) <= 1e-6}
        assert above <= {x["genome_indices"] for x in points} <= above | at_floor, r["method"]
        for t in (0.5, 1, 2):
            ok = [100 * (1 - float(x["energy"])) for x in points if x["validation_accuracy"] and
                  100 * (float(exact[0]["validation_accuracy"]) - float(x["validation_accuracy"])) <= t + 1e-9]
            assert float(r[f"saving_{t:g}pp_median"]) == pytest.approx(max(ok, default=0.0), abs=1e-3), (r["method"], t)
    assert len(exact_validation) == 1  # the same validation images for every method
    assert "Savings chosen on validation" in (out / "summary.md").read_text()


def test_compare_optuna_gp_uses_its_budget_and_repeats_its_genomes(cli, tmp_path):
    """Optuna's GPSampler past its 10 random start-up trials: the whole budget is used
    (all-exact first), its evaluations.csv holds the cache's rows of its run, and the same
    command gives the same genomes."""
    optuna = pytest.importorskip("optuna")
    pytest.importorskip("torch")
    if not hasattr(optuna.samplers, "GPSampler"):
        pytest.skip(f"optuna {optuna.__version__} has no GPSampler")
    genomes = []
    for k in (1, 2):
        out = tmp_path / f"gp{k}"
        result = cli("compare", "--methods", "optuna-gp", "--budget", "14", "--seeds", "1", "--search-images", "20",
                     "--no-test", "--out", str(out), cache=tmp_path / f"c{k}")
        assert result.rc == 0, result.err
        (row,) = list(csv.DictReader(open(out / "summary.csv")))
        assert row["method"] == "optuna-gp" and int(row["computed_total"]) + int(row["cache_hits_total"]) == 14
        evaluations = read_csv(out / "runs" / "cmp-optuna-gp-b14-s0" / "evaluations.csv")
        assert len(evaluations) == 14 and len({e["genome_indices"] for e in evaluations}) == 14
        assert len(set(evaluations[0]["genome_indices"].split(","))) == 1  # all-exact, enqueued first
        points = [(1 - float(e["accuracy"]), float(e["energy"])) for e in evaluations]
        used = _genomes_used_per_run(tmp_path / f"c{k}" / "evaluations.sqlite")["cmp-optuna-gp-b14-s0"]
        assert sorted((round(x, 6), round(y, 6)) for x, y in points) == sorted(
            (round(x, 6), round(y, 6)) for x, y in used)
        genomes.append([e["genome_indices"] for e in evaluations])
    assert genomes[0] == genomes[1]


def test_a_finished_optuna_run_is_read_back_without_its_sampler(cli, tmp_path, monkeypatch):
    """A rerun feeds a finished Optuna run's recorded genomes back through the cache instead of
    asking the sampler again (GPSampler spends minutes on its own model), and gets the same
    table; when the record disagrees with the cache, the sampler is asked as before."""
    optuna = pytest.importorskip("optuna")
    flags = ["compare", "--methods", "optuna", "--budget", "10", "--seeds", "1", "--search-images", "20", "--no-test",
             "--out", str(tmp_path / "cmp")]
    real, asked = optuna.create_study, []

    def counting(*args, **kwargs):  # a study is made only to ask its sampler
        asked.append("optuna")
        return real(*args, **kwargs)

    monkeypatch.setattr(optuna, "create_study", counting)
    r = cli(*flags, cache=tmp_path / "c")
    assert r.rc == 0, r.err
    def table():  # all but this call's wall time
        return [{k: v for k, v in row.items() if k != "wall_s_median"} for row in read_csv(tmp_path / "cmp" / "summary.csv")]

    first = table()
    assert asked == ["optuna"]
    r = cli(*flags, cache=tmp_path / "c")
    assert r.rc == 0, r.err
    assert asked == ["optuna"]  # read back, no sampler
    assert table() == first
    path = tmp_path / "cmp" / "runs" / "cmp-optuna-b10-s0" / "evaluations.csv"
    rows = read_csv(path)
    rows[3]["accuracy"] = f"{float(rows[3]['accuracy']) + 0.01:.6f}"  # a record the cache does not hold
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    r = cli(*flags, cache=tmp_path / "c")
    assert r.rc == 0, r.err
    assert asked == ["optuna", "optuna"]
    assert table() == first


def hv2d(points, reference) -> float:
    """Area dominated by (1 - accuracy, energy) points (both minimised) inside the reference box."""
    inside = sorted((f1, f2) for f1, f2 in points if f1 < reference[0] and f2 < reference[1])
    area, best_f2 = 0.0, reference[1]
    for f1, f2 in inside:  # horizontal slabs, from the most accurate point down
        if f2 < best_f2:
            area += (reference[0] - f1) * (best_f2 - f2)
            best_f2 = f2
    return area


def test_hv2d_reference():
    ref = (0.3, 1.0)
    assert hv2d([(0.1, 0.5)], ref) == pytest.approx(0.2 * 0.5)
    assert hv2d([(0.1, 0.5), (0.2, 0.2)], ref) == pytest.approx(0.2 * 0.5 + 0.1 * 0.3)
    assert hv2d([(0.1, 0.5), (0.2, 0.6), (0.4, 0.1)], ref) == pytest.approx(0.1)


def _hv_reference(run_dir) -> tuple[float, float]:
    """The reference point a run states in its config.json, as (1 - accuracy, energy)."""
    ref = json.loads((run_dir / "config.json").read_text())["hv_reference"]
    return 1 - ref["accuracy"], ref["energy"]


def _genomes_used_per_run(db, search_fingerprint: str | None = None) -> dict:
    """run id -> [(1 - accuracy, energy)] of the genomes it computed or took from the cache
    on the search set (its re-scoring on validation and test has other fingerprints; None:
    a run without re-scoring, every row)."""
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        stored = {(fp, g): (a, e) for fp, g, a, e in conn.execute("SELECT fingerprint, genome, accuracy, energy FROM evaluations")}
        used: dict = {}
        for fp, g, run in conn.execute("SELECT fingerprint, genome, run_id FROM evaluations UNION "
                                       "SELECT fingerprint, genome, run_id FROM hits"):
            if search_fingerprint is not None and fp != search_fingerprint:
                continue
            a, e = stored[(fp, g)]
            used.setdefault(run, []).append((1 - a, e))
    finally:
        conn.close()
    return used


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
        run = out / "runs" / f"tiny-{r['mode']}-b8-s0"
        front = read_csv(run / "front.csv")
        assert int(r["true_evals"]) == len(read_csv(run / "evaluations.csv"))
        assert int(r["pareto_points"]) == len(front)
        points = [(1 - float(f["search_accuracy"]), float(f["energy"])) for f in front]
        assert float(r["hv"]) == pytest.approx(hv2d(points, _hv_reference(run)))
        # chosen on validation, never on test: the largest saving among front points whose
        # validation accuracy is within the tolerance of all-exact's (rescored.csv)
        exact = next(x for x in read_csv(run / "rescored.csv") if x["role"] == "all-exact")
        rescored = [f for f in front if f["validation_accuracy"]]
        for loss, column in ((0.5, "saving_at_0.5pp_%"), (1.0, "saving_at_1pp_%")):
            ok = [f for f in rescored
                  if 100 * (float(exact["validation_accuracy"]) - float(f["validation_accuracy"])) <= loss + 1e-9]
            assert float(r[column]) == pytest.approx(max((100 * (1 - float(f["energy"])) for f in ok), default=0.0),
                                                     abs=1e-4)
            if ok:
                best = min(ok, key=lambda f: float(f["energy"]))
                test_loss = 100 * (float(exact["test_accuracy"]) - float(best["test_accuracy"]))
                assert float(r[column.replace("saving_at", "test_loss_at").removesuffix("_%")]) == pytest.approx(
                    test_loss, abs=1e-4)
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


# --------------------------------------------------------------------------- run folders and per-study settings


def _study(path, name: str, **settings) -> str:
    lines = [f'name = "{name}"', 'modes = ["full"]', "budget = 6", "crossover_prob = 1.0"]
    lines += [f"{k} = {v}" for k, v in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_study_refuses_a_run_folder_with_other_settings(cli, tmp_path):
    spec, out = tmp_path / "s.toml", tmp_path / "studies"
    _study(spec, "s", pop_size=4)
    first = cli("study", str(spec), "--search-images", "20", "--test-images", "20", "--compensation", "none",
                "--out", str(out), cache=tmp_path / "c")
    assert first.rc == 0, first.err
    saved = (out / "runs" / "s-full-b6-s0" / "config.json").read_bytes()
    _study(spec, "s", pop_size=6)  # same name, budget and seed: same run id
    again = cli("study", str(spec), "--search-images", "20", "--test-images", "20", "--compensation", "none",
                "--out", str(out), cache=tmp_path / "c")
    assert again.rc == 2 and len(again.err_lines) == 1, again.err
    assert again.err_lines[0] == (f"error: study s: run s-full-b6-s0: {out / 'runs' / 's-full-b6-s0'} holds a run with "
                                  "other settings (pop_size 4 saved, 6 now); use another --out")
    assert (out / "runs" / "s-full-b6-s0" / "config.json").read_bytes() == saved


def test_compare_refuses_a_run_folder_with_other_settings(cli, tmp_path):
    out = tmp_path / "cmp"
    argv = ["compare", "--methods", "full", "--budget", "6", "--seeds", "1", "--search-images", "20",
            "--compensation", "none", "--out", str(out)]
    assert cli(*argv, "--pop-size", "4", cache=tmp_path / "c").rc == 0
    r = cli(*argv, "--pop-size", "4", "--mutation-eta", "20", cache=tmp_path / "c")
    assert r.rc == 2 and len(r.err_lines) == 1, r.err
    assert r.err_lines[0] == (f"error: compare: run cmp-full-b6-s0: {out / 'runs' / 'cmp-full-b6-s0'} holds a run with "
                              "other settings (mutation_eta 3.0 saved, 20.0 now); use another --out")
    again = cli(*argv, "--pop-size", "4", cache=tmp_path / "c")  # the same settings continue the folder
    assert again.rc == 0, again.err


def test_each_study_uses_its_own_image_settings(cli, tmp_path):
    a = _study(tmp_path / "a.toml", "a", pop_size=4, search_images=10, test_images=20)
    b = _study(tmp_path / "b.toml", "b", pop_size=4, search_images=20, test_images=30)
    out = tmp_path / "studies"
    r = cli("study", a, b, "--compensation", "none", "--out", str(out), cache=tmp_path / "c")
    assert r.rc == 0, r.err
    for name, n_search, n_test in (("a", 10, 20), ("b", 20, 30)):
        doc = json.loads((out / "runs" / f"{name}-full-b6-s0" / "config.json").read_text())
        assert doc["search"]["search_images"] == n_search and doc["evaluator"]["images"]["n_images"] == n_search
        assert doc["rescore"]["test_images"] == n_test
        rescored = read_csv(out / "runs" / f"{name}-full-b6-s0" / "rescored.csv")
        assert rescored  # the all-exact point at least, re-scored on its own test subset
    with EvalCache(tmp_path / "c" / "evaluations.sqlite") as cache:
        test_sets = sorted(s["description"]["images"]["n_images"] for s in cache.stats()
                           if s["description"]["images"]["split"] == "test")
    assert test_sets == [20, 30]


def test_full_seeded_starts_from_the_surrogate_seed_set(cli, tmp_path):
    """The seeding ablation: full mode from surrogate mode's seed set evaluates exactly that
    seed set first, then screens nothing (every offspring is truly evaluated)."""
    out = tmp_path / "cmp"
    # a longer full-mode budget must change neither the seed set nor the seeded method's budget
    # (0.15 x 40 = 6 seeds would differ from the surrogate's max(4, 0.15 x 20) = 4)
    r = cli("compare", "--budget", "20", "--full-budget", "40", "--seeds", "1", "--pop-size", "4",
            "--offspring-factor", "2", "--search-images", "20", "--methods", "surrogate,full-seeded",
            "--out", str(out), cache=tmp_path / "c")
    assert r.rc == 0, r.err
    surrogate = read_csv(out / "runs" / "cmp-surrogate-b20-s0" / "evaluations.csv")
    seeded = read_csv(out / "runs" / "cmp-full-seeded-b20-s0" / "evaluations.csv")
    seeds = [e["genome_indices"] for e in surrogate if e["reason"] == "seed"]
    assert len(seeds) == 4 and [e["genome_indices"] for e in seeded[:4]] == seeds
    assert all(e["reason"] == "seed" for e in seeded[:4]) and {e["reason"] for e in seeded[4:]} <= {"offspring"}
    assert len(seeded) == 20
    assert json.loads((out / "runs" / "cmp-full-seeded-b20-s0" / "config.json").read_text())["search"]["initial"] == "seed-set"


def test_one_seed_per_process_then_the_tables(cli, tmp_path):
    """--only-seed runs one seed's methods and writes no table; the call without it takes
    those runs back from the shared cache and computes only the missing seed."""
    out, cache = tmp_path / "cmp", tmp_path / "c"
    flags = ["--budget", "6", "--seeds", "2", "--pop-size", "4", "--offspring-factor", "2", "--search-images", "20",
             "--methods", "surrogate,random", "--out", str(out)]
    r = cli("compare", *flags, "--only-seed", "1", cache=cache)
    assert r.rc == 0, r.err
    assert not (out / "summary.csv").exists()
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["cmp-random-b6-s1", "cmp-surrogate-b6-s1"]
    r = cli("compare", *flags, cache=cache)
    assert r.rc == 0, r.err
    rows = {row["method"]: row for row in csv.DictReader(open(out / "summary.csv"))}
    # seed 1 came back from the cache as this run id's own rows; seed 0 was computed now
    assert {m: int(row["computed_total"]) + int(row["cache_hits_total"]) for m, row in rows.items()} == \
        {"surrogate": 12, "random": 12}
    r = cli("compare", *flags, "--only-seed", "2", cache=cache)
    assert r.rc == 2 and "--only-seed: must be one of the seeds 0..1, got 2" in r.err

    # the same tables from the run folders alone, with an empty cache and no model
    import shutil

    shutil.copytree(out / "runs", tmp_path / "moved" / "runs")
    moved = [*flags[:-1], str(tmp_path / "moved")]
    r = cli("compare", *moved, "--from-records", cache=tmp_path / "empty", model=tmp_path / "no-model.keras")
    assert r.rc == 0, r.err
    again = {row["method"]: row for row in csv.DictReader(open(tmp_path / "moved" / "summary.csv"))}
    for method, row in rows.items():
        assert float(again[method]["eval_s_median"]) > 0
        assert set(again[method]) - {"eval_s_median"} == set(row) - {"wall_s_median"}
        for key in set(row) - {"wall_s_median"}:  # energies come back from 6 digits: HV to ~1e-7
            want = row[key]
            got = again[method][key]
            assert got == want or float(got) == pytest.approx(float(want), rel=1e-6, abs=1e-9), (method, key)
    assert not (tmp_path / "empty").exists()
    (tmp_path / "moved" / "runs" / "cmp-random-b6-s1" / "evaluations.csv").unlink()
    r = cli("compare", *moved, "--from-records", cache=tmp_path / "empty")
    assert r.rc != 0 and "lacks 1 run(s) of the plan: cmp-random-b6-s1" in r.err


def test_method_table_reads_hv_at_the_long_budgets_only_where_a_run_reaches_them():
    from surrogate_nas.experiments.compare import method_table
    from surrogate_nas.experiments.methods import MethodRun

    # HV after each evaluation: a step every 100 evaluations (hand-made histories)
    full = MethodRun("full", 0, 1500, [(n, n / 1e4) for n in range(100, 1501, 100)], [], 1.0, 0, 1500)
    short = MethodRun("surrogate", 0, 300, [(50, 0.01), (250, 0.02)], [], 1.0, 0, 300)
    rows = {r["method"]: r for r in method_table([full, short], (100, 200, 300, 900, 1500))}
    assert rows["full"]["hv_at_900"] == 0.09 and rows["full"]["hv_at_1500"] == 0.15
    assert rows["full"]["hv_at_300"] == 0.03
    assert "hv_at_900" not in rows["surrogate"] and rows["surrogate"]["hv_at_300"] == 0.02
    assert rows["surrogate"]["hv_at_100"] == 0.01


def test_a_baseline_folder_is_a_run_record(cli, tmp_path):
    """Random search's folder holds config.json and its evaluations: run again with an
    empty cache it takes them from the folder (the recorded seconds come back, nothing is
    scored again), and a folder made with other settings is refused, not overwritten."""
    out = tmp_path / "cmp"
    flags = ["--budget", "6", "--seeds", "1", "--pop-size", "4", "--search-images", "20", "--methods", "random",
             "--no-test", "--out", str(out)]
    r = cli("compare", *flags, "--only-seed", "0", cache=tmp_path / "c1")
    assert r.rc == 0, r.err
    run = out / "runs" / "cmp-random-b6-s0"
    record = json.loads((run / "config.json").read_text())
    assert record["search"]["seed"] == 0 and record["search"]["budget"] == 6 and record["fingerprint"]
    first = read_csv(run / "evaluations.csv")
    assert len(first) == 6

    r = cli("compare", *flags, "--only-seed", "0", cache=tmp_path / "c2")
    assert r.rc == 0, r.err
    again = read_csv(run / "evaluations.csv")
    assert [(e["genome_indices"], e["accuracy"]) for e in again] == [(e["genome_indices"], e["accuracy"]) for e in first]
    # all-exact (row 0) is scored anew for the accuracy floor before any run; the rest came from the folder
    assert [e["seconds"] for e in again[1:]] == [e["seconds"] for e in first[1:]]
    conn = sqlite3.connect(tmp_path / "c2" / "evaluations.sqlite")
    stored = dict(conn.execute("SELECT genome, seconds FROM evaluations WHERE fingerprint = ?", (record["fingerprint"],)))
    conn.close()
    assert all(stored[e["genome_indices"]] == float(e["seconds"]) for e in first[1:])

    r = cli("compare", *[f if f != "20" else "30" for f in flags], "--only-seed", "0", cache=tmp_path / "c2")
    assert r.rc != 0 and "compare: run cmp-random-b6-s0" in r.err and "other settings" in r.err, r.err
    assert read_csv(run / "evaluations.csv") == again
