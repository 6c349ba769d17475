"""Parallel true evaluations: local workers (joblib's loky) and a Dask cluster give the
same evaluations, in the same order, and the same front as a serial run; two runs at once
share one cache. Real tiny model, real worker processes, a real 2-worker
`distributed.LocalCluster`, real `python -m surrogate_nas` processes on one SQLite file."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import pytest
from conftest import PYTHON, read_csv

SURROGATE = ["run", "--mode", "surrogate", "--pop-size", "4", "--budget", "10", "--search-images", "30",
             "--test-images", "20", "--offspring-factor", "3", "--seed", "5"]
SAME = ("order", "generation", "reason", "genome_indices", "accuracy", "energy", "n_images", "below_floor")


def _evaluations(run_dir):
    return [tuple(row[c] for c in SAME) for row in read_csv(run_dir / "evaluations.csv")]


def _front(run_dir):
    return [(r["genome_indices"], r["search_accuracy"], r["validation_accuracy"], r["test_accuracy"])
            for r in read_csv(run_dir / "front.csv")]


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory, project):
    from conftest import isolated_cwd

    from surrogate_nas import cli

    base = tmp_path_factory.mktemp("serial")
    with isolated_cwd(base):
        rc = cli.main(SURROGATE + ["--out", str(base / "runs"), "--run-id", "s"] + project.flags(cache=base / "cache"))
    assert rc == 0
    return base / "runs" / "s"


def test_local_workers_give_the_serial_run(serial_run, cli, tmp_path):
    r = cli(*SURROGATE, "--workers", "2", "--out", tmp_path / "runs", "--run-id", "w", cache=tmp_path / "cache")
    assert r.rc == 0, r.err
    run = tmp_path / "runs" / "w"
    assert len(_evaluations(run)) == 10
    assert _evaluations(run) == _evaluations(serial_run)
    assert _front(run) == _front(serial_run)


def test_dask_cluster_gives_the_serial_run(serial_run, cli, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        r = cli(*SURROGATE, "--dask-scheduler", cluster.scheduler_address, "--out", tmp_path / "runs",
                "--run-id", "d", cache=tmp_path / "cache")
    assert r.rc == 0, r.err
    run = tmp_path / "runs" / "d"
    assert _evaluations(run) == _evaluations(serial_run)
    assert _front(run) == _front(serial_run)


def test_unreachable_scheduler_is_one_line(cli, tmp_path):
    pytest.importorskip("distributed")
    r = cli(*SURROGATE, "--dask-scheduler", "tcp://127.0.0.1:9", "--out", tmp_path / "runs", cache=tmp_path / "cache")
    assert r.rc != 0 and len(r.err_lines) == 1
    assert r.err_lines[0].startswith("error: --dask-scheduler tcp://127.0.0.1:9: cannot connect")


def test_two_runs_at_once_share_one_fresh_cache(project, tmp_path, subprocess_env):
    """Two `run` processes started together on one fresh cache folder (both decode the
    dataset into it and write their evaluations to one SQLite file) both finish, and no
    evaluation is lost: every row of each run's evaluations.csv is in the cache, with its
    accuracy, and the cache holds nothing else. (The tiny fixture has 30 validation
    images: the search set is all of them.)"""
    cache, out = tmp_path / "cache", tmp_path / "runs"
    procs = []
    for seed in (1, 2):  # different searches that meet on some genomes (all-exact, for one)
        argv = [PYTHON, "-m", "surrogate_nas", "run", "--mode", "full", "--pop-size", "4", "--budget", "12",
                "--search-images", "30", "--no-test", "--seed", str(seed), "--out", str(out), "--run-id", f"p{seed}",
                *project.flags(cache=cache)]
        procs.append(subprocess.Popen(argv, cwd=tmp_path, env=subprocess_env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
    try:
        errors = [p.communicate(timeout=1200)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], [e[-3000:] for e in errors]

    fingerprints, wanted = set(), {}
    for seed in (1, 2):
        run = out / f"p{seed}"
        fingerprints.add(json.loads((run / "config.json").read_text())["fingerprint"])
        rows = read_csv(run / "evaluations.csv")
        assert len(rows) == 12
        for row in rows:
            genome = tuple(int(g) for g in row["genome_indices"].split(","))
            assert wanted.setdefault(genome, row["accuracy"]) == row["accuracy"]  # the runs agree
    (fp,) = fingerprints  # same model, images and settings: one fingerprint
    with sqlite3.connect(cache / "evaluations.sqlite") as conn:  # read by SQLite itself, not by EvalCache
        stored = {tuple(int(g) for g in key.split(",")): accuracy for key, accuracy in
                  conn.execute("SELECT genome, accuracy FROM evaluations WHERE fingerprint = ?", (fp,))}
        others = conn.execute("SELECT COUNT(*) FROM evaluations WHERE fingerprint != ?", (fp,)).fetchone()[0]
    assert set(stored) == set(wanted) and others == 0
    assert all(f"{stored[g]:.6f}" == accuracy for g, accuracy in wanted.items())
