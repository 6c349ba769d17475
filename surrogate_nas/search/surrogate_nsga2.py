"""Surrogate-assisted NSGA-II: many offspring per generation, the surrogate pre-screens
them, and only the most promising (plus a few random ones, against drift) get a true
evaluation. Offspring without one carry predicted accuracies inside the population but
are never reported: the front is built from true evaluations only."""

from __future__ import annotations

import numpy as np
from pymoo.core.termination import NoTermination

from surrogate_nas.search.config import SearchConfig
from surrogate_nas.search.distinct import CircuitLimit
from surrogate_nas.search.pareto import hypervolume
from surrogate_nas.search.problem import (
    AssignmentProblem,
    SpaceWatch,
    make_algorithm,
    no_offspring,
)
from surrogate_nas.search.seeding import seed_population
from surrogate_nas.search.surrogate import (
    AccuracySurrogate,
    prediction_quality,
    select_kind,
)
from surrogate_nas.search.truth import BudgetExhausted, TrueEvaluations


def pick_for_truth(mu, sigma, energies, front_points, k, reference, kappa: float = 1.0) -> list[int]:
    """Greedy expected-hypervolume-improvement proxy: each step takes the candidate whose
    optimistic point (mean + kappa*std accuracy) adds most HV to the current front plus
    the points already picked. When none adds any, the rest go to the candidates whose
    optimistic point falls least short of the front (`front_shortfall`): the front's
    neighbourhood, where a better prediction is most likely to turn out true."""
    chosen: list[int] = []
    points = [list(p) for p in front_points]
    base = hypervolume(np.array(points), reference) if points else 0.0
    optimistic = np.column_stack([1.0 - np.clip(mu + kappa * sigma, 0, 1), energies])
    for _ in range(min(k, len(mu))):
        gains = np.full(len(mu), -1.0)
        for i in range(len(mu)):
            if i in chosen:
                continue
            gains[i] = hypervolume(np.array(points + [optimistic[i].tolist()]), reference) - base
        best = int(np.argmax(gains))
        if gains[best] <= 0:
            shortfall = front_shortfall(optimistic, np.array(points).reshape(-1, 2), reference)
            rest = [int(i) for i in np.lexsort((energies, shortfall)) if i not in chosen]
            chosen.extend(rest[: k - len(chosen)])
            break
        chosen.append(best)
        points.append([1.0 - float(np.clip(mu[best], 0, 1)), float(energies[best])])
        base = hypervolume(np.array(points), reference)
    return chosen


def front_shortfall(candidates: np.ndarray, front: np.ndarray, reference) -> np.ndarray:
    """For (1 - accuracy, energy) candidates: the accuracy each lacks to be non-dominated by
    `front` (0 when it is not dominated); a candidate outside the reference point (below
    the accuracy floor) counts 1 more, so it comes after every candidate inside.
    The earlier fallback ranked accuracy per energy, and so picked near-zero-energy designs
    far below the floor (73-88 % of the last 100 evaluations of experiments/compare/full-scale)."""
    out = np.zeros(len(candidates))
    for i, (err, energy) in enumerate(candidates):
        cheaper = front[front[:, 1] <= energy, 0] if len(front) else np.empty(0)
        out[i] = max(0.0, err - cheaper.min()) if len(cheaper) else 0.0
        if err >= reference[0] or energy >= reference[1]:
            out[i] += 1.0
    return out


