"""Search spaces smaller than the seed set or the budget (a 2-circuit catalog: 2^5 = 32
genomes): seeding, both search loops and whole runs end, and say why, instead of
spinning. Real pymoo, SQLite cache and (for the runs) the tiny trained model."""

from __future__ import annotations

import contextlib
import itertools
import json
import signal

import numpy as np
import pytest
from conftest import CIRCUITS, POWERS, read_csv, write_catalog
from helpers_search import many

from surrogate_nas.evaluation.cache import EvalCache
from surrogate_nas.search.config import SearchConfig
from surrogate_nas.search.nsga2 import run_full
from surrogate_nas.search.seeding import seed_genomes
from surrogate_nas.search.truth import TrueEvaluations

SPACE = set(itertools.product(range(2), repeat=5))
EXACT2 = (0,) * 5  # catalog {"exact", "lowbits"}: the exact circuit is gene 0


class Hang(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (instead of blocking the suite) when the block runs longer than `seconds`."""

    def alarm(signum, frame):
        raise Hang(f"still running after {seconds} s: the search does not end")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_seed_genomes_larger_than_the_space_gives_the_whole_space():
    powers = np.array([POWERS["exact"], POWERS["lowbits"]])
    with deadline(120):  # a hang guard, generous for a loaded machine
        seeds = seed_genomes(45, 2, 0, powers, np.random.default_rng(0), 5)
    assert len(seeds) == 32 and set(seeds) == SPACE
    assert seeds[0] == EXACT2 and seeds[1] == (1,) * 5
    with deadline(120):  # one short of the space: the loop has to find the last genomes
        almost = seed_genomes(31, 2, 0, powers, np.random.default_rng(1), 5)
    assert len(set(almost)) == 31 and set(almost) <= SPACE and almost[0] == EXACT2


class Scorer:
    """A deterministic accuracy function (the search bookkeeping is under test, not the model)."""

    def __call__(self, genome):
        return 0.9 - 0.1 * sum(genome), 0.0


@pytest.fixture
def truth_for(tmp_path):
    caches = []

    def make(budget: int) -> TrueEvaluations:
        cache = EvalCache(tmp_path / "evaluations.sqlite")
        caches.append(cache)
        return TrueEvaluations(many(Scorer()), lambda g: float(np.mean(g)), cache, f"fp{budget}", "r", budget, 20)

    yield make
    for cache in caches:
        cache.close()


def test_full_mode_ends_when_every_genome_is_evaluated(truth_for, capsys):
    truth = truth_for(100)
    with deadline(60):
        generations = run_full(SearchConfig(budget=100, pop_size=40), truth, 2, 0, lambda X: X.mean(axis=1), n_layers=5)
    assert set(truth.archive) == SPACE and truth.used == 32
    assert generations == 1  # 32 distinct genomes in the initial population of 40
    out = capsys.readouterr().out
    assert "search space exhausted: all 32 assignments are evaluated (budget 100)" in out


def test_full_mode_ends_when_no_new_genome_comes(truth_for, capsys):
    """Population 4 in a 32-genome space converges before it has seen every genome."""
    truth = truth_for(40)
    generations = []
    with deadline(120):
        run_full(SearchConfig(budget=40, pop_size=4), truth, 2, 0, lambda X: X.mean(axis=1), generations.append, n_layers=5)
    assert truth.used < 32
    out = capsys.readouterr().out
    assert f"no new assignment in {SearchConfig().stall_generations} generations ({truth.used} of the 32" in out
    # the last new genome came exactly SearchConfig().stall_generations generations before the end
    last_new = max(e.generation for e in truth.archive.values())
    assert generations[-1] == last_new + 1 + SearchConfig().stall_generations


# --------------------------------------------------------------------------- whole runs


@pytest.fixture(scope="module")
def two_circuits(tmp_path_factory):
    return write_catalog(tmp_path_factory.mktemp("two") / "catalog",
                         {"exact": CIRCUITS["exact"], "lowbits": CIRCUITS["lowbits"]}, POWERS)


@pytest.mark.parametrize("mode, extra", [("surrogate", []), ("full", ["--pop-size", "40"])])
def test_run_in_a_two_circuit_space_ends(cli, tmp_path, two_circuits, mode, extra):
    out = tmp_path / "runs"
    with deadline(300):
        r = cli("run", "--mode", mode, "--budget", "300", *extra, "--search-images", "20", "--no-test",
                "--compensation", "none", "--out", out, "--run-id", "x", cache=tmp_path / "c", catalog=two_circuits)
    assert r.rc == 0, r.err
    assert "search space exhausted: all 32 assignments are evaluated (budget 300)" in r.out
    rows = read_csv(out / "x" / "evaluations.csv")
    assert {tuple(int(v) for v in row["genome_indices"].split(",")) for row in rows} == SPACE
    assert json.loads((out / "x" / "progress.json").read_text())["evaluations"] == 32
