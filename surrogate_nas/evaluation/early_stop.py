"""Early stopping of hopeless true evaluations.

A design below the accuracy floor is of no use to anyone, yet about half of the genomes
a search proposes are near chance and each cost as much as a good one. A true evaluation
therefore scores its images in a fixed random order (the evaluator's scoring order) in
stages, and at a few looks asks: is the accuracy on the *whole* search set below the
floor, with one-sided confidence `confidence`? The bound is Clopper-Pearson's exact
binomial upper bound on the images scored so far. They are a uniformly random subset
drawn without replacement from the search set, which concentrates at least as tightly as
drawing with replacement (Hoeffding 1963, Theorem 4): the binomial bound is the cautious
choice. The confidence is split over the looks
(Bonferroni), so a design at or above the floor is stopped with probability at most
1 - confidence over the whole evaluation.

A stopped evaluation is still a true evaluation: it counts against the budget, is stored
in the cache as "below `floor` after n images" with its partial accuracy, and never
enters a front. The search is told the partial accuracy: an unbiased estimate of the
full one from >= 250 random images (+-3 pp), which keeps the ordering among poor designs
(chance vs. half-working) that NSGA-II's selection and the surrogate's regression learn
from; a constant "floor minus margin" would flatten that landscape into a plateau.

Work is split into shards of `evaluate.CHUNK` images, the unit a worker scores. Correct
counts add up exactly because each shard is always the same single predict call.
"""

from __future__ import annotations

from dataclasses import dataclass

from scipy.stats import beta

LOOKS = (250, 500, 1000)  # images after which an evaluation may stop (SearchConfig.early_stop_looks)
CONFIDENCE = 0.999  # SearchConfig.early_stop_confidence


def upper_bound(correct: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound on a success probability."""
    if correct >= n:
        return 1.0
    return float(beta.ppf(1.0 - alpha, correct + 1, n - correct))


@dataclass(frozen=True)
class StoppingRule:
    """When to stop scoring a genome; `floor` None scores every image."""

    floor: float | None
    confidence: float = CONFIDENCE
    looks: tuple[int, ...] = LOOKS

    def stages(self, n_images: int) -> list[tuple[int, int]]:
        """Image ranges scored between looks (one range when stopping is off)."""
        bounds = [0] + ([k for k in self.looks if k < n_images] if self.floor is not None else []) + [n_images]
        return list(zip(bounds[:-1], bounds[1:]))

    def below(self, correct: int, n: int, n_images: int) -> bool:
        """After n of n_images images with `correct` right: is the whole-set accuracy
        shown to be below the floor?"""
        looks = len(self.stages(n_images)) - 1
        if self.floor is None or n >= n_images or looks == 0:
            return False
        return upper_bound(correct, n, (1.0 - self.confidence) / looks) < self.floor


@dataclass(frozen=True)
class Outcome:
    """What a true evaluation found: all images scored, or stopped below a floor."""

    correct: int
    n_images: int  # images scored
    seconds: float
    below_floor: float | None = None  # the floor a stop proved the accuracy below; None: complete

    @property
    def accuracy(self) -> float:
        return self.correct / max(1, self.n_images)

    @property
    def stopped(self) -> bool:
        return self.below_floor is not None


def score_genomes(genomes, count_many, n_images: int, rule: StoppingRule, shard: int) -> list[Outcome]:
    """Score several genomes stage by stage; `count_many(tasks)` maps (genome, start, stop)
    shards to (correct, seconds) in order, serially or on workers. All live genomes'
    shards of a stage go out together, so workers stay busy even for a few genomes."""
    genomes = [tuple(int(v) for v in g) for g in genomes]
    correct = [0] * len(genomes)
    scored = [0] * len(genomes)
    seconds = [0.0] * len(genomes)
    stopped = [False] * len(genomes)
    for start, stop in rule.stages(n_images):
        live = [i for i in range(len(genomes)) if not stopped[i]]
        if not live:
            break
        tasks = [(i, lo, min(stop, lo + shard)) for i in live for lo in range(start, stop, shard)]
        results = count_many([(genomes[i], lo, hi) for i, lo, hi in tasks])
        for (i, lo, hi), (right, secs) in zip(tasks, results):
            correct[i] += int(right)
            scored[i] += hi - lo
            seconds[i] += float(secs)
        for i in live:
            stopped[i] = rule.below(correct[i], stop, n_images)
    return [Outcome(c, n, s, rule.floor if stop else None) for c, n, s, stop in zip(correct, scored, seconds, stopped)]
