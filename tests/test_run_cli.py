"""Whole search runs through `surrogate_nas.cli.main` (full mode): the run folder,
determinism, the cache across runs, bad flags, and resuming a run killed with SIGKILL.
Real model, pymoo and SQLite cache; surrogate-mode runs are in test_surrogate.py."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import EXACT_INDEX, PYTHON, isolated_cwd, read_csv

from surrogate_nas.evaluation.cache import EvalCache

EXACT = (EXACT_INDEX,) * 5
FULL = ["run", "--mode", "full", "--pop-size", "4", "--search-images", "20", "--test-images", "20"]


# --------------------------------------------------------------------------- full-mode runs


def _front(run_dir: Path) -> list[tuple[str, str, str]]:
    return [(r["genome_indices"], r["search_accuracy"], r["energy"]) for r in read_csv(run_dir / "front.csv")]


@pytest.fixture(scope="module")
def full_runs(project, tmp_path_factory):
    """Full-mode runs sharing one fresh cache, run once: a and b identical (seed 3), c seed 4."""
    from surrogate_nas import cli

    base = tmp_path_factory.mktemp("full")
    cache, out = base / "cache", base / "runs"
    results = {}
    with isolated_cwd(base):
        for run_id, seed in (("a", "3"), ("b", "3"), ("c", "4")):
            argv = FULL + ["--budget", "12", "--seed", seed, "--out", str(out), "--run-id", run_id]
            results[run_id] = cli.main(argv + project.flags(cache=cache))
    return {"out": out, "cache": cache, "rc": results}


def test_full_run_writes_its_folder(full_runs, catalog):
    assert full_runs["rc"] == {"a": 0, "b": 0, "c": 0}
    run = full_runs["out"] / "a"
    for name in ("config.json", "evaluations.csv", "front.csv", "front.png", "hv.png", "report.txt", "progress.json"):
        assert (run / name).is_file(), name
    doc = json.loads((run / "config.json").read_text())
    assert doc["run_id"] == "a" and doc["search"]["mode"] == "full" and doc["search"]["budget"] == 12
    assert doc["search"]["pop_size"] == 4 and doc["search"]["seed"] == 3 and doc["catalog_names"] == catalog.names
    assert doc["evaluator"]["images"]["n_images"] == 20
    rows = read_csv(run / "evaluations.csv")
    assert len(rows) == 12
    genomes = [tuple(int(v) for v in r["genome_indices"].split(",")) for r in rows]
    assert len(set(genomes)) == 12
    initial = [g for g, r in zip(genomes, rows) if r["reason"] == "initial"]
    assert len(initial) == 4 and initial[0] == EXACT
    assert all(r["from_cache"] == "0" for r in rows)
    progress = json.loads((run / "progress.json").read_text())
    assert progress["evaluations"] == 12 and progress["budget"] == 12 and progress["computed"] == 12
    front = read_csv(run / "front.csv")
    assert front and {"validation_accuracy", "test_accuracy", "test_loss_pp", "compensation"} <= set(front[0])
    exact_search = float(evaluated_exact := [r for r in rows if r["genome_indices"] == ",".join(map(str, EXACT))][0]["accuracy"])
    assert evaluated_exact
    evaluated = {r["genome_indices"]: r for r in rows}
    energies = [float(r["energy"]) for r in front]
    assert energies == sorted(energies)
    points = [(float(r["accuracy"]), float(r["energy"])) for r in rows]
    for r in front:
        assert r["genome_indices"] in evaluated
        assert r["search_accuracy"] == evaluated[r["genome_indices"]]["accuracy"]
        within_floor = float(r["search_accuracy"]) >= exact_search - 0.15
        assert (r["validation_accuracy"] != "") == within_floor  # test: only chosen points (see below)
        assert r["test_accuracy"] == "" or within_floor
        acc, energy = float(r["search_accuracy"]), float(r["energy"])
        assert not any(a >= acc and e <= energy and (a, e) != (acc, energy) for a, e in points)  # non-dominated
    on_front = {r["genome_indices"] for r in front}
    for r, (acc, energy) in zip(rows, points):  # everything else is dominated by (or equal to) a front point
        if r["genome_indices"] not in on_front:
            assert any(float(f["search_accuracy"]) >= acc and float(f["energy"]) <= energy for f in front)
    report = (run / "report.txt").read_text()
    assert report.startswith("run a: mode full, budget 12, pop 4")
    layer_lines = [line for line in report.splitlines() if line.startswith("ConvLayer")]
    assert len(layer_lines) == 5 * len(front)
    assert all(re.fullmatch(r"ConvLayer ([1-5]): (trunc|exact|lowbits|noisy|zero)\.bin( \((bias|tune|alwann|tune\+bias)\))? "
                            r"\[conv\1\]",
                            line) for line in layer_lines), layer_lines
    assert report.count("# Pareto point") == len(front)


def test_same_seed_same_front_and_second_run_from_cache(full_runs, cli):
    out = full_runs["out"]
    assert _front(out / "a") == _front(out / "b")
    rows_a, rows_b = read_csv(out / "a" / "evaluations.csv"), read_csv(out / "b" / "evaluations.csv")
    assert [r["genome_indices"] for r in rows_a] == [r["genome_indices"] for r in rows_b]
    assert [r["accuracy"] for r in rows_a] == [r["accuracy"] for r in rows_b]
    assert all(r["from_cache"] == "1" for r in rows_b)
    assert json.loads((out / "b" / "progress.json").read_text())["cache_hits"] == 12
    r = cli("cache", "stats", cache=full_runs["cache"])
    assert r.rc == 0
    assert "total: " in r.out
    # search fingerprint: 12 rows and 12 hits; the test-set fingerprint holds the front's test scores
    total = r.out.strip().splitlines()[-1]
    with EvalCache(full_runs["cache"] / "evaluations.sqlite") as cache:
        stats = cache.stats()
    search = [s for s in stats if s["description"]["images"] == {**s["description"]["images"], "split": "validation",
                                                                  "n_images": 20}]  # not the all-validation re-scoring
    rows_c = read_csv(out / "c" / "evaluations.csv")
    hits_c = sum(r["from_cache"] == "1" for r in rows_c)
    assert len(search) == 1
    assert search[0]["rows"] == 12 + (12 - hits_c) and search[0]["hits"] == 12 + hits_c
    assert total.endswith(f"{len(stats)} fingerprint(s)")


def test_rescored_values_equal_evaluate(full_runs, cli):
    """Every re-scored point of run a equals what `evaluate` gives for that genome on the same
    images: the 20-image test subset and the whole 30-image validation split."""
    rescored = read_csv(full_runs["out"] / "a" / "rescored.csv")
    assert rescored[0]["role"] == "all-exact" and rescored[0]["genome_indices"] == ",".join(map(str, EXACT))
    assert sum(bool(r["test_accuracy"]) for r in rescored) >= 2  # all-exact and at least one chosen point
    for row in [r for r in rescored if r["test_accuracy"]][:3]:
        for split, images, column in (("test", "20", "test_accuracy"), ("validation", "30", "validation_accuracy")):
            r = cli("evaluate", "--genome", row["genome_indices"], "--split", split, "--images", images, "--json",
                    cache=full_runs["cache"])
            assert r.rc == 0, r.err
            assert float(row[column]) == pytest.approx(json.loads(r.out)["accuracy"], abs=5e-7), (row, split)  # 6 digits


def _cache_rows(db: Path) -> dict[tuple[str, str], tuple]:
    """(fingerprint, genome) -> the rest of the row, read with sqlite3."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {(fp, g): rest for fp, g, *rest in conn.execute(
            "SELECT fingerprint, genome, accuracy, n_images, below_floor, dominated_by, correct_bits, run_id, seconds, "
            "created_at FROM evaluations")}
    finally:
        conn.close()


