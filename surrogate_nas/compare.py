"""Surrogate-assisted vs full NSGA-II vs random search vs Optuna (multi-objective TPE),
same budget, same seeds, one shared cache. Answers: how much hypervolume does each
method reach per true evaluation?"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from surrogate_nas.errors import UserError
from surrogate_nas.report import write_table
from surrogate_nas.search import HV_REFERENCE, BudgetExhausted, SearchConfig, TrueEvaluations, hypervolume

METHODS = ("surrogate", "full", "random", "optuna")
CHECKPOINTS = (100, 200, 300)


@dataclass
class MethodRun:
    method: str
    seed: int
    budget: int
    hv_history: list  # (evaluations, hv)
    front: list
    seconds: float
    cache_hits: int
    computed: int


def _baseline_truth(ctx, method: str, seed: int, budget: int, tag: str) -> TrueEvaluations:
    run_id = f"{tag}-{method}-s{seed}"
    return TrueEvaluations(ctx.score, ctx.evaluator.energy_model, ctx.cache, ctx.evaluator.fingerprint, run_id,
                           budget, len(ctx.evaluator.image_set.labels))


def _hv_tracker(truth: TrueEvaluations) -> list:
    history: list = []
    points: list = []

    def on_new(evaluation):
        points.append([1.0 - evaluation.accuracy, evaluation.energy])
        history.append((truth.used, hypervolume(np.array(points))))

    truth.on_new = on_new
    return history


def run_random(ctx, seed: int, budget: int, tag: str) -> MethodRun:
    """Uniform random genomes (the all-exact genome first, as every method gets)."""
    truth = _baseline_truth(ctx, "random", seed, budget, tag)
    history = _hv_tracker(truth)
    rng = np.random.default_rng(seed)
    start = time.time()
    n_layers = len(ctx.evaluator.layers)
    genome = (ctx.exact_index,) * n_layers
    try:
        for _ in range(50 * budget):
            truth.accuracy(genome, 0, "random")
            genome = tuple(int(g) for g in rng.integers(0, len(ctx.catalog), n_layers))
    except BudgetExhausted:
        pass
    return MethodRun("random", seed, budget, history, truth.front(), time.time() - start, truth.cache_hits, truth.computed)


def run_optuna(ctx, seed: int, budget: int, tag: str) -> MethodRun:
    """Optuna's multi-objective TPESampler over one categorical choice per layer."""
    try:
        import optuna
    except ImportError:
        raise UserError("--methods optuna: optuna is not installed (pip install 'surrogate_nas[optuna]')") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    truth = _baseline_truth(ctx, "optuna", seed, budget, tag)
    history = _hv_tracker(truth)
    choices = list(range(len(ctx.catalog)))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.TPESampler(seed=seed))
    n_layers = len(ctx.evaluator.layers)
    study.enqueue_trial({f"layer{i + 1}": ctx.exact_index for i in range(n_layers)})
    start = time.time()
    for _ in range(50 * budget):
        trial = study.ask()
        genome = tuple(trial.suggest_categorical(f"layer{i + 1}", choices) for i in range(n_layers))
        try:
            accuracy = truth.accuracy(genome, trial.number, "optuna")
        except BudgetExhausted:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            break
        study.tell(trial, [accuracy, ctx.evaluator.energy(genome)])
    return MethodRun("optuna", seed, budget, history, truth.front(), time.time() - start, truth.cache_hits, truth.computed)


def run_nsga(ctx, method: str, seed: int, budget: int, tag: str, base: SearchConfig, out_dir: Path) -> MethodRun:
    from surrogate_nas.runner import execute

    config = replace(base, mode=method, seed=seed, budget=budget, evaluate_test=False)
    run_id = f"{tag}-{method}-b{budget}-s{seed}"
    run_dir = out_dir / "runs" / run_id
    result = execute(ctx, config, out_dir / "runs", run_id=run_id, resume=run_dir.exists(),
                     resume_flag=f"compare: run {run_id}")
    return MethodRun(method, seed, budget, result.hv_history, result.front, result.seconds, result.cache_hits, result.computed)


def hv_at(history: list, n: int) -> float:
    """HV after the first n true evaluations (the last value if the run used fewer)."""
    values = [hv for used, hv in history if used <= n]
    return values[-1] if values else 0.0


