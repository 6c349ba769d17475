"""The NSGA-II operator settings change what the search proposes: crossover and mutation
probabilities and distribution indices, measured on real pymoo offspring (one generation
from a fixed random population)."""

import numpy as np
import pytest
from pymoo.core.termination import NoTermination

from surrogate_nas.search.config import SearchConfig
from surrogate_nas.search.problem import AssignmentProblem, make_algorithm

N_LAYERS, N_CHOICES = 5, 36


# every genome with genes at the two ends of the range: a gene of an offspring strictly
# inside (3, 32) was moved there by an operator, not copied from a parent
EXTREMES = [tuple(int(b) * (N_CHOICES - 1) for b in np.binary_repr(i, N_LAYERS)) for i in range(2**N_LAYERS)]


def one_generation(seed: int = 0, **settings) -> tuple[np.ndarray, np.ndarray]:
    """(parents, offspring) genomes of NSGA-II's first mating from EXTREMES."""
    config = SearchConfig(pop_size=len(EXTREMES), seed=seed, **settings)
    algorithm = make_algorithm(config, EXTREMES, n_offsprings=200)
    algorithm.setup(AssignmentProblem(N_LAYERS, N_CHOICES), termination=NoTermination(), seed=seed)
    pop = algorithm.ask()
    parents = np.asarray(pop.get("X")).round()
    pop.set("F", np.column_stack([parents.mean(axis=1) / N_CHOICES, 1 - parents.mean(axis=1) / N_CHOICES]))
    algorithm.tell(infills=pop)
    offspring = algorithm.ask()
    if offspring is None or len(offspring) == 0:
        return parents, np.zeros((0, N_LAYERS))
    return parents, np.asarray(offspring.get("X")).round()


def moved(parents: np.ndarray, offspring: np.ndarray) -> float:
    """Share of offspring genes an operator moved well inside the range (parents hold only 0 and 35)."""
    assert set(np.unique(parents)) == {0, N_CHOICES - 1}
    return float(np.mean((offspring > 3) & (offspring < N_CHOICES - 4))) if len(offspring) else 0.0


def test_no_crossover_and_no_mutation_propose_nothing_new():
    parents, offspring = one_generation(crossover_prob=0.0, mutation_prob=0.0)
    assert len(offspring) == 0  # copies of parents are duplicates, which NSGA-II drops


def test_every_offspring_is_a_legal_genome():
    _, offspring = one_generation()
    assert len(offspring) and offspring.min() >= 0 and offspring.max() <= N_CHOICES - 1
    assert np.all(offspring == offspring.round())


@pytest.mark.parametrize("seed", [0, 1])
def test_mutation_probability_and_eta_set_how_far_offspring_move(seed):
    rare = one_generation(seed, crossover_prob=0.0, mutation_prob=0.1, mutation_eta=3.0)
    often = one_generation(seed, crossover_prob=0.0, mutation_prob=0.9, mutation_eta=3.0)
    wide = one_generation(seed, crossover_prob=0.0, mutation_prob=0.5, mutation_eta=1.0)
    narrow = one_generation(seed, crossover_prob=0.0, mutation_prob=0.5, mutation_eta=60.0)
    assert moved(*often) > moved(*rare)
    assert moved(*wide) > 2 * moved(*narrow)


@pytest.mark.parametrize("seed", [0, 1])
def test_crossover_eta_sets_how_far_children_move(seed):
    wide = one_generation(seed, crossover_prob=1.0, crossover_eta=1.0, mutation_prob=0.0)
    narrow = one_generation(seed, crossover_prob=1.0, crossover_eta=60.0, mutation_prob=0.0)
    assert moved(*wide) > 2 * moved(*narrow)
