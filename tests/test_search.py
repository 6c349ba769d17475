"""NSGA-II search pieces: configuration checks, seeded sampling, the budgeted evaluation
archive and hypervolume (real pymoo and SQLite cache). Whole runs: test_run_cli.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import EXACT_INDEX
from helpers_search import many

from surrogate_nas.errors import UserError
from surrogate_nas.evaluation.cache import EvalCache
from surrogate_nas.search.config import SearchConfig
from surrogate_nas.search.pareto import hv_reference, hypervolume
from surrogate_nas.search.problem import AssignmentProblem, SeededSampling
from surrogate_nas.search.truth import BudgetExhausted, TrueEvaluations

EXACT = (EXACT_INDEX,) * 5


# --------------------------------------------------------------------------- SearchConfig


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"budget": -1}, r"^--budget: must be a positive"),
        ({"budget": 0}, r"^--budget: must be a positive"),
        ({"crossover_prob": 1.5}, r"^--crossover-prob: must be a probability in \[0, 1\], got 1.5"),
        ({"mutation_prob": -0.1}, r"^--mutation-prob: must be a probability"),
        ({"crossover_eta": 0.0}, r"^--crossover-eta: must be > 0"),
        ({"mutation_eta": -3.0}, r"^--mutation-eta: must be > 0"),
        ({"pop_size": 1}, r"^--pop-size: must be at least 2, got 1"),
        ({"mode": "bogus"}, r"^--mode: expected 'full' or 'surrogate', got 'bogus'"),
        ({"generations": 0}, r"^--generations: must be at least 1"),
        ({"search_images": 0}, r"^--search-images: must be positive"),
        ({"seed_fraction": 1.0}, r"^--seed-fraction: must be in \(0, 1\)"),
        ({"offspring_factor": 0}, r"^--offspring-factor: must be >= 1"),
    ],
)
def test_config_validate_errors(changes, pattern):
    with pytest.raises(UserError, match=pattern):
        SearchConfig(**changes).validate()


def test_config_defaults_valid_and_round_trip():
    config = SearchConfig(mode="surrogate", budget=5, pop_size=2, crossover_prob=0.0, mutation_prob=1.0)
    config.validate()
    assert SearchConfig(**json.loads(json.dumps(config.as_dict()))) == config


# --------------------------------------------------------------------------- SeededSampling


def test_seeded_sampling_puts_fixed_genomes_first():
    problem = AssignmentProblem(5, 5)
    fixed = [EXACT, (0, 2, 3, 4, 0), EXACT]  # the repeat is dropped
    pop = SeededSampling(fixed).do(problem, 8, random_state=np.random.default_rng(0))
    X = np.asarray(pop.get("X")).astype(int)
    assert X.shape == (8, 5)
    assert tuple(X[0]) == EXACT and tuple(X[1]) == (0, 2, 3, 4, 0)
    assert len({tuple(x) for x in X}) == 8  # no duplicates
    assert X.min() >= 0 and X.max() <= 4
    again = SeededSampling(fixed).do(problem, 8, random_state=np.random.default_rng(0))
    assert np.array_equal(np.asarray(again.get("X")), np.asarray(pop.get("X")))


def test_seeded_sampling_more_fixed_than_samples():
    problem = AssignmentProblem(5, 3)
    fixed = [(0,) * 5, (1,) * 5, (2,) * 5]
    pop = SeededSampling(fixed).do(problem, 2, random_state=np.random.default_rng(0))
    assert [tuple(x) for x in np.asarray(pop.get("X")).astype(int)] == fixed[:2]


# --------------------------------------------------------------------------- TrueEvaluations


class Scorer:
    """A real (deterministic) accuracy function that counts its calls."""

    def __init__(self):
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, genome):
        self.calls.append(tuple(genome))
        return 1.0 - sum(genome) / 100.0, 0.5


def energy_of(genome) -> float:
    return float(np.mean(genome)) / 4.0


@pytest.fixture
def eval_cache(tmp_path):
    with EvalCache(tmp_path / "evaluations.sqlite") as cache:
        yield cache


def test_true_evaluations_archive_repeats_are_free(eval_cache):
    scorer, seen = Scorer(), []
    truth = TrueEvaluations(many(scorer), energy_of, eval_cache, "fp", "run1", budget=2, n_images=20, on_new=seen.append)
    assert truth.accuracy(np.array([1, 2, 3, 4, 0]), 0, "initial") == pytest.approx(0.9)
    assert truth.accuracy((1, 2, 3, 4, 0), 1, "offspring") == pytest.approx(0.9)  # archive: free
    assert truth.used == 1 and truth.left == 1 and truth.computed == 1 and truth.cache_hits == 0
    assert scorer.calls == [(1, 2, 3, 4, 0)] and len(seen) == 1
    e = truth.archive[(1, 2, 3, 4, 0)]
    assert (e.generation, e.reason, e.from_cache) == (0, "initial", False)
    assert e.energy == pytest.approx(energy_of((1, 2, 3, 4, 0)))
    row = eval_cache.get("fp", (1, 2, 3, 4, 0))  # committed at once
    assert row.accuracy == pytest.approx(0.9) and row.run_id == "run1" and row.n_images == 20


def test_true_evaluations_cache_hits_count_in_budget(eval_cache):
    eval_cache.put("fp", (0, 0, 0, 0, 1), 0.42, 0.1, 20, 3.0, "other-run")
    scorer = Scorer()
    truth = TrueEvaluations(many(scorer), energy_of, eval_cache, "fp", "run2", budget=2, n_images=20)
    assert truth.accuracy((0, 0, 0, 0, 1), 0, "initial") == 0.42
    assert scorer.calls == []
    assert truth.used == 1 and truth.cache_hits == 1 and truth.computed == 0
    assert truth.archive[(0, 0, 0, 0, 1)].from_cache is True
    assert truth.archive[(0, 0, 0, 0, 1)].seconds == 3.0
    # another fingerprint does not share rows
    other = TrueEvaluations(many(scorer), energy_of, eval_cache, "fp2", "run2", budget=2, n_images=20)
    other.accuracy((0, 0, 0, 0, 1), 0, "initial")
    assert scorer.calls == [(0, 0, 0, 0, 1)]
    stats = {s["fingerprint"]: s for s in eval_cache.stats()}
    assert stats["fp"]["hits"] == 1 and stats["fp2"]["hits"] == 0


def test_true_evaluations_own_rows_are_not_cache_hits(eval_cache):
    """Rows this run id wrote before an interruption are replayed as its own work."""
    eval_cache.put("fp", (2, 2, 2, 2, 2), 0.5, 0.5, 20, 1.0, "run3")
    scorer = Scorer()
    truth = TrueEvaluations(many(scorer), energy_of, eval_cache, "fp", "run3", budget=3, n_images=20)
    assert truth.accuracy((2, 2, 2, 2, 2), 0, "initial") == 0.5
    assert scorer.calls == [] and truth.cache_hits == 0
    assert truth.archive[(2, 2, 2, 2, 2)].from_cache is False


def test_true_evaluations_own_rows_count_as_computed(eval_cache):
    eval_cache.put("fp", (2, 2, 2, 2, 2), 0.5, 0.5, 20, 1.0, "run3")
    truth = TrueEvaluations(many(Scorer()), energy_of, eval_cache, "fp", "run3", budget=3, n_images=20)
    truth.accuracy((2, 2, 2, 2, 2), 0, "initial")
    truth.accuracy((1, 2, 2, 2, 2), 0, "initial")
    assert truth.computed + truth.cache_hits == truth.used == 2


def test_true_evaluations_budget_exhausted(eval_cache):
    scorer = Scorer()
    truth = TrueEvaluations(many(scorer), energy_of, eval_cache, "fp", "run4", budget=2, n_images=20)
    truth.accuracy((0, 0, 0, 0, 0), 0, "initial")
    truth.accuracy((1, 1, 1, 1, 1), 0, "initial")
    assert truth.left == 0
    with pytest.raises(BudgetExhausted):
        truth.accuracy((2, 2, 2, 2, 2), 1, "offspring")
    eval_cache.put("fp", (3, 3, 3, 3, 3), 0.7, 0.7, 20, 1.0, "elsewhere")
    with pytest.raises(BudgetExhausted):  # a cache hit costs budget too
        truth.accuracy((3, 3, 3, 3, 3), 1, "offspring")
    assert truth.accuracy((1, 1, 1, 1, 1), 2, "offspring") == pytest.approx(0.95)  # still free
    assert len(scorer.calls) == 2 and truth.used == 2


def test_true_evaluations_front(eval_cache):
    truth = TrueEvaluations(many(lambda g: ({(0,) * 5: 0.9, (1,) * 5: 0.8, (2,) * 5: 0.95, (3,) * 5: 0.5}[tuple(g)], 0.0)),
                            lambda g: {0: 0.5, 1: 0.6, 2: 1.0, 3: 0.1}[g[0]], eval_cache, "fp", "r", 10, 20)
    for g in range(4):
        truth.accuracy((g,) * 5, 0, "initial")
    # (1,...) is dominated by (0,...): lower accuracy at higher energy
    assert [e.genome for e in truth.front()] == [(3,) * 5, (0,) * 5, (2,) * 5]


# --------------------------------------------------------------------------- hypervolume


def test_hypervolume_two_points():
    ref = (1.0, 1.0)
    # union of [0.2, 1] x [0.5, 1] (0.4) and [0.5, 1] x [0.2, 1] (0.4), overlap 0.25
    assert hypervolume(np.array([[0.2, 0.5], [0.5, 0.2]]), reference=ref) == pytest.approx(0.55)
    assert hypervolume(np.array([[0.5, 0.5]]), reference=ref) == pytest.approx(0.25)
    assert hypervolume([[0.2, 0.5], [0.5, 0.2], [0.6, 0.6]], reference=ref) == pytest.approx(0.55)  # dominated
    assert hypervolume([[0.2, 0.5], [1.2, 0.0]], reference=ref) == pytest.approx(0.4)  # outside: ignored
    assert hypervolume(np.empty((0, 2)), reference=ref) == 0.0
    assert hypervolume([[0.0, 1.0]], reference=ref) == 0.0  # on the reference's energy line: no volume
    assert hypervolume([[0.5, 0.5]], reference=(2.0, 1.0)) == pytest.approx(0.75)


def test_hypervolume_reference_is_the_accuracy_floor():
    """The reference point is (1 - floor, all-exact energy): an assignment that costs as
    much adds no volume however accurate; one 1 % cheaper adds the 1 % strip; one at the
    floor adds nothing."""
    from surrogate_nas.evaluation.energy import EnergyModel

    all_exact = EnergyModel([300, 500], [0.1, 0.4], exact_power=0.4)((1, 1))
    ref = hv_reference(0.6825)
    assert ref == pytest.approx((0.3175, 1.0))
    assert hypervolume([[0.0, all_exact]], ref) == 0.0
    r_err = ref[0]
    assert hypervolume([[0.0, all_exact - 0.01]], ref) == pytest.approx(r_err * 0.01)
    assert hypervolume([[r_err / 2, 0.5]], ref) == pytest.approx(r_err / 2 * 0.5)
    assert hypervolume([[r_err, 0.0]], ref) == 0.0  # accuracy at the floor: outside
