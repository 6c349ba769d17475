"""NSGA-II over layer-wise multiplier assignments (pymoo), with a budget of true evaluations.

Objectives (both minimised): 1 - accuracy on the search set, and relative energy.
Operators follow pymoo's recipe for integer problems: SBX and polynomial mutation on
floats with rounding repair, duplicate elimination. Parameter meanings follow the
original project (pymoo 0.4): `crossover_prob` is the probability that a mating
recombines, `mutation_prob` the per-gene mutation probability.

A run is a deterministic function of its configuration and the accuracies it is told,
and every finished evaluation is committed to the on-disk cache at once. Resuming a run
therefore replays it from the start: generations already done are answered from the
cache in milliseconds, the algorithm state is rebuilt exactly, and the run continues
where it stopped, ending with the same front as an uninterrupted run.
"""

from __future__ import annotations

import numpy as np
from pymoo.core.termination import NoTermination

from surrogate_nas.search.config import SearchConfig
from surrogate_nas.search.distinct import CircuitLimit
from surrogate_nas.search.problem import (
    AssignmentProblem,
    SpaceWatch,
    make_algorithm,
    no_offspring,
)
from surrogate_nas.search.truth import BudgetExhausted, TrueEvaluations


def run_full(config: SearchConfig, truth: TrueEvaluations, n_choices: int, exact_index: int, energy_batch,
             on_generation=None, *, n_layers: int, powers=None, limit: CircuitLimit | None = None) -> int:
    """Plain NSGA-II: every offspring gets a true evaluation. Returns generations done.
    `config.initial` "seed-set" starts it like surrogate mode (seed set, then its best
    population) and differs from it only in the screening: the seeding ablation.
    `limit`: every genome it asks for is repaired to at most K distinct circuits."""
    problem = AssignmentProblem(n_layers, n_choices)
    start = [(exact_index,) * n_layers]
    if config.initial == "seed-set":
        from surrogate_nas.search.seeding import seed_population

        start = seed_population(config, truth, n_choices, exact_index, powers, energy_batch,
                                np.random.default_rng(config.seed), n_layers, limit)
        if start is None:
            return 0
    algorithm = make_algorithm(config, start, limit=limit)
    algorithm.setup(problem, termination=NoTermination(), seed=config.seed)
    watch = SpaceWatch(truth, n_choices, n_layers, config.stall_generations, limit)
    generation = 0
    while config.generations is None or generation < config.generations:
        pop = algorithm.ask()
        if no_offspring(pop):
            break
        X = np.asarray(pop.get("X")).round().astype(np.int64)
        try:
            accuracies = truth.evaluate(X, generation, "initial" if generation == 0 else "offspring")
        except BudgetExhausted:
            break
        pop.set("F", np.column_stack([1.0 - np.array(accuracies), energy_batch(X)]))
        algorithm.tell(infills=pop)
        generation += 1
        if on_generation:
            on_generation(generation)
        if truth.left <= 0 or watch.done():
            break
    return generation
