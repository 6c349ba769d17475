"""Surrogate-assisted NSGA-II: many offspring per generation, the surrogate pre-screens
them, and only the most promising (plus a few random ones, against drift) get a true
evaluation. Offspring without one carry predicted accuracies inside the population but
are never reported: the front is built from true evaluations only."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
from pymoo.algorithms.moo.nsga2 import RankAndCrowding
from pymoo.core.population import Population
from pymoo.core.termination import NoTermination
from scipy.stats import kendalltau
from sklearn.metrics import mean_absolute_error, r2_score

from surrogate_nas.search import (
    AssignmentProblem,
    BudgetExhausted,
    SearchConfig,
    SpaceWatch,
    TrueEvaluations,
    hypervolume,
    make_algorithm,
    no_offspring,
)
from surrogate_nas.surrogate import AccuracySurrogate, GenomeFeatures, select_kind

SURROGATE_COLUMNS = ("generation", "train_size", "n_fresh", "r2", "mae", "kendall_tau", "cum_n", "cum_r2", "cum_mae", "cum_kendall_tau", "kind")


def build_features(ctx, energy) -> GenomeFeatures:
    stats = ctx.evaluator.layer_statistics()
    noise = ctx.evaluator.designs.residual_noise(stats["taps"], stats["output_std"])
    return GenomeFeatures(ctx.catalog, [i.macs for i in ctx.evaluator.infos], energy, noise)


def seed_genomes(n_seed: int, n_choices: int, exact_index: int, powers: np.ndarray, rng: np.random.Generator,
                 n_layers: int) -> list[tuple[int, ...]]:
    """All-exact, then uniform genomes (one circuit everywhere) spread over the power
    range, then a Latin-hypercube sample over the circuits of each layer. A space with
    fewer genomes than `n_seed` gives all of them."""
    n_seed = min(n_seed, n_choices**n_layers)
    genomes = [(exact_index,) * n_layers]
    uniform_budget = min(n_choices - 1, max(0, (2 * n_seed) // 3 - 1))
    by_power = [int(i) for i in np.argsort(powers) if i != exact_index]
    picks = np.unique(np.linspace(0, len(by_power) - 1, uniform_budget).round().astype(int)) if uniform_budget else []
    genomes += [(by_power[i],) * n_layers for i in picks]
    blocks = 0
    while len(genomes) < n_seed and blocks < 1000:
        block = np.column_stack([rng.permutation(n_choices) for _ in range(n_layers)])
        for row in block:
            genome = tuple(int(g) for g in row)
            if genome not in genomes and len(genomes) < n_seed:
                genomes.append(genome)
        blocks += 1
    if len(genomes) < n_seed:  # a small space nearly used up: the rest of it, in random order
        seen = set(genomes)
        rest = [g for g in itertools.product(range(n_choices), repeat=n_layers) if g not in seen]
        genomes += [rest[i] for i in rng.permutation(len(rest))[: n_seed - len(genomes)]]
    return genomes[:n_seed]


def seed_population(config: SearchConfig, truth: TrueEvaluations, n_choices: int, exact_index: int, powers,
                    energy_batch, rng: np.random.Generator, n_layers: int) -> list[tuple[int, ...]] | None:
    """Truly evaluate the seed set (`seed_fraction` of the budget, at least a population)
    and return its best `pop_size` genomes by rank and crowding: the initial population.
    None when the budget or the search space ends first (said in one line)."""
    n_seed = min(config.budget, max(config.pop_size, int(round(config.seed_fraction * config.budget))))
    seeds = seed_genomes(n_seed, n_choices, exact_index, powers, rng, n_layers)
    try:
        truth.evaluate(seeds, 0, "seed")
    except BudgetExhausted:
        return None
    watch = SpaceWatch(truth, n_choices, n_layers)
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


def pick_for_truth(mu, sigma, energies, front_points, k, reference, kappa: float = 1.0) -> list[int]:
    """Greedy expected-hypervolume-improvement proxy: each step takes the candidate whose
    optimistic point (mean + kappa*std accuracy) adds most HV to the current front plus
    the points already picked; falls back to the best predicted accuracy per energy."""
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
            rest = [i for i in np.argsort(-(mu + kappa * sigma) / np.maximum(energies, 1e-3)) if i not in chosen]
            chosen.extend(int(i) for i in rest[: k - len(chosen)])
            break
        chosen.append(best)
        points.append([1.0 - float(np.clip(mu[best], 0, 1)), float(energies[best])])
        base = hypervolume(np.array(points), reference)
    return chosen


def _quality(pred, true) -> tuple[float, float, float]:
    pred, true = np.asarray(pred), np.asarray(true)
    if len(true) < 2:
        return float("nan"), float(np.mean(np.abs(pred - true))) if len(true) else float("nan"), float("nan")
    tau = kendalltau(pred, true).statistic if np.ptp(true) > 0 and np.ptp(pred) > 0 else float("nan")
    r2 = r2_score(true, pred) if np.ptp(true) > 0 else float("nan")
    return float(r2), float(mean_absolute_error(true, pred)), float(tau)


def run_surrogate(config: SearchConfig, truth: TrueEvaluations, ctx, energy, log: list, on_generation, run_dir: Path) -> int:
    rng = np.random.default_rng(config.seed)
    n_choices = len(ctx.catalog)
    n_layers = len(ctx.evaluator.layers)
    features = build_features(ctx, energy)
    start_genomes = seed_population(config, truth, n_choices, ctx.exact_index, ctx.catalog.powers, energy.batch, rng,
                                    n_layers)
    if start_genomes is None:
        return 0
    watch = SpaceWatch(truth, n_choices, n_layers)

    def training_set():
        genomes = np.array(list(truth.archive.keys()))
        return features.transform(genomes), np.array([e.accuracy for e in truth.archive.values()])

    X, y = training_set()
    kind, cv_scores = select_kind(X, y, random_state=config.seed)
    surrogate = AccuracySurrogate(kind=kind, random_state=config.seed).fit(X, y)
    (run_dir / "surrogate_choice.txt").write_text(
        f"chosen: {kind}; 5-fold CV R^2 on the {len(y)} seed evaluations: "
        + (", ".join(f"{k} {v:.3f}" for k, v in cv_scores.items()) or "too few points, not scored") + "\n"
    )

    def predict(G):
        return surrogate.predict(features.transform(G), return_std=True)

    problem = AssignmentProblem(n_layers, n_choices)
    algorithm = make_algorithm(config, start_genomes, n_offsprings=config.offspring_factor * config.pop_size)
    algorithm.setup(problem, termination=NoTermination(), seed=config.seed)
    k_true = max(1, config.pop_size // 4)
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
            picked = pick_for_truth(mu[candidates], sigma[candidates], E[candidates], front, k_true, truth.reference)
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
            r2, mae, tau = _quality(gen_pred, gen_true)
            cr2, cmae, ctau = _quality(fresh_pred, fresh_true)
            X, y = training_set()
            log.append(dict(generation=generation, train_size=len(y) - len(gen_true), n_fresh=len(gen_true), r2=r2,
                            mae=mae, kendall_tau=tau, cum_n=len(fresh_true), cum_r2=cr2, cum_mae=cmae,
                            cum_kendall_tau=ctau, kind=kind, predicted=list(gen_pred), true=list(gen_true)))
            surrogate = AccuracySurrogate(kind=kind, random_state=config.seed + generation).fit(X, y)
            write_surrogate_log(run_dir, log)
        if on_generation:
            on_generation(generation)
        if exhausted or (truth.left > 0 and watch.done()):
            break
    return generation


def write_surrogate_log(run_dir: Path, log: list) -> None:
    with open(run_dir / "surrogate.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(SURROGATE_COLUMNS)
        for row in log:
            writer.writerow([row[c] if not isinstance(row[c], float) else f"{row[c]:.4f}" for c in SURROGATE_COLUMNS])


def plot_predictions(path: Path, log: list) -> None:
    from surrogate_nas.report import plt

    pred = [p for row in log for p in row["predicted"]]
    true = [t for row in log for t in row["true"]]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(true, pred, s=12, c=[row["generation"] for row in log for _ in row["true"]], cmap="viridis")
    if true:
        lo, hi = min(true + pred), max(true + pred)
        ax.plot([lo, hi], [lo, hi], c="0.5", lw=1)
        r2, mae, tau = _quality(pred, true)
        ax.set_title(f"surrogate on fresh points (n={len(true)})\nR^2 {r2:.3f}, MAE {mae:.4f}, Kendall tau {tau:.3f}", fontsize=10)
    ax.set_xlabel("true accuracy")
    ax.set_ylabel("predicted accuracy (before refit)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