def run_surrogate(config: SearchConfig, truth: TrueEvaluations, features, powers, exact_index: int, energy, log: list,
                  on_generation=None, on_choice=None, limit: CircuitLimit | None = None) -> int:
    """Search until the budget is spent. `features` turns genomes into the surrogate's
    inputs; `on_choice(text)` hears which surrogate kind was chosen and why, and
    `on_generation(generation, log)` hears each finished generation (the caller writes files).
    `limit`: seeds and offspring are repaired to it, so the screening sees feasible ones only."""
    rng = np.random.default_rng(config.seed)
    n_choices = len(powers)
    n_layers = features.n_layers
    start_genomes = seed_population(config, truth, n_choices, exact_index, powers, energy.batch, rng, n_layers, limit)
    if start_genomes is None:
        return 0
    watch = SpaceWatch(truth, n_choices, n_layers, config.stall_generations, limit)

    def training_set():
        genomes = np.array(list(truth.archive.keys()))
        return features.transform(genomes), np.array([e.accuracy for e in truth.archive.values()])

    X, y = training_set()
    kind, cv_scores = select_kind(X, y, random_state=config.seed)
    surrogate = AccuracySurrogate(kind=kind, n_members=config.ensemble_size, random_state=config.seed).fit(X, y)
    if on_choice:
        on_choice(f"chosen: {kind}; 5-fold CV R^2 on the {len(y)} seed evaluations: "
                  + (", ".join(f"{k} {v:.3f}" for k, v in cv_scores.items()) or "too few points, not scored") + "\n")

    def predict(G):
        return surrogate.predict(features.transform(G), return_std=True)

    problem = AssignmentProblem(n_layers, n_choices)
    algorithm = make_algorithm(config, start_genomes, n_offsprings=config.offspring_factor * config.pop_size,
                               limit=limit)
    algorithm.setup(problem, termination=NoTermination(), seed=config.seed)
    k_true = config.true_per_generation or max(1, config.pop_size // 4)
    fresh_pred: list[float] = []
    fresh_true: list[float] = []
    generation = 0
    while truth.left > 0 and (config.generations is None or generation < config.generations):
        pop = algorithm.ask()
        if no_offspring(pop):
            break
        G = np.asarray(pop.get("X")).round().astype(np.int64)
        mu, sigma = predict(G)
        E = energy.batch(G)
        known = np.array([tuple(g) in truth.archive for g in G])
        if generation == 0:
            chosen = []  # the initial population is the seed set's best, all truly known
        else:
            front = [[1.0 - e.accuracy, e.energy] for e in truth.front()]
            candidates = np.flatnonzero(~known)
            picked = pick_for_truth(mu[candidates], sigma[candidates], E[candidates], front, k_true, truth.reference,
                                    config.kappa)
            chosen = [(int(candidates[i]), "screened") for i in picked]
            if config.drift_every and generation % config.drift_every == 0:
                rest = [int(i) for i in candidates if int(i) not in dict(chosen)]
                if rest:
                    drift = rng.choice(rest, size=min(config.drift_samples, len(rest)), replace=False)
                    chosen += [(int(i), "drift") for i in drift]
        exhausted = False
        try:
            truth.evaluate([G[i] for i, _ in chosen], generation, [reason for _, reason in chosen])
        except BudgetExhausted:
            exhausted = True
        done = [i for i, _ in chosen if tuple(G[i]) in truth.archive]
        gen_pred = [float(mu[i]) for i in done]
        gen_true = [truth.archive[tuple(G[i])].accuracy for i in done]
        accuracies = np.array([truth.archive[tuple(g)].accuracy if tuple(g) in truth.archive else m for g, m in zip(G, mu)])
        pop.set("F", np.column_stack([1.0 - accuracies, E]))
        algorithm.tell(infills=pop)
        generation += 1
        fresh_pred += gen_pred
        fresh_true += gen_true
        if gen_true:
            r2, mae, tau = prediction_quality(gen_pred, gen_true)
            cr2, cmae, ctau = prediction_quality(fresh_pred, fresh_true)
            X, y = training_set()
            log.append(dict(generation=generation, train_size=len(y) - len(gen_true), n_fresh=len(gen_true), r2=r2,
                            mae=mae, kendall_tau=tau, cum_n=len(fresh_true), cum_r2=cr2, cum_mae=cmae,
                            cum_kendall_tau=ctau, kind=kind, predicted=list(gen_pred), true=list(gen_true)))
            surrogate = AccuracySurrogate(kind=kind, n_members=config.ensemble_size,
                                          random_state=config.seed + generation).fit(X, y)
        if on_generation:
            on_generation(generation, log)
        if exhausted or (truth.left > 0 and watch.done()):
            break
    return generation