def test_a_folder_killed_and_moved_without_its_cache_resumes_to_the_same_run(full_runs, cli, tmp_path):
    """Run a's folder as a kill after two generations leaves it (evaluations.csv is written
    each generation), moved to a machine with an empty cache: `--resume` takes its rows
    from the folder, scores only the rest, and ends where the uninterrupted run a ended."""
    import shutil

    original = full_runs["out"] / "a"
    out, cache = tmp_path / "moved", tmp_path / "empty-cache"
    shutil.copytree(original, out / "a")
    lines = (original / "evaluations.csv").read_text().splitlines(keepends=True)
    (out / "a" / "evaluations.csv").write_text("".join(lines[:9]))  # header and the first 2 generations (pop 4)
    for name in ("front.csv", "rescored.csv", "report.txt", "summary.json"):
        (out / "a" / name).unlink(missing_ok=True)

    r = cli("run", "--resume", "a", "--out", out, cache=cache)
    assert r.rc == 0, r.err
    keep = ("genome_indices", "accuracy", "energy", "n_images", "below_floor", "generation", "reason")
    resumed, uninterrupted = read_csv(out / "a" / "evaluations.csv"), read_csv(original / "evaluations.csv")
    assert [{k: x[k] for k in keep} for x in resumed] == [{k: x[k] for k in keep} for x in uninterrupted]
    assert _front(out / "a") == _front(original)
    stored = _cache_rows(cache / "evaluations.sqlite")
    search_fp = json.loads((original / "config.json").read_text())["fingerprint"]
    for row in uninterrupted[:8]:  # taken from the folder, not scored again: the csv's rounded seconds
        assert stored[search_fp, row["genome_indices"]][6] == float(row["seconds"])


