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

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.problem import Problem
from pymoo.core.sampling import Sampling
from pymoo.core.termination import NoTermination
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from surrogate_nas.compensation import CHOICES
from surrogate_nas.errors import UserError

# Hypervolume reference point before the accuracy floor (runs from before it record this
# one in config.json): accuracy 0.70 and the all-exact energy 1.0.
LEGACY_HV_REFERENCE = (0.30, 1.0)


def hv_reference(floor: float) -> tuple[float, float]:
    """Reference point in objective space (1 - accuracy, relative energy): the accuracy
    floor and the all-exact energy, so designs nobody would deploy (a chance-level network
    at zero energy) add nothing to the indicator, whatever the model."""
    return (1.0 - float(floor), 1.0)


@dataclass
class SearchConfig:
    """Everything that determines a run (written to config.json)."""

    mode: str = "full"
    budget: int = 300
    pop_size: int = 20
    generations: int | None = None
    crossover_prob: float = 1.0
    crossover_eta: float = 3.0
    mutation_prob: float = 0.5
    mutation_eta: float = 3.0
    seed: int = 0
    search_images: int = 2000
    test_images: int | None = None  # None = the full test set
    evaluate_test: bool = True  # re-score the final front on all validation images and the test set
    accuracy_floor: float | None = None  # below it a design is of no use; None: all-exact search-set accuracy - 15 pp
    early_stop: bool = True  # stop scoring a genome once it is shown below the floor
    rescore: str = "floor"  # re-score front points above the floor ("floor") or every one ("all")
    initial: str = "exact+random"  # full mode's initial population; "seed-set": surrogate mode's (ablation)
    compensation: str = "auto"
    approximate: str = "conv"  # the layers with a gene: conv, or conv+dense
    finetune_top: int = 0  # fine-tune this many validation-chosen points at the end
    # surrogate mode
    seed_fraction: float = 0.15
    offspring_factor: int = 10
    drift_every: int = 3
    drift_samples: int = 2

    def validate(self) -> None:
        def bad(flag: str, why: str):
            raise UserError(f"--{flag}: {why}")

        if self.mode not in ("full", "surrogate"):
            bad("mode", f"expected 'full' or 'surrogate', got {self.mode!r}")
        if self.budget < 1:
            bad("budget", f"must be a positive number of evaluations, got {self.budget}")
        if self.pop_size < 2:
            bad("pop-size", f"must be at least 2, got {self.pop_size}")
        if self.generations is not None and self.generations < 1:
            bad("generations", f"must be at least 1, got {self.generations}")
        for flag, value in (("crossover-prob", self.crossover_prob), ("mutation-prob", self.mutation_prob)):
            if not 0.0 <= value <= 1.0:
                bad(flag, f"must be a probability in [0, 1], got {value}")
        for flag, value in (("crossover-eta", self.crossover_eta), ("mutation-eta", self.mutation_eta)):
            if not 0 < value < float("inf"):
                bad(flag, f"must be > 0 and finite, got {value}")
        if self.seed < 0:
            bad("seed", f"must be >= 0, got {self.seed}")
        if self.search_images < 1:
            bad("search-images", f"must be positive, got {self.search_images}")
        if self.test_images is not None and self.test_images < 1:
            bad("test-images", f"must be positive (leave it out for the whole test set), got {self.test_images}")
        if not 0.0 < self.seed_fraction < 1.0:
            bad("seed-fraction", f"must be in (0, 1), got {self.seed_fraction}")
        if self.compensation not in CHOICES:
            bad("compensation", f"expected one of {', '.join(CHOICES)}, got {self.compensation!r}")
        if self.approximate not in ("conv", "conv+dense"):
            bad("approximate", f"expected one of conv, conv+dense, got {self.approximate!r}")
        if self.accuracy_floor is not None and not 0.0 <= self.accuracy_floor < 1.0:
            bad("accuracy-floor", f"must be an accuracy in [0, 1) such as 0.68, got {self.accuracy_floor}")
        if self.initial not in ("exact+random", "seed-set"):
            bad("initial", f"expected 'exact+random' or 'seed-set', got {self.initial!r}")
        if self.rescore not in ("floor", "all"):
            bad("rescore", f"expected 'floor' or 'all', got {self.rescore!r}")
        if self.finetune_top < 0:
            bad("finetune-top", f"must be >= 0, got {self.finetune_top}")
        if self.offspring_factor < 1:
            bad("offspring-factor", f"must be >= 1, got {self.offspring_factor}")
        if self.drift_every < 0 or self.drift_samples < 0:
            bad("drift_every/drift_samples", f"must be >= 0, got {self.drift_every}/{self.drift_samples}")

    def as_dict(self) -> dict:
        return asdict(self)


