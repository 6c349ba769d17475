"""The pymoo pieces: the integer assignment problem, seeded sampling, the NSGA-II
algorithm with SBX/PM on rounded genes, and a watch that ends a search whose offspring
are all known."""

from __future__ import annotations

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.problem import Problem
from pymoo.core.sampling import Sampling
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair

from surrogate_nas.search.config import SearchConfig
from surrogate_nas.search.distinct import CircuitLimit, DistinctRepair, space_size
from surrogate_nas.search.truth import TrueEvaluations


class AssignmentProblem(Problem):
    """The search space: one integer gene per approximable layer; objectives 1 - accuracy and
    relative energy. The searches score genomes themselves and tell pymoo the objectives
    (true accuracies, or in surrogate mode predictions for unevaluated offspring), so the
    problem never evaluates anything."""

    def __init__(self, n_layers: int, n_choices: int):
        super().__init__(n_var=n_layers, n_obj=2, xl=0, xu=n_choices - 1, vtype=int)

    def _evaluate(self, X, out, *args, **kwargs):
        raise RuntimeError("AssignmentProblem does not evaluate: the search tells the algorithm the objectives")


class SeededSampling(Sampling):
    """Initial population: the given genomes (e.g. all-exact) first, then random ones
    (repaired to `limit`, when there is one)."""

    def __init__(self, fixed: list[tuple[int, ...]], limit: CircuitLimit | None = None):
        super().__init__()
        self.limit = limit
        self.fixed = [tuple(g) if limit is None else limit.repair_one(g) for g in fixed]

    def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
        xl, xu = problem.bounds()
        rows = list(dict.fromkeys(self.fixed))[:n_samples]
        seen = set(rows)
        space = np.prod(xu - xl + 1) if self.limit is None else self.limit.space()
        while len(rows) < n_samples:
            genome = tuple(int(random_state.integers(xl[k], xu[k] + 1)) for k in range(problem.n_var))
            if self.limit is not None:
                genome = self.limit.repair_one(genome)
            if genome not in seen or len(seen) >= space:
                rows.append(genome)
                seen.add(genome)
        return np.array(rows, dtype=float)


def make_algorithm(config: SearchConfig, fixed: list[tuple[int, ...]], n_offsprings: int | None = None,
                   limit: CircuitLimit | None = None) -> NSGA2:
    """`limit`: pymoo repairs the initial population and every offspring of crossover and
    mutation to it (before duplicate elimination); None leaves NSGA-II as it was."""
    repair = {} if limit is None else {"repair": DistinctRepair(limit)}
    return NSGA2(
        pop_size=config.pop_size,
        n_offsprings=n_offsprings,
        sampling=SeededSampling(fixed, limit),
        crossover=SBX(prob=config.crossover_prob, prob_var=config.sbx_prob_var, eta=config.crossover_eta, vtype=float, repair=RoundingRepair()),
        mutation=PM(prob=1.0, prob_var=config.mutation_prob, eta=config.mutation_eta, vtype=float, repair=RoundingRepair()),
        eliminate_duplicates=True,
        **repair,
    )


class SpaceWatch:
    """Ends a search that can find nothing new: every genome of a small search space is
    evaluated, or the population has produced no new genome for `stall`
    generations (a tiny space nearly used up). Says which, in one line. With a `limit`,
    the space is its feasible genomes."""

    def __init__(self, truth: TrueEvaluations, n_choices: int, n_layers: int, stall: int = 50,
                 limit: CircuitLimit | None = None):
        self.truth = truth
        self.stall = stall
        self.space = space_size(n_choices, n_layers, limit)
        self.last_used = truth.used
        self.idle = 0

    @property
    def exhausted(self) -> bool:
        return self.truth.used >= self.space

    def say_exhausted(self) -> None:
        print(f"search space exhausted: all {self.space} assignments are evaluated "
              f"(budget {self.truth.budget}); ending the search")

    def done(self) -> bool:
        """Call once per generation."""
        if self.truth.used > self.last_used:
            self.last_used, self.idle = self.truth.used, 0
        else:
            self.idle += 1
        if self.exhausted:
            self.say_exhausted()
            return True
        if self.idle >= self.stall:
            print(f"no new assignment in {self.stall} generations ({self.truth.used} of the "
                  f"{self.space} assignments evaluated, budget {self.truth.budget}); ending the search")
            return True
        return False


def no_offspring(pop) -> bool:
    """pymoo's ask() gives None (or nothing) when duplicate elimination leaves no new offspring."""
    if pop is None or len(pop) == 0:
        print("the population can produce no new assignment; ending the search")
        return True
    return False
