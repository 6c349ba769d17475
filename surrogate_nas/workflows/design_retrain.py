"""`design`'s retraining: candidates chosen by a rule, raced within a budget of epochs (the
same decisions on every machine; a wall-clock cap may be added), several seeds, and a
greedy soup of each candidate's retrainings.

Image roles (as in `workflows.retrain`): training images train; the tuning images (the
search set) pick each retraining's best epoch, decide the race and the soup; the choosing
images are never read here.

The race: every candidate gets its first epoch (seed 0); a candidate is then dropped when
another one saves at least as much energy and is more accurate on the tuning images at its
best so far (epoch 0 or 1), or when it is more than `catch_up_pp` below the all-exact network there
(what later epochs recover is far less). The budget then goes to the tolerances, tightest
first: for each one, the highest-saving survivor that can still get within it (its loss
after epoch 1 at most the tolerance plus `RECOVERY_PP`) finishes every seed, so it becomes
a soup; the other survivors follow, highest saving first. The saving at a tolerance comes
from the cheapest design that gets within it, and a soup of seeds is what gets a retrained
design that far (a single retraining rarely does).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

CATCH_UP_PP = 4.0  # a candidate this far below all-exact on the tuning images after epoch 1 is dropped
SAVING_TARGETS = tuple(range(40, 75, 5))  # percent: where candidates are taken
TOLERANCES_PP = (0.5, 1.0, 2.0)  # the choice's tolerances: each gets a candidate of its own, tightest first
# What the rest of a retraining and a soup of three seeds add to a design's best tuning accuracy
# after epoch 1: the 57 % design of experiments/input-range went from 81.35 % to 82.75 % (soup3).
RECOVERY_PP = 1.5


@dataclass
class Candidate:
    key: str  # "c<k>": its folder names
    genome: tuple[int, ...]
    saving_pct: float
    source: str  # "front" or "quiet"
    search_accuracy: float | None = None


def choose_candidates(front: list[dict], quiet: list[tuple[int, ...]], energy, targets=SAVING_TARGETS,
                      limit: int | None = None) -> list[Candidate]:
    """At each saving target t (percent): the most accurate front point (search set) saving
    between t and t + 5 %, and the design adding the least output noise at t (`quiet`, one
    per target, no labels used). Duplicates once. Front points come first, since their
    accuracy is measured; quiet designs fill what `limit` leaves, and more than `limit` of
    either kind are thinned evenly over the savings (each tolerance needs its own)."""
    picked: dict[tuple, Candidate] = {}
    for t in targets:
        inside = [p for p in front if t <= 100 * (1 - p["energy"]) < t + 5]
        if inside:
            best = max(inside, key=lambda p: (p["accuracy"], -p["energy"]))
            picked.setdefault(tuple(best["genome"]), Candidate("", tuple(best["genome"]),
                                                               100 * (1 - best["energy"]), "front", best["accuracy"]))
    fronts = list(picked.values())
    quiets = [Candidate("", tuple(g), 100 * (1 - energy(g)), "quiet") for g in dict.fromkeys(map(tuple, quiet))
              if tuple(g) not in picked]
    room = None if limit is None else max(0, limit - len(fronts))
    chosen = _spread(fronts, limit) + _spread(quiets, room)
    ordered = sorted(chosen, key=lambda c: (-c.saving_pct, c.genome))
    return [replace(c, key=f"c{k}") for k, c in enumerate(ordered, start=1)]


def _spread(candidates: list[Candidate], limit: int | None) -> list[Candidate]:
    """At most `limit` of `candidates`, evenly spread over their savings."""
    ordered = sorted(candidates, key=lambda c: (-c.saving_pct, c.genome))
    if limit is None or len(ordered) <= limit:
        return ordered
    if limit <= 0:
        return []
    return [ordered[i] for i in sorted({int(round(k * (len(ordered) - 1) / max(1, limit - 1))) for k in range(limit)})]


class Retrainer:
    """Runs (and resumes) retrainings of candidates on one private evaluator: before each
    call the network gets back the un-tuned weights, and `retrain` continues from the
    candidate's checkpoint folder."""

    def __init__(self, evaluator, splits, recipe, calibration, teacher_cache: Path, folder: Path, quiet: bool):
        from surrogate_nas.workflows.retrain import _get

        self.ev, self.splits, self.recipe, self.calibration = evaluator, splits, recipe, calibration
        self.teacher_cache, self.folder, self.quiet = teacher_cache, Path(folder), quiet
        self.untuned = _get(evaluator.model.trainable_variables)

    def workdir(self, candidate: Candidate, seed: int) -> Path:
        return self.folder / f"{candidate.key}-s{seed}.work"

    def history(self, candidate: Candidate, seed: int) -> list[dict]:
        path = self.workdir(candidate, seed) / "history.json"
        return json.loads(path.read_text())["history"] if path.is_file() else []

    def train(self, candidate: Candidate, seed: int, until: int) -> list[dict]:
        """Epochs up to `until` (resumed from the checkpoint); returns the history."""
        from surrogate_nas.workflows.retrain import restore_untuned, retrain

        restore_untuned(self.ev, candidate.genome, self.untuned)
        retrain(self.ev, candidate.genome, self.splits, self.recipe, self.workdir(candidate, seed),
                calibration=None, teacher_cache=self.teacher_cache, seed=seed, verbose=0, quiet=True, until=until,
                refit=False)
        return self.history(candidate, seed)

    def best_weights(self, candidate: Candidate, seed: int) -> list[np.ndarray]:
        """The retraining's best epoch on the tuning images so far."""
        with np.load(self.workdir(candidate, seed) / "best.npz") as z:
            return [z[f"w_v{i}"] for i in range(len(self.untuned))]