class BudgetExhausted(Exception):
    """The next genome would exceed the budget of distinct true evaluations."""


@dataclass
class Evaluation:
    genome: tuple[int, ...]
    accuracy: float  # on the images scored: all of the search set, or the part before an early stop
    energy: float
    from_cache: bool
    generation: int
    seconds: float
    reason: str  # why it was truly evaluated: "initial", "offspring", "seed", "screened", "drift"
    n_images: int | None = None
    below_floor: float | None = None  # early-stopped below this floor: never on a front

    @property
    def stopped(self) -> bool:
        return self.below_floor is not None

    @property
    def objectives(self) -> list[float]:
        """(1 - accuracy, energy) for the hypervolume; an early stop adds no volume."""
        return [1.0, 1.0] if self.stopped else [1.0 - self.accuracy, self.energy]


class TrueEvaluations:
    """Budgeted, cached, archived true evaluations: the only source of reported results.

    `score_many(genomes) -> [Outcome]` computes accuracies (early stopping below
    `stop_floor` when it is set); the cache answers repeats across runs; the archive
    answers repeats within this run for free. Genomes are recorded in the order asked,
    whoever computed them, and each is committed to the cache as soon as it is known.
    """

    def __init__(self, score_many, energy_fn, cache, fingerprint: str, run_id: str, budget: int, n_images: int,
                 on_new=None, floor: float = 1.0 - LEGACY_HV_REFERENCE[0], stop_floor: float | None = None,
                 group: int = 1):
        self.score_many = score_many
        self.n_images = n_images
        self.energy_fn = energy_fn
        self.cache = cache
        self.fingerprint = fingerprint
        self.run_id = run_id
        self.budget = budget
        self.floor = floor
        self.stop_floor = stop_floor
        self.group = max(1, group)  # genomes computed together (one per worker)
        self.archive: dict[tuple[int, ...], Evaluation] = {}
        self.on_new = on_new or (lambda evaluation: None)
        self.cache_hits = 0
        self.computed = 0

    @property
    def used(self) -> int:
        return len(self.archive)

    @property
    def left(self) -> int:
        return self.budget - self.used

    @property
    def reference(self) -> tuple[float, float]:
        return hv_reference(self.floor)

    def accuracy(self, genome, generation: int, reason: str) -> float:
        return self.evaluate([genome], generation, reason)[0]

    def evaluate(self, genomes, generation: int, reasons) -> list[float]:
        """Accuracies of `genomes` (in order); `reasons`: one for all, or one per genome.
        New genomes beyond the budget are not evaluated: those that fit are recorded, then
        BudgetExhausted is raised."""
        keys = [tuple(int(g) for g in genome) for genome in genomes]
        reasons = [reasons] * len(keys) if isinstance(reasons, str) else list(reasons)
        why: dict = {}
        for key, reason in zip(keys, reasons):
            if key not in self.archive:
                why.setdefault(key, reason)
        new = list(why)
        fits = new[: max(0, self.left)]
        for start in range(0, len(fits), self.group):
            self._record(fits[start:start + self.group], generation, why)
        if len(fits) < len(new):
            raise BudgetExhausted
        return [self.archive[k].accuracy for k in keys]

    def _record(self, keys, generation: int, why: dict) -> None:
        cached = {k: r for k, r in self.cache.get_many(self.fingerprint, keys).items() if r.answers(self.stop_floor)}
        misses = [k for k in keys if k not in cached]
        outcomes = dict(zip(misses, self.score_many(misses))) if misses else {}
        hits = []
        for key in keys:
            if key in outcomes:
                o = outcomes[key]
                # First writer wins: another process may have stored this genome meanwhile.
                record = self.cache.put(self.fingerprint, key, o.accuracy, self.energy_fn(key), o.n_images, o.seconds,
                                        self.run_id, o.below_floor)
                from_cache = False
            else:
                record = cached[key]
                # A row this run computed before it was interrupted still counts as computed.
                from_cache = record.run_id != self.run_id
            if from_cache:
                hits.append(key)
                self.cache_hits += 1
            else:
                self.computed += 1
            evaluation = Evaluation(key, float(record.accuracy), float(self.energy_fn(key)), from_cache, generation,
                                    float(record.seconds or 0.0), why[key], record.n_images, record.below_floor)
            self.archive[key] = evaluation
            self.on_new(evaluation)
        self.cache.record_hits(self.fingerprint, hits, self.run_id)

    def front(self) -> list[Evaluation]:
        """Non-dominated truly evaluated genomes, by energy (early-stopped ones never)."""
        evaluations = [e for e in self.archive.values() if not e.stopped]
        if not evaluations:
            return []
        F = np.array([[1.0 - e.accuracy, e.energy] for e in evaluations])
        idx = NonDominatedSorting().do(F, only_non_dominated_front=True)
        return sorted((evaluations[i] for i in idx), key=lambda e: (e.energy, -e.accuracy))


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
    """Initial population: the given genomes (e.g. all-exact) first, then random ones."""

    def __init__(self, fixed: list[tuple[int, ...]]):
        super().__init__()
        self.fixed = [tuple(g) for g in fixed]

    def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
        xl, xu = problem.bounds()
        rows = list(dict.fromkeys(self.fixed))[:n_samples]
        seen = set(rows)
        while len(rows) < n_samples:
            genome = tuple(int(random_state.integers(xl[k], xu[k] + 1)) for k in range(problem.n_var))
            if genome not in seen or len(seen) >= np.prod(xu - xl + 1):
                rows.append(genome)
                seen.add(genome)
        return np.array(rows, dtype=float)


