"""Early stopping end to end, at a scale where it fires: looks after 10 and 20 of 30
search images on the tiny model, with a floor high enough to stop most genomes."""

import json

import pytest
from conftest import read_csv
from scipy.stats import beta

FLOOR = 0.9
LOOKS = (10, 20)


@pytest.fixture(scope="module")
def runs(project, tmp_path_factory):
    from conftest import isolated_cwd

    from surrogate_nas import cli

    base = tmp_path_factory.mktemp("stops")
    flags = ["--mode", "full", "--budget", "12", "--pop-size", "4", "--search-images", "30", "--test-images", "20",
             "--compensation", "none", "--rescore", "all", "--accuracy-floor", str(FLOOR),
             "--early-stop-looks", ",".join(map(str, LOOKS)), "--out", str(base / "runs")]
    with isolated_cwd(base):
        paths = project.flags(cache=base / "cache")
        assert cli.main(["run", *flags, "--run-id", "stop"] + paths) == 0
        assert cli.main(["run", *flags, "--run-id", "nostop", "--no-early-stop"] + paths) == 0
    return base / "runs"


def test_stops_fire_and_each_is_proven_below_the_floor(runs):
    rows = read_csv(runs / "stop" / "evaluations.csv")
    stopped = [r for r in rows if r["below_floor"]]
    assert stopped, "no evaluation stopped: the test does not exercise early stopping"
    alpha = (1 - 0.999) / len(LOOKS)  # one-sided, Bonferroni over the looks before the end
    for r in stopped:
        n = int(r["n_images"])
        assert n in LOOKS and float(r["below_floor"]) == pytest.approx(FLOOR)
        correct = round(float(r["accuracy"]) * n)
        upper = 1.0 if correct >= n else beta.ppf(1 - alpha, correct + 1, n - correct)
        assert upper < FLOOR
    complete = [r for r in rows if not r["below_floor"]]
    assert all(int(r["n_images"]) == 30 for r in complete)


def test_stopped_genomes_never_on_the_front_and_counted_in_the_summary(runs):
    rows = read_csv(runs / "stop" / "evaluations.csv")
    stopped = {r["genome_indices"] for r in rows if r["below_floor"]}
    front = {r["genome_indices"] for r in read_csv(runs / "stop" / "front.csv")}
    assert not stopped & front
    summary = json.loads((runs / "stop" / "summary.json").read_text())
    assert summary["stopped_early"] == len(stopped)
    config = json.loads((runs / "stop" / "config.json").read_text())
    assert config["early_stopping"]["looks_after_images"] == list(LOOKS)


def test_no_early_stop_scores_every_image_and_agrees_where_both_finished(runs):
    stop = {r["genome_indices"]: r for r in read_csv(runs / "stop" / "evaluations.csv")}
    full = read_csv(runs / "nostop" / "evaluations.csv")
    assert all(not r["below_floor"] and int(r["n_images"]) == 30 for r in full)
    both = [r for r in full if r["genome_indices"] in stop and not stop[r["genome_indices"]]["below_floor"]]
    assert all(r["accuracy"] == stop[r["genome_indices"]]["accuracy"] for r in both)
    for r in full:  # a stopped genome really is below the floor on all 30 images
        s = stop.get(r["genome_indices"])
        if s is not None and s["below_floor"]:
            assert float(r["accuracy"]) < FLOOR