def test_cache_export_then_import_restores_every_row(full_runs, cli, tmp_path):
    """`cache export` on one machine, `cache import` on another: the same rows, bits and
    all, as the source database holds them (read here with sqlite3)."""
    source = full_runs["cache"] / "evaluations.sqlite"
    r = cli("cache", "export", "--csv", tmp_path / "rows.csv", cache=full_runs["cache"])
    assert r.rc == 0, r.err
    r = cli("cache", "import", tmp_path / "rows.csv", cache=tmp_path / "other")
    assert r.rc == 0, r.err
    want = _cache_rows(source)
    assert f"read {len(want)} evaluation(s) from 1 source(s); {len(want)} row(s) added or updated" in r.out
    assert _cache_rows(tmp_path / "other" / "evaluations.sqlite") == want
    r = cli("cache", "import", tmp_path / "rows.csv", cache=tmp_path / "other")  # again: nothing new
    assert r.rc == 0 and "; 0 row(s) added or updated" in r.out


@pytest.mark.parametrize("what,message", [
    ("missing", "does not exist"),
    ("empty-folder", "holds no run folder"),
    ("not-export", "not a `cache export` file"),
])
def test_cache_import_bad_source(cli, tmp_path, what, message):
    source = tmp_path / what
    if what == "empty-folder":
        source.mkdir()
    elif what == "not-export":
        source.write_text("genome,accuracy\n1,0.5\n")
    r = cli("cache", "import", source, cache=tmp_path / "c")
    assert r.rc != 0 and message in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert not (tmp_path / "c" / "evaluations.sqlite").exists()


def _chosen_by_hand(rows: list[dict], bits: dict, tolerance: float, upper: bool) -> str | None:
    """The cheapest front row whose validation loss (or its upper 95 % bound) is within
    `tolerance` pp, computed here from the CSVs with the textbook paired-proportion formula."""
    exact = rows[0]
    ok = []
    for r in [r for r in rows[1:] if r["validation_accuracy"]]:
        loss = 100 * (float(exact["validation_accuracy"]) - float(r["validation_accuracy"]))
        if upper:
            e, p = bits[exact["genome_indices"]], bits[r["genome_indices"]]
            b, c, n = sum(x and not y for x, y in zip(e, p)), sum(y and not x for x, y in zip(e, p)), len(e)
            loss += 100 * 1.959964 * max(0.0, b + c - (b - c) ** 2 / n) ** 0.5 / n
        if loss <= tolerance + 1e-9:
            ok.append(r)
    return min(ok, key=lambda r: (float(r["energy"]), -float(r["validation_accuracy"])))["genome_indices"] if ok else None


