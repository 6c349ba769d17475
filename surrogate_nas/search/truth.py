"""The budget of true evaluations: every genome a search wants scored goes through here,
which counts it, keeps the archive and the true front, and stops at the budget."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from surrogate_nas.genome import genome_from_key
from surrogate_nas.search.pareto import LEGACY_HV_REFERENCE, hv_reference


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
    correct_bits: bytes | None = None  # which scored images were right (evaluation.bits); None: not recorded
    dominated_by: tuple[int, ...] | None = None  # racing stopped it: shown worse than this front point

    @property
    def stopped(self) -> bool:
        return self.below_floor is not None or self.dominated_by is not None

    @property
    def objectives(self) -> list[float]:
        """(1 - accuracy, energy) for the hypervolume; an early stop adds no volume."""
        return [1.0, 1.0] if self.stopped else [1.0 - self.accuracy, self.energy]


def pareto_front(evaluations) -> list[Evaluation]:
    """Non-dominated truly evaluated genomes, by energy (early-stopped ones never)."""
    evaluations = [e for e in evaluations if not e.stopped]
    if not evaluations:
        return []
    F = np.array([[1.0 - e.accuracy, e.energy] for e in evaluations])
    idx = NonDominatedSorting().do(F, only_non_dominated_front=True)
    return sorted((evaluations[i] for i in idx), key=lambda e: (e.energy, -e.accuracy))


class TrueEvaluations:
    """Budgeted, cached, archived true evaluations: the only source of reported results.

    `score_many(genomes) -> [Outcome]` computes accuracies (early stopping below
    `stop_floor` when it is set); the cache answers repeats across runs; the archive
    answers repeats within this run for free. Genomes are recorded in the order asked,
    whoever computed them, and each is committed to the cache as soon as it is known.
    """

    def __init__(self, score_many, energy_fn, cache, fingerprint: str, run_id: str, budget: int, n_images: int,
                 on_new=None, floor: float = 1.0 - LEGACY_HV_REFERENCE[0], stop_floor: float | None = None,
                 group: int = 1, race: bool = False):
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
        self.race = race  # racing stops settle a genome (cache rows included)
        self._unpacked: dict = {}
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
        cached = {k: r for k, r in self.cache.get_many(self.fingerprint, keys).items()
                  if r.answers(self.stop_floor, self.race)}
        misses = [k for k in keys if k not in cached]
        outcomes = dict(zip(misses, self.score_many(misses))) if misses else {}
        hits = []
        for key in keys:
            if key in outcomes:
                o = outcomes[key]
                # First writer wins: another process may have stored this genome meanwhile.
                record = self.cache.put(self.fingerprint, key, o.accuracy, self.energy_fn(key), o.n_images, o.seconds,
                                        self.run_id, o.below_floor, getattr(o, "bits", None),
                                        getattr(o, "dominated_by", None))
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
                                    float(record.seconds or 0.0), why[key], record.n_images, record.below_floor,
                                    getattr(record, "correct_bits", None),
                                    None if getattr(record, "dominated_by", None) is None
                                    else genome_from_key(record.dominated_by))
            self.archive[key] = evaluation
            self.on_new(evaluation)
        self.cache.record_hits(self.fingerprint, hits, self.run_id)

    def rivals(self, genome) -> list[tuple[tuple[int, ...], np.ndarray]]:
        """What racing compares `genome` with: the current front points of lower or equal
        energy that have per-image records of the whole search set (cheapest first)."""
        energy = float(self.energy_fn(tuple(genome)))
        out = []
        for e in self.front():
            if e.energy <= energy and e.correct_bits is not None and e.n_images == self.n_images:
                if e.genome not in self._unpacked:  # bits.unpack_correct's format
                    self._unpacked[e.genome] = np.unpackbits(np.frombuffer(e.correct_bits, np.uint8),
                                                             count=self.n_images, bitorder="little").astype(bool)
                out.append((e.genome, self._unpacked[e.genome]))
        return out

    def front(self) -> list[Evaluation]:
        return pareto_front(self.archive.values())
