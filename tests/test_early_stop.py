"""Early stopping below the accuracy floor: the bound, the stages, what the cache keeps,
and what the search sees. Real SQLite cache, real tiny model for the evaluator part."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from conftest import EXACT_INDEX
from scipy.stats import binom

from surrogate_nas.evaluation.cache import SCHEMA_VERSION, EvalCache
from surrogate_nas.evaluation.early_stop import (
    Outcome,
    StoppingRule,
    score_genomes,
    upper_bound,
)
from surrogate_nas.search.truth import TrueEvaluations


@pytest.mark.parametrize("correct,n,alpha", [(25, 250, 0.001), (0, 250, 0.0005), (170, 500, 1e-4), (249, 250, 0.01)])
def test_upper_bound_is_clopper_pearson(correct, n, alpha):
    """At the bound, seeing `correct` or fewer has probability exactly alpha."""
    ub = upper_bound(correct, n, alpha)
    assert binom.cdf(correct, n, ub) == pytest.approx(alpha, rel=1e-6)
    assert upper_bound(n, n, alpha) == 1.0


def test_stages_and_looks():
    rule = StoppingRule(0.68)
    assert rule.stages(2000) == [(0, 250), (250, 500), (500, 1000), (1000, 2000)]
    assert rule.stages(600) == [(0, 250), (250, 500), (500, 600)]
    assert rule.stages(200) == [(0, 200)]  # no look before the end: nothing to stop
    assert StoppingRule(None).stages(2000) == [(0, 2000)]
    assert not StoppingRule(None).below(0, 250, 2000)
    assert rule.below(25, 250, 2000)  # chance level after 250 images
    assert not rule.below(170, 250, 2000)  # 68 %: at the floor, never stopped
    assert not rule.below(0, 2000, 2000)  # the last stage decides nothing: it is complete


def test_stop_rate_at_the_floor_is_below_one_minus_confidence():
    """Designs exactly at the floor, in random image orders, drawn without replacement from
    a 2,000-image search set: the rule stops (wrongly) far fewer than 0.1 % of them."""
    rng = np.random.default_rng(0)
    rule = StoppingRule(0.68)
    right = np.zeros(2000, bool)
    right[:1360] = True  # exactly 68 %
    wrong = 0
    for _ in range(4000):
        order = rng.permutation(right)
        wrong += any(rule.below(int(order[:stop].sum()), stop, 2000) for _, stop in rule.stages(2000)[:-1])
    assert wrong <= 4  # 0.1 % of 4,000 (the Bonferroni split makes it rarer still)


def fake_counts(accuracy: dict):
    """count_many for genomes with a fixed per-image right/wrong pattern."""
    calls = []

    def count_many(tasks):
        calls.append(list(tasks))
        out = []
        for genome, lo, hi in tasks:
            i = np.arange(2000)
            pattern = np.floor((i + 1) * accuracy[genome] + 1e-9) > np.floor(i * accuracy[genome] + 1e-9)  # evenly
            out.append((int(pattern[lo:hi].sum()), 0.01 * (hi - lo)))
        return out

    return count_many, calls


def test_score_genomes_stops_the_hopeless_and_adds_up_the_rest():
    count_many, calls = fake_counts({(1,): 0.1, (2,): 0.8, (3,): 0.6})
    out = score_genomes([(1,), (2,), (3,)], count_many, 2000, StoppingRule(0.68), shard=250)
    chance, good, poor = out
    assert chance.stopped and chance.n_images == 250 and chance.below_floor == 0.68
    assert chance.accuracy == pytest.approx(0.1, abs=0.01)
    assert not good.stopped and good.n_images == 2000 and good.correct == 1600
    assert poor.stopped and poor.n_images in (250, 500, 1000)
    assert good.seconds == pytest.approx(20.0)
    # every stage sends all live genomes' shards at once, each shard at most 250 images
    assert all(hi - lo <= 250 for batch in calls for _, lo, hi in batch)
    assert len(calls[0]) == 3 and calls[-1] == [((2,), lo, lo + 250) for lo in range(1000, 2000, 250)]


def test_without_a_floor_every_image_is_scored():
    count_many, _ = fake_counts({(1,): 0.1})
    (o,) = score_genomes([(1,)], count_many, 2000, StoppingRule(None), shard=250)
    assert not o.stopped and o.n_images == 2000 and o.correct == 200


# --------------------------------------------------------------------------- cache and search


@pytest.fixture
def eval_cache(tmp_path):
    with EvalCache(tmp_path / "evaluations.sqlite") as cache:
        yield cache


def test_cache_keeps_a_stop_and_lets_a_complete_row_replace_it(eval_cache):
    stopped = eval_cache.put("fp", (1, 1), 0.1, 0.5, 250, 0.2, "r1", below_floor=0.68)
    assert stopped.below_floor == 0.68 and stopped.n_images == 250
    assert stopped.answers(0.68) and stopped.answers(0.75) and not stopped.answers(0.6) and not stopped.answers(None)
    weaker = eval_cache.put("fp", (1, 1), 0.2, 0.5, 500, 0.4, "r2", below_floor=0.7)  # says less: ignored
    assert weaker.below_floor == 0.68 and weaker.run_id == "r1"
    full = eval_cache.put("fp", (1, 1), 0.105, 0.5, 2000, 1.6, "r3")
    assert full.below_floor is None and full.n_images == 2000 and full.accuracy == 0.105 and full.answers(None)
    again = eval_cache.put("fp", (1, 1), 0.1, 0.5, 250, 0.2, "r4", below_floor=0.68)  # a stop never replaces it
    assert again.below_floor is None and again.run_id == "r3"


def test_a_version_1_cache_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE evaluations (fingerprint TEXT NOT NULL, genome TEXT NOT NULL, accuracy REAL NOT NULL,
            energy REAL, n_images INTEGER, seconds REAL, created_at TEXT NOT NULL, run_id TEXT,
            PRIMARY KEY (fingerprint, genome));
        CREATE TABLE fingerprints (fingerprint TEXT PRIMARY KEY, description TEXT NOT NULL, created_at TEXT NOT NULL);
        CREATE TABLE hits (fingerprint TEXT NOT NULL, genome TEXT NOT NULL, run_id TEXT, at TEXT NOT NULL);
        INSERT INTO evaluations VALUES ('fp', '1,2', 0.8, 0.5, 2000, 3.0, '2026-11-28', 'old');
        PRAGMA user_version = 1;
    """)
    con.close()
    with EvalCache(path) as cache:
        row = cache.get("fp", (1, 2))
        assert row.accuracy == 0.8 and row.below_floor is None and row.answers(0.68) and row.correct_bits is None
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_true_evaluations_with_stops(eval_cache):
    """A stopped genome counts against the budget, is stored as such, is never on the front,
    and the search is told its partial accuracy; a later run without early stopping
    scores it again in full and replaces the row."""
    accuracy = {(1, 1): 0.1, (2, 2): 0.8, (3, 3): 0.75}
    count_many, _ = fake_counts(accuracy)
    rule = StoppingRule(0.68)

    def score_many(genomes):
        return score_genomes(genomes, count_many, 2000, rule, 250)

    energy = {(1, 1): 0.1, (2, 2): 0.9, (3, 3): 0.5}.get
    truth = TrueEvaluations(score_many, energy, eval_cache, "fp", "r", 10, 2000, floor=0.68, stop_floor=0.68, group=2)
    accs = truth.evaluate([(1, 1), (2, 2), (3, 3)], 0, "initial")
    assert accs[0] == pytest.approx(0.1, abs=0.01) and accs[1:] == [0.8, 0.75]
    assert truth.used == 3 and truth.archive[(1, 1)].stopped and truth.archive[(1, 1)].n_images == 250
    assert [e.genome for e in truth.front()] == [(3, 3), (2, 2)]  # (1, 1) is cheapest but stopped
    assert eval_cache.get("fp", (1, 1)).below_floor == 0.68

    def score_all(genomes):
        return score_genomes(genomes, count_many, 2000, StoppingRule(None), 250)

    again = TrueEvaluations(score_all, energy, eval_cache, "fp", "r2", 10, 2000, floor=0.68, stop_floor=None)
    assert again.accuracy((1, 1), 0, "initial") == 0.1 and again.computed == 1
    assert again.accuracy((2, 2), 0, "initial") == 0.8 and again.cache_hits == 1
    assert eval_cache.get("fp", (1, 1)).below_floor is None
    assert [e.genome for e in again.front()] == [(1, 1), (2, 2)]


