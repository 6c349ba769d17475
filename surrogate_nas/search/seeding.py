"""The seed set of a search: all-exact, uniform genomes and random ones spread over
energy, so that the first front and the surrogate's first fit cover the whole range."""

from __future__ import annotations

import numpy as np
from pymoo.algorithms.moo.nsga2 import RankAndCrowding
from pymoo.core.population import Population

from surrogate_nas.search.config import SearchConfig
from surrogate_nas.search.distinct import CircuitLimit, all_genomes, space_size
from surrogate_nas.search.problem import AssignmentProblem, SpaceWatch
from surrogate_nas.search.truth import BudgetExhausted, TrueEvaluations


def seed_genomes(n_seed: int, n_choices: int, exact_index: int, powers: np.ndarray, rng: np.random.Generator,
                 n_layers: int, limit: CircuitLimit | None = None) -> list[tuple[int, ...]]:
    """All-exact, then uniform genomes (one circuit everywhere) spread over the power
    range, then a Latin-hypercube sample over the circuits of each layer (each row
    repaired to `limit`, when there is one). A space with fewer genomes than `n_seed`
    gives all of them."""
    n_seed = min(n_seed, space_size(n_choices, n_layers, limit))
    genomes = [(exact_index,) * n_layers]
    uniform_budget = min(n_choices - 1, max(0, (2 * n_seed) // 3 - 1))
    by_power = [int(i) for i in np.argsort(powers) if i != exact_index]
    picks = np.unique(np.linspace(0, len(by_power) - 1, uniform_budget).round().astype(int)) if uniform_budget else []
    genomes += [(by_power[i],) * n_layers for i in picks]
    blocks = 0
    while len(genomes) < n_seed and blocks < 1000:
        block = np.column_stack([rng.permutation(n_choices) for _ in range(n_layers)])
        for row in block:
            genome = tuple(int(g) for g in row) if limit is None else limit.repair_one(row)
            if genome not in genomes and len(genomes) < n_seed:
                genomes.append(genome)
        blocks += 1
    if len(genomes) < n_seed:  # a small space nearly used up: the rest of it, in random order
        seen = set(genomes)
        rest = [g for g in all_genomes(n_choices, n_layers, limit) if g not in seen]
        genomes += [rest[i] for i in rng.permutation(len(rest))[: n_seed - len(genomes)]]
    return genomes[:n_seed]


def seed_population(config: SearchConfig, truth: TrueEvaluations, n_choices: int, exact_index: int, powers,
                    energy_batch, rng: np.random.Generator, n_layers: int,
                    limit: CircuitLimit | None = None) -> list[tuple[int, ...]] | None:
    """Truly evaluate the seed set (`seed_fraction` of the budget, at least a population)
    and return its best `pop_size` genomes by rank and crowding: the initial population.
    None when the budget or the (feasible) search space ends first (said in one line)."""
    seeds = seed_genomes(config.n_seed, n_choices, exact_index, powers, rng, n_layers, limit)
    try:
        truth.evaluate(seeds, 0, "seed")
    except BudgetExhausted:
        return None
    watch = SpaceWatch(truth, n_choices, n_layers, config.stall_generations, limit)
    if watch.exhausted:
        watch.say_exhausted()
        return None
    genomes = np.array(list(truth.archive.keys()))
    seed_pop = Population.new("X", genomes.astype(float))
    seed_pop.set("F", np.column_stack([1.0 - np.array([e.accuracy for e in truth.archive.values()]),
                                       energy_batch(genomes)]))
    survivors = RankAndCrowding().do(AssignmentProblem(n_layers, n_choices), seed_pop, n_survive=config.pop_size,
                                     random_state=rng)
    return [tuple(int(v) for v in x) for x in np.asarray(survivors.get("X")).round()]