def summarize(runs: list[MethodRun], checkpoints=CHECKPOINTS) -> list[dict]:
    rows = []
    for method in dict.fromkeys(r.method for r in runs):
        for budget in sorted({r.budget for r in runs if r.method == method}):
            group = [r for r in runs if r.method == method and r.budget == budget]
            row = {"method": method, "budget": budget, "seeds": len(group)}
            finals = [r.hv_history[-1][1] if r.hv_history else 0.0 for r in group]
            row["final_hv_median"] = float(np.median(finals))
            row["final_hv_min"] = float(np.min(finals))
            row["final_hv_max"] = float(np.max(finals))
            for n in checkpoints:
                if n <= budget:
                    row[f"hv_at_{n}"] = float(np.median([hv_at(r.hv_history, n) for r in group]))
            row["pareto_size_median"] = float(np.median([len(r.front) for r in group]))
            row["wall_s_median"] = float(np.median([r.seconds for r in group]))
            row["cache_hits_total"] = int(sum(r.cache_hits for r in group))
            row["computed_total"] = int(sum(r.computed for r in group))
            rows.append(row)
    return rows


def evaluations_to_reach(runs: list[MethodRun], method: str, target: float) -> float | None:
    """Median over seeds of the first evaluation count at which `method` reaches `target` HV."""
    counts = []
    for r in runs:
        if r.method != method:
            continue
        hit = next((used for used, hv in r.hv_history if hv >= target), None)
        counts.append(np.inf if hit is None else hit)
    if not counts:
        return None
    return float(np.median(counts))


def plot_comparison(out_dir: Path, runs: list[MethodRun]) -> None:
    from surrogate_nas.report import draw_front, plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, key in enumerate(dict.fromkeys((r.method, r.budget) for r in runs)):
        group = [r for r in runs if (r.method, r.budget) == key]
        n_max = max(r.budget for r in group)
        grid = np.arange(1, n_max + 1)
        curves = np.array([[hv_at(r.hv_history, n) for n in grid] for r in group])
        label = key[0] if len({r.budget for r in runs if r.method == key[0]}) == 1 else f"{key[0]} ({key[1]})"
        ax.plot(grid, np.median(curves, axis=0), c=f"C{i}", label=f"{label}, median of {len(group)}")
        ax.fill_between(grid, curves.min(axis=0), curves.max(axis=0), color=f"C{i}", alpha=0.15)
    ax.set_xlabel("true evaluations")
    ax.set_ylabel("hypervolume (search set)")
    ax.set_title(f"HV vs true evaluations (band: min-max over seeds)\nreference: accuracy {1 - HV_REFERENCE[0]:.1f}, energy {HV_REFERENCE[1]:.1f}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "hv_vs_evaluations.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, key in enumerate(dict.fromkeys((r.method, r.budget) for r in runs)):
        first = next(r for r in runs if (r.method, r.budget) == key)
        draw_front(ax, first.front, f"{key[0]} ({key[1]}), seed {first.seed}", f"C{i}", marker_size=9)
    ax.set_xlabel("relative multiplication energy")
    ax.set_ylabel("top-1 accuracy (search set)")
    ax.set_title("Pareto fronts (first seed of each method)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "fronts.png", dpi=120)
    plt.close(fig)


def compare(ctx, methods, seeds: int, budget: int, full_budget: int | None, base: SearchConfig, out_dir: Path, tag: str = "cmp") -> tuple[list[MethodRun], list[dict], list[str]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    # A longer full-mode budget is one longer run: with the same seed its first `budget`
    # evaluations are exactly the shorter run, so HV at `budget` is read off its history.
    plan = [(m, s, max(budget, full_budget or 0) if m == "full" else budget) for s in range(seeds) for m in methods]
    runs = []
    for method, seed, b in tqdm(plan, desc="compare", unit="run", disable=ctx.quiet or None):
        if method in ("surrogate", "full"):
            runs.append(run_nsga(ctx, method, seed, b, tag, base, out_dir))
        elif method == "random":
            runs.append(run_random(ctx, seed, b, tag))
        else:
            runs.append(run_optuna(ctx, seed, b, tag))
    rows = summarize(runs, tuple(n for n in CHECKPOINTS if n <= max(budget, full_budget or 0)) or (budget,))
    notes = [f"HV reference point: accuracy {1 - HV_REFERENCE[0]:.1f}, relative energy {HV_REFERENCE[1]:.1f}; "
             f"objectives on the search set ({len(ctx.evaluator.image_set.labels)} validation images)."]
    surrogate_runs = [r for r in runs if r.method == "surrogate" and r.budget == budget]
    if surrogate_runs and any(r.method == "full" for r in runs):
        target = float(np.median([r.hv_history[-1][1] for r in surrogate_runs if r.hv_history]))
        reach = evaluations_to_reach(runs, "full", target)
        reach_text = "not reached" if reach is None or not np.isfinite(reach) else f"{reach:.0f}"
        notes.append(f"Surrogate median HV at {budget}: {target:.4f}; full-mode evaluations to reach it (median): {reach_text}.")
    write_table(out_dir, rows, notes)
    plot_comparison(out_dir, runs)
    return runs, rows, notes
