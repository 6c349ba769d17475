"""Parallel true evaluations: local workers (joblib's loky) and a Dask cluster give the
same evaluations, in the same order, and the same front as a serial run. Real tiny
model, real worker processes, a real 2-worker `distributed.LocalCluster`."""

from __future__ import annotations

import pytest
from conftest import read_csv

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
