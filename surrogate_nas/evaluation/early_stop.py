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
counts add up exactly because each shard is always the same single predict call. A shard
comes back as a boolean vector (image right?), and an outcome keeps them all as packed
bits (`bits.pack_correct`, in the scoring order), whose popcount is its count.

Pareto racing (`race`): at the same looks, a genome is also compared with the search's
current front points of lower or equal energy (`rivals`), on the same images, paired:
an exact one-sided sign test on the images where exactly one of the two is right. It
stops once it is shown worse than one of them, at level (1 - confidence) split over the
looks and the rivals (Bonferroni). Such a genome cannot join the front: it is treated
like a floor stop (counted, cached as partial, never on a front, partial accuracy to the
search), with the rival it lost to recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import beta, binom

from surrogate_nas.evaluation.bits import pack_correct, popcount

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
    race: bool = False  # also stop a genome shown worse than a cheaper front point (Pareto racing)

    def stages(self, n_images: int) -> list[tuple[int, int]]:
        """Image ranges scored between looks (one range when stopping is off)."""
        looking = self.floor is not None or self.race
        bounds = [0] + ([k for k in self.looks if k < n_images] if looking else []) + [n_images]
        return list(zip(bounds[:-1], bounds[1:]))

    def below(self, correct: int, n: int, n_images: int) -> bool:
        """After n of n_images images with `correct` right: is the whole-set accuracy
        shown to be below the floor?"""
        looks = len(self.stages(n_images)) - 1
        if self.floor is None or n >= n_images or looks == 0:
            return False
        return upper_bound(correct, n, (1.0 - self.confidence) / looks) < self.floor

    def lost_to(self, right: np.ndarray, rivals, n_images: int):
        """Key of the first rival that the first len(right) images show better than this
        genome (see `lost_race`), or None; `rivals`: [(key, per image right?)]."""
        looks = len(self.stages(n_images)) - 1
        if not self.race or not rivals or len(right) >= n_images or looks == 0:
            return None
        return lost_race(right, rivals, (1.0 - self.confidence) / (looks * len(rivals)))


def lost_race(right, rivals, alpha: float):
    """The first rival (key, per-image right? on at least the same images) that `right` is
    shown worse than: b images only the rival gets right, c only this genome; exact
    one-sided sign test, P(X >= b | X ~ Binomial(b + c, 1/2)) < alpha. None: no such rival."""
    right = np.asarray(right, bool)
    for key, rival in rivals:
        rival = np.asarray(rival, bool)[:len(right)]
        b, c = int(np.sum(rival & ~right)), int(np.sum(~rival & right))
        if b > c and binom.sf(b - 1, b + c, 0.5) < alpha:
            return key
    return None


@dataclass(frozen=True)
class Outcome:
    """What a true evaluation found: all images scored, or stopped below a floor."""

    correct: int
    n_images: int  # images scored
    seconds: float
    below_floor: float | None = None  # the floor a stop proved the accuracy below; None: complete
    bits: bytes | None = None  # pack_correct of the n_images scored images; None: only counted
    dominated_by: tuple[int, ...] | None = None  # racing stopped it: shown worse than this front point

    def __post_init__(self):
        if self.bits is not None and popcount(self.bits) != self.correct:
            raise ValueError(f"outcome: {popcount(self.bits)} images right in its bits, count says {self.correct}")

    @property
    def accuracy(self) -> float:
        return self.correct / max(1, self.n_images)

    @property
    def stopped(self) -> bool:
        return self.below_floor is not None or self.dominated_by is not None


def score_genomes(genomes, count_many, n_images: int, rule: StoppingRule, shard: int, rivals=None) -> list[Outcome]:
    """Score several genomes stage by stage; `count_many(tasks)` maps (genome, start, stop)
    shards to (right, seconds) in order, serially or on workers; `right` is the boolean
    vector of the shard's images (the outcome then has its bits) or just their count.
    All live genomes' shards of a stage go out together, so workers stay busy even for a
    few genomes. `rivals(genome)`: the front points it races against when `rule.race`
    ([(key, per image right?)], asked at each look)."""
    genomes = [tuple(int(v) for v in g) for g in genomes]
    correct = [0] * len(genomes)
    scored = [0] * len(genomes)
    seconds = [0.0] * len(genomes)
    stopped = [False] * len(genomes)
    masks: list[list | None] = [[] for _ in genomes]  # per genome its shards' vectors, in image order
    lost: list = [None] * len(genomes)
    for start, stop in rule.stages(n_images):
        live = [i for i in range(len(genomes)) if not stopped[i]]
        if not live:
            break
        tasks = [(i, lo, min(stop, lo + shard)) for i in live for lo in range(start, stop, shard)]
        results = count_many([(genomes[i], lo, hi) for i, lo, hi in tasks])
        for (i, lo, hi), (right, secs) in zip(tasks, results):
            if np.ndim(right) == 0:  # a count only
                correct[i] += int(right)
                masks[i] = None
            else:
                right = np.asarray(right, dtype=bool)
                if right.shape != (hi - lo,):
                    raise ValueError(f"shard [{lo}, {hi}) came back with {right.shape} results")
                correct[i] += int(right.sum())
                if masks[i] is not None:
                    masks[i].append(right)
            scored[i] += hi - lo
            seconds[i] += float(secs)
        for i in live:
            stopped[i] = rule.below(correct[i], stop, n_images)
            if not stopped[i] and rule.race and rivals is not None and masks[i] is not None and stop < n_images:
                lost[i] = rule.lost_to(np.concatenate(masks[i]), rivals(genomes[i]), n_images)
                stopped[i] = lost[i] is not None
    return [Outcome(c, n, s, rule.floor if stop and by is None else None,
                    None if m is None else pack_correct(np.concatenate(m) if m else np.zeros(0, bool)),
                    None if by is None else tuple(int(v) for v in by))
            for c, n, s, stop, m, by in zip(correct, scored, seconds, stopped, masks, lost)]