def make_algorithm(config: SearchConfig, fixed: list[tuple[int, ...]], n_offsprings: int | None = None) -> NSGA2:
    return NSGA2(
        pop_size=config.pop_size,
        n_offsprings=n_offsprings,
        sampling=SeededSampling(fixed),
        crossover=SBX(prob=config.crossover_prob, prob_var=0.5, eta=config.crossover_eta, vtype=float, repair=RoundingRepair()),
        mutation=PM(prob=1.0, prob_var=config.mutation_prob, eta=config.mutation_eta, vtype=float, repair=RoundingRepair()),
        eliminate_duplicates=True,
    )


def hypervolume(points: np.ndarray, reference) -> float:
    """HV of (1 - accuracy, energy) points w.r.t. `reference` (see hv_reference)."""
    from pymoo.indicators.hv import HV

    points = np.asarray(points, dtype=float).reshape(-1, 2)
    inside = points[np.all(points < np.asarray(reference), axis=1)]
    if len(inside) == 0:
        return 0.0
    return float(HV(ref_point=np.asarray(reference, dtype=float))(inside))


STALL_GENERATIONS = 50  # generations without a new genome after which a search gives up


class SpaceWatch:
    """Ends a search that can find nothing new: every genome of a small search space is
    evaluated, or the population has produced no new genome for STALL_GENERATIONS
    generations (a tiny space nearly used up). Says which, in one line."""

    def __init__(self, truth: TrueEvaluations, n_choices: int, n_layers: int):
        self.truth = truth
        self.space = n_choices**n_layers
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
        if self.idle >= STALL_GENERATIONS:
            print(f"no new assignment in {STALL_GENERATIONS} generations ({self.truth.used} of the "
                  f"{self.space} assignments evaluated, budget {self.truth.budget}); ending the search")
            return True
        return False


def no_offspring(pop) -> bool:
    """pymoo's ask() gives None (or nothing) when duplicate elimination leaves no new offspring."""
    if pop is None or len(pop) == 0:
        print("the population can produce no new assignment; ending the search")
        return True
    return False


def run_full(config: SearchConfig, truth: TrueEvaluations, n_choices: int, exact_index: int, energy_batch,
             on_generation=None, *, n_layers: int, powers=None) -> int:
    """Plain NSGA-II: every offspring gets a true evaluation. Returns generations done.
    `config.initial` "seed-set" starts it like surrogate mode (seed set, then its best
    population) and differs from it only in the screening: the seeding ablation."""
    problem = AssignmentProblem(n_layers, n_choices)
    start = [(exact_index,) * n_layers]
    if config.initial == "seed-set":
        from surrogate_nas.surrogate_search import seed_population

        start = seed_population(config, truth, n_choices, exact_index, powers, energy_batch,
                                np.random.default_rng(config.seed), n_layers)
        if start is None:
            return 0
    algorithm = make_algorithm(config, start)
    algorithm.setup(problem, termination=NoTermination(), seed=config.seed)
    watch = SpaceWatch(truth, n_choices, n_layers)
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