def race(retrainer: Retrainer, candidates: list[Candidate], exact_tuning: float, seeds: int, deadline: float,
         epoch_seconds: float | None, bar=None, catch_up_pp: float = CATCH_UP_PP, max_epochs: int | None = None) -> dict:
    """The race within `max_epochs` epochs over all retrainings (the same on every machine)
    and `deadline` (time.time(); inf: none); returns {key: {"seeds": [finished seeds],
    "dropped": why or None, "histories": {seed: history}}}. Work already done (checkpoints)
    is reused and counted where an uninterrupted race would have spent it, so a resumed
    race continues where it stopped and makes the same decisions."""
    epochs = retrainer.recipe.epochs
    state = {c.key: {"dropped": None, "histories": {}} for c in candidates}
    timing = {"epoch": epoch_seconds}
    budget = {"used": 0, "counted": {}}

    def run(c: Candidate, seed: int, until: int) -> bool:
        done = max(0, len(retrainer.history(c, seed)) - 1)
        counted = budget["counted"].get((c.key, seed), 0)
        budget["used"] += max(0, min(done, until) - counted)  # finished earlier: counted here, in race order
        budget["counted"][(c.key, seed)] = max(counted, min(done, until))
        if done >= until:
            state[c.key]["histories"][seed] = retrainer.history(c, seed)
            return True
        need = until - done
        if max_epochs is not None and budget["used"] + need > max_epochs:
            return False
        if time.time() + need * (timing["epoch"] or 0) > deadline:
            return False
        began = time.time()
        history = retrainer.train(c, seed, until)
        timing["epoch"] = (time.time() - began) / need
        budget["used"] += need
        budget["counted"][(c.key, seed)] = until
        state[c.key]["histories"][seed] = history
        if bar is not None:
            bar.update(need)
        return True

    # round 1: one epoch each, seed 0
    alive = [c for c in candidates if run(c, 0, 1)]
    for c in candidates:
        if c not in alive:
            state[c.key]["dropped"] = "no budget left for its first epoch"
    # the best so far (epoch 0 is the un-tuned design): what the best-epoch selection would keep
    # now; a first epoch at the peak learning rate often dips below an already good design
    after1 = {c.key: max(h["tune_accuracy"] for h in state[c.key]["histories"][0][:2]) for c in alive}
    for c in alive:
        if 100 * (exact_tuning - after1[c.key]) > catch_up_pp:
            state[c.key]["dropped"] = f"more than {catch_up_pp:g} pp below all-exact on the tuning images by epoch 1"
        rival = next((o for o in alive if o is not c and o.saving_pct >= c.saving_pct and after1[o.key] > after1[c.key]),
                     None)
        if rival is not None and state[c.key]["dropped"] is None:
            state[c.key]["dropped"] = f"{rival.key} saves as much and is more accurate by epoch 1"
    alive = [c for c in alive if state[c.key]["dropped"] is None]
    for c, tolerance in serve_tolerances(alive, {k: 100 * (exact_tuning - a) for k, a in after1.items()}):
        state[c.key]["serves_pp"] = tolerance
        for seed in range(seeds):
            if not run(c, seed, epochs):
                break  # a later seed would soup with an unfinished one
    for c in candidates:
        hist = state[c.key]["histories"]
        state[c.key]["seeds"] = sorted(s for s, h in hist.items() if len(h) - 1 >= epochs)
    return {"candidates": state, "epoch_seconds": timing["epoch"], "epochs_used": budget["used"]}


def serve_tolerances(alive: list[Candidate], loss_after1_pp: dict[str, float],
                     tolerances=TOLERANCES_PP, recovery_pp: float = RECOVERY_PP) -> list[tuple[Candidate, float | None]]:
    """The order in which survivors get their seeds, each with the tolerance it serves: for
    each tolerance, tightest first, the highest-saving survivor whose loss after epoch 1
    (tuning images) is at most the tolerance plus `recovery_pp` and that saves more than those
    already taken (a design within a tighter tolerance is within the looser ones too); then the
    rest (None), highest saving first."""
    order: dict[str, tuple[Candidate, float | None]] = {}
    for tol in tolerances:
        floor = max((c.saving_pct for c, _ in order.values()), default=-1.0)
        fits = [c for c in alive if c.saving_pct > floor and loss_after1_pp[c.key] <= tol + recovery_pp]
        if fits:
            best = max(fits, key=lambda c: (c.saving_pct, -loss_after1_pp[c.key]))
            order[best.key] = (best, tol)
    rest = sorted((c for c in alive if c.key not in order), key=lambda c: -c.saving_pct)
    return list(order.values()) + [(c, None) for c in rest]


def soup_candidate(retrainer: Retrainer, candidate: Candidate, seeds: list[int]) -> dict:
    """The candidate's network: its one finished retraining, or the greedy soup of several
    (tuning images), with the compensation re-fitted when that lowers the calibration loss.
    Leaves the evaluator holding it."""
    from surrogate_nas.workflows.soup import greedy_soup, install

    sets = [retrainer.best_weights(candidate, s) for s in seeds]
    if len(sets) == 1:
        refit = install(retrainer.ev, candidate.genome, sets[0], retrainer.calibration)
        return {"seeds": seeds, "added": seeds, "tuning_accuracy": retrainer.ev.accuracy(candidate.genome),
                "compensation_refit": refit}
    soup = greedy_soup(retrainer.ev, candidate.genome, sets, retrainer.calibration, quiet=True)
    return {"seeds": seeds, "added": [seeds[i] for i in soup["added"]], "tuning_accuracy": soup["tuning_accuracy"],
            "own_tuning_accuracy": soup["own_accuracy"], "compensation_refit": soup["compensation_refit"]}