def test_test_split_scored_only_for_chosen_points(full_runs):
    """By default test is scored for all-exact and the points a summary chooses on
    validation (either rule, 0.5 / 1 / 2 pp), and for no other front point."""
    run = full_runs["out"] / "a"
    rows = read_csv(run / "rescored.csv")
    assert rows[0]["role"] == "all-exact" and all(r["role"] == "front" for r in rows[1:])
    bits = {r["genome_indices"]: [bool(int(r["bits"][2 * (i // 8):2 * (i // 8) + 2], 16) >> (i % 8) & 1)
                                  for i in range(int(r["n_images"]))]
            for r in read_csv(run / "rescored_bits.csv") if r["split"] == "validation"}
    chosen = {_chosen_by_hand(rows, bits, t, upper) for t in (0.5, 1.0, 2.0) for upper in (False, True)} - {None}
    tested = {r["genome_indices"] for r in rows if r["test_accuracy"]}
    assert tested == {rows[0]["genome_indices"]} | chosen
    summary = json.loads((run / "summary.json").read_text())
    for c in [*summary["chosen"].values(), *summary["chosen_upper_bound"].values()]:
        assert c is None or c["test_loss_pp"] is not None


def test_other_seed_other_search(full_runs):
    out = full_runs["out"]
    rows_a, rows_c = read_csv(out / "a" / "evaluations.csv"), read_csv(out / "c" / "evaluations.csv")
    assert len(rows_c) == 12
    assert rows_c[0]["genome_indices"] == ",".join(map(str, EXACT))  # all-exact always seeded
    assert [r["genome_indices"] for r in rows_c] != [r["genome_indices"] for r in rows_a]
    # genomes run a evaluated come from the cache, the others are computed
    seen = {r["genome_indices"] for r in rows_a}
    assert all(r["from_cache"] == ("1" if r["genome_indices"] in seen else "0") for r in rows_c)


def test_run_id_taken(full_runs, cli):
    r = cli(*FULL, "--budget", "12", "--out", full_runs["out"], "--run-id", "a", cache=full_runs["cache"])
    assert r.rc == 2 and len(r.err_lines) == 1
    assert "--run-id a:" in r.err_lines[0] and "--resume a" in r.err_lines[0]


@pytest.mark.parametrize(
    "flags, pattern",
    [
        (["--budget", "-1"], r"--budget: must be a positive"),
        (["--crossover-prob", "1.5"], r"--crossover-prob: must be a probability"),
        (["--mutation-eta", "0"], r"--mutation-eta: must be > 0"),
        (["--mode", "bogus"], r"--mode: expected 'full' or 'surrogate'"),
        (["--pop-size", "1"], r"--pop-size: must be at least 2"),
        (["--resume", "nonexistent"], r"--resume: .*nonexistent.*config.json not found"),
    ],
)
def test_bad_run_flags(cli, tmp_path, flags, pattern):
    r = cli("run", "--search-images", "20", "--out", tmp_path / "runs", *flags, cache=tmp_path / "c")
    assert r.rc == 2, r.err
    assert len(r.err_lines) == 1 and r.err_lines[0].startswith("error: "), r.err
    assert re.search(pattern, r.err_lines[0]), r.err_lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_resume_corrupt_config(cli, tmp_path):
    (tmp_path / "runs" / "x").mkdir(parents=True)
    (tmp_path / "runs" / "x" / "config.json").write_text('{"search": {"budget": 1, "bogus_key": 2}}')
    r = cli("run", "--out", tmp_path / "runs", "--resume", "x", cache=tmp_path / "c")
    assert r.rc == 2 and len(r.err_lines) == 1 and "is not a run configuration" in r.err_lines[0]


# --------------------------------------------------------------------------- resume


def _rows(db: Path, run_id: str) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return conn.execute("SELECT COUNT(*) FROM evaluations WHERE run_id = ?", (run_id,)).fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def _kill_when(proc, ready, what: str, limit_s: float | None, poll_s: float) -> None:
    """SIGKILL `proc` as soon as `ready()`; fail if it ends first (or `limit_s` passes)."""
    deadline = None if limit_s is None else time.monotonic() + limit_s
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"the run ended (rc {proc.returncode}) before {what}: "
                            f"{proc.stderr.read().decode()[-2000:]}")
            if deadline is not None and time.monotonic() > deadline:
                pytest.fail(f"not ready within {limit_s} s: {what}")
            time.sleep(poll_s)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        proc.stderr.close()


def test_resume_after_sigkill_gives_the_uninterrupted_front(project, cli, tmp_path, subprocess_env):
    cache, out = tmp_path / "cache", tmp_path / "runs"
    db = cache / "evaluations.sqlite"
    search = ["--budget", "60", "--seed", "1", "--no-test"]
    argv = [PYTHON, "-m", "surrogate_nas", *FULL, *search, "--out", str(out), "--run-id", "r",
            *project.flags(cache=cache)]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=subprocess_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    _kill_when(proc, lambda: _rows(db, "r") >= 5, "it could be killed", 90, 0.01)
    assert proc.returncode == -signal.SIGKILL
    done_before = _rows(db, "r")
    assert 5 <= done_before < 60

    r = cli("run", "--resume", "r", "--no-test", "--out", out, cache=cache)  # --no-test is not saved
    assert r.rc == 0, r.err
    assert "resuming r with its saved configuration" in r.out
    rows = read_csv(out / "r" / "evaluations.csv")
    assert len(rows) == 60 and all(x["from_cache"] == "0" for x in rows)  # its own rows, replayed
    assert _rows(db, "r") == 60
    assert all(x["test_accuracy"] == "" for x in read_csv(out / "r" / "front.csv"))
    assert not (out / "r" / "summary.json").exists()
    progress = json.loads((out / "r" / "progress.json").read_text())
    assert progress["evaluations"] == 60 and progress["cache_hits"] == 0

    # the same search uninterrupted (another run id, same cache: answered from it)
    fresh = tmp_path / "fresh"
    r = cli(*FULL, *search, "--out", fresh, "--run-id", "u", cache=cache)
    assert r.rc == 0, r.err
    assert _front(fresh / "u") == _front(out / "r")
    again = read_csv(fresh / "u" / "evaluations.csv")
    assert [x["genome_indices"] for x in again] == [x["genome_indices"] for x in rows]
    assert all(x["from_cache"] == "1" for x in again)
    assert _rows(db, "u") == 0


def test_kill_in_the_first_seconds_is_resumed(project, cli, tmp_path, subprocess_env):
    """Killed after the run's record exists but before its evaluator (and the auto rule)
    is built: `--resume` continues it and gives the uninterrupted run's front."""
    cache, out = tmp_path / "cache", tmp_path / "runs"
    search = ["--budget", "12", "--seed", "2", "--no-test", "--compensation", "auto"]
    argv = [PYTHON, "-m", "surrogate_nas", *FULL, *search, "--out", str(out), "--run-id", "k",
            *project.flags(cache=cache)]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=subprocess_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    record = out / "k" / "config.json"
    _kill_when(proc, record.exists, "its record appeared", None, 0.005)  # an event: the pending record comes first
    saved = json.loads(record.read_text())
    assert saved["evaluator"] is None and saved["search"]["budget"] == 12  # killed in the first window
    r = cli("run", "--resume", "k", "--out", out, cache=cache, paths=False)  # paths from the run's record
    assert r.rc == 0, r.err
    assert json.loads(record.read_text())["evaluator"] is not None
    r = cli(*FULL, *search, "--out", tmp_path / "fresh", "--run-id", "u", cache=cache)
    assert r.rc == 0, r.err
    assert _front(tmp_path / "fresh" / "u") == _front(out / "k")


# --------------------------------------------------------------------------- guarded resume


@pytest.fixture(scope="module")
def small_run(project, tmp_path_factory):
    """A finished tiny full-mode run (budget 6) to resume against."""
    from surrogate_nas import cli

    base = tmp_path_factory.mktemp("guard")
    out, cache = base / "runs", base / "cache"
    with isolated_cwd(base):
        rc = cli.main(FULL + ["--budget", "6", "--no-test", "--compensation", "none", "--out", str(out), "--run-id", "g"]
                      + project.flags(cache=cache))
    assert rc == 0
    return out, cache


def _other_weights(project, folder: Path) -> Path:
    """The tiny model with other weights and a card that matches them (same calibration)."""
    import hashlib

    import keras

    model = folder / "other.keras"
    folder.mkdir(parents=True, exist_ok=True)
    original = keras.models.load_model(project.model, compile=False)
    original.set_weights([w * 1.01 for w in original.get_weights()])
    original.save(model)
    card = json.loads(project.model.with_suffix(".json").read_text())
    card["weights_sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
    model.with_suffix(".json").write_text(json.dumps(card))
    return model


def _repriced_catalog(project, folder: Path) -> Path:
    import shutil

    shutil.copytree(project.catalog, folder)
    text = (folder / "catalog.csv").read_text().replace("noisy,noisy.bin,0.35", "noisy,noisy.bin,0.36")
    (folder / "catalog.csv").write_text(text)
    return folder


@pytest.mark.parametrize("change, what", [("model", "model weights"), ("catalog", "multiplier catalog")])
def test_resume_refuses_another_evaluator(small_run, cli, project, tmp_path, change, what):
    out, cache = small_run
    saved = (out / "g" / "config.json").read_bytes()
    override = {"model": _other_weights(project, tmp_path / "m")} if change == "model" else \
        {"catalog": _repriced_catalog(project, tmp_path / "catalog")}
    r = cli("run", "--resume", "g", "--out", out, cache=cache, **override)
    assert r.rc == 2 and len(r.err_lines) == 1, r.err
    assert r.err_lines[0] == (f"error: --resume g: {out / 'g'} was run with another evaluator; changed: {what}; "
                              "start a new run instead")
    assert (out / "g" / "config.json").read_bytes() == saved


def test_resume_with_the_same_evaluator_elsewhere_and_ignored_flags(small_run, cli, project, tmp_path):
    """A copy of the same model and catalog at other paths is the same evaluator; search
    flags given with --resume are named as ignored, and the saved configuration runs."""
    import shutil

    out, cache = small_run
    model = tmp_path / "copy" / "tiny.keras"
    model.parent.mkdir()
    shutil.copy(project.model, model)
    shutil.copy(project.model.with_suffix(".json"), model.with_suffix(".json"))
    r = cli("run", "--resume", "g", "--out", out, "--budget", "99", "--pop-size", "8", "--seed", "0", "--no-test",
            "--compensation", "bias", cache=cache, model=model)
    assert r.rc == 0, r.err
    lines = r.out.splitlines()
    assert lines[:2] == ["resuming g with its saved configuration",
                         "ignored with --resume (the saved configuration applies): --budget 99, --pop-size 8, "
                         "--no-test, --compensation bias"]
    assert json.loads((out / "g" / "config.json").read_text())["search"]["budget"] == 6
    assert len(read_csv(out / "g" / "evaluations.csv")) == 6


SURROGATE = ["run", "--pop-size", "4", "--offspring-factor", "3", "--search-images", "20", "--budget", "40",
             "--seed", "1", "--no-test"]


def test_surrogate_resume_after_sigkill_gives_the_uninterrupted_run(project, cli, tmp_path, subprocess_env):
    cache, out = tmp_path / "cache", tmp_path / "runs"
    db = cache / "evaluations.sqlite"
    argv = [PYTHON, "-m", "surrogate_nas", *SURROGATE, "--out", str(out), "--run-id", "r", *project.flags(cache=cache)]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=subprocess_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while _rows(db, "r") < 12:  # past the 6 seed evaluations, inside the screened generations
            if proc.poll() is not None:
                pytest.fail(f"the run ended (rc {proc.returncode}) before it could be killed: "
                            f"{proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("12 evaluations did not reach the cache within 180 s")
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done_before = _rows(db, "r")
    assert 12 <= done_before < 40

    r = cli("run", "--resume", "r", "--out", out, cache=cache)
    assert r.rc == 0, r.err
    rows = read_csv(out / "r" / "evaluations.csv")
    assert len(rows) == 40 and all(x["from_cache"] == "0" for x in rows)
    assert _rows(db, "r") == 40
    assert {x["reason"] for x in rows} >= {"seed", "screened"}

    fresh = tmp_path / "fresh"
    r = cli(*SURROGATE, "--out", fresh, "--run-id", "u", cache=cache)
    assert r.rc == 0, r.err
    again = read_csv(fresh / "u" / "evaluations.csv")
    assert [(x["genome_indices"], x["reason"], x["generation"]) for x in again] == \
        [(x["genome_indices"], x["reason"], x["generation"]) for x in rows]
    assert all(x["from_cache"] == "1" for x in again) and _rows(db, "u") == 0
    assert _front(fresh / "u") == _front(out / "r")
    assert read_csv(fresh / "u" / "surrogate.csv") == read_csv(out / "r" / "surrogate.csv")


def test_resume_of_a_run_saved_before_a_setting_existed(small_run, cli):
    """A setting added since the run was saved had its default then: not a change."""
    import shutil

    out, cache = small_run
    shutil.copytree(out / "g", out / "old")
    doc = json.loads((out / "old" / "config.json").read_text())
    del doc["search"]["drift_samples"]
    (out / "old" / "config.json").write_text(json.dumps(doc))
    r = cli("run", "--resume", "old", "--out", out, cache=cache)
    assert r.rc == 0, r.err
    assert len(read_csv(out / "old" / "evaluations.csv")) == 6