def test_outcome_accuracy_is_partial_when_stopped():
    o = Outcome(30, 250, 0.5, below_floor=0.68)
    assert o.stopped and o.accuracy == 0.12


# --------------------------------------------------------------------------- real evaluator


def test_evaluator_counts_add_up_over_any_split(evaluator):
    """Shards of the scoring order add up to the full count, whatever the split."""
    genome = (0, 1, 2, 3, 4)
    full, _ = evaluator.count(genome)
    n = evaluator.n_images
    assert full == round(evaluator.accuracy(genome) * n)
    for cuts in ([7], [1, 2, 19], list(range(1, n))):
        bounds = [0, *cuts, n]
        assert sum(evaluator.count(genome, lo, hi)[0] for lo, hi in zip(bounds[:-1], bounds[1:])) == full
    exact = (EXACT_INDEX,) * 5

    def count_many(tasks):
        return [evaluator.count(*t) for t in tasks]

    whole = score_genomes([genome, exact], count_many, n, StoppingRule(None), shard=3)
    assert [o.correct for o in whole] == [full, evaluator.count(exact)[0]] and all(o.n_images == n for o in whole)
    for o, g in zip(score_genomes([genome, exact], count_many, n, StoppingRule(0.99, looks=(5, 10)), shard=3),
                    [genome, exact]):
        if o.stopped:  # the tiny model is far below 99 %: the count of the images scored before the stop
            assert o.n_images in (5, 10) and o.correct == evaluator.count(g, 0, o.n_images)[0]
        else:
            assert o.n_images == n and o.correct == evaluator.count(g)[0]
