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
from surrogate_nas.search import BudgetExhausted, SearchConfig, TrueEvaluations, hypervolume

# "full-seeded": full mode started from surrogate mode's seed set (the seeding ablation)
METHODS = ("surrogate", "full", "full-seeded", "random", "optuna")
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


def _baseline_truth(ctx, method: str, seed: int, budget: int, tag: str, base: SearchConfig,
                    floor: float) -> tuple[TrueEvaluations, list, str]:
    """The true evaluations of a baseline run, with its HV history, as the NSGA-II modes have."""
    run_id = f"{tag}-{method}-b{budget}-s{seed}"
    history: list = []
    points: list = []

    def on_new(evaluation):
        points.append(evaluation.objectives)
        history.append((truth.used, hypervolume(np.array(points), truth.reference)))

    truth = ctx.truth(run_id, budget, floor, base.early_stop, on_new)
    return truth, history, run_id


def _finish_baseline(ctx, method: str, seed: int, budget: int, truth, history, run_id: str, out_dir: Path,
                     seconds: float) -> MethodRun:
    """Write the baseline's evaluations.csv in the NSGA-II modes' format."""
    from surrogate_nas.report import write_evaluations_csv

    run_dir = out_dir / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    write_evaluations_csv(run_dir / "evaluations.csv", list(truth.archive.values()), ctx.catalog, ctx.methods,
                          ctx.evaluator.infos)
    return MethodRun(method, seed, budget, history, truth.front(), seconds, truth.cache_hits, truth.computed)


def run_random(ctx, seed: int, budget: int, tag: str, base: SearchConfig, floor: float, out_dir: Path) -> MethodRun:
    """Uniform random genomes (the all-exact genome first, as every method gets)."""
    truth, history, run_id = _baseline_truth(ctx, "random", seed, budget, tag, base, floor)
    rng = np.random.default_rng(seed)
    start = time.time()
    n_layers = len(ctx.evaluator.layers)
    genomes = [(ctx.exact_index,) * n_layers] + [tuple(int(g) for g in rng.integers(0, len(ctx.catalog), n_layers))
                                                 for _ in range(50 * budget - 1)]
    try:
        truth.evaluate(genomes, 0, "random")
    except BudgetExhausted:
        pass
    return _finish_baseline(ctx, "random", seed, budget, truth, history, run_id, out_dir, time.time() - start)


def run_optuna(ctx, seed: int, budget: int, tag: str, base: SearchConfig, floor: float, out_dir: Path) -> MethodRun:
    """Optuna's multi-objective TPESampler over one categorical choice per layer."""
    try:
        import optuna
    except ImportError:
        raise UserError("--methods optuna: optuna is not installed (pip install 'surrogate_nas[optuna]')") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    truth, history, run_id = _baseline_truth(ctx, "optuna", seed, budget, tag, base, floor)
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
    return _finish_baseline(ctx, "optuna", seed, budget, truth, history, run_id, out_dir, time.time() - start)


def run_nsga(ctx, method: str, seed: int, budget: int, tag: str, base: SearchConfig, out_dir: Path,
             floor: float) -> MethodRun:
    from surrogate_nas.runner import execute

    mode, initial = ("full", "seed-set") if method == "full-seeded" else (method, base.initial)
    config = replace(base, mode=mode, initial=initial, seed=seed, budget=budget, evaluate_test=False,
                     accuracy_floor=floor)
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


def evaluations_to_reach(runs: list[MethodRun], method: str, target: float) -> list[float]:
    """Per seed of `method`: the first evaluation count at which it reaches `target` HV (inf: never)."""
    counts = []
    for r in runs:
        if r.method == method:
            hit = next((used for used, hv in r.hv_history if hv >= target), None)
            counts.append(np.inf if hit is None else float(hit))
    return counts


def _reach_text(counts: list[float]) -> str:
    if not counts:
        return "no runs"
    text = lambda v: "never" if not np.isfinite(v) else f"{v:.0f}"  # noqa: E731
    return (f"median {text(float(np.median(counts)))}, range {text(min(counts))}-{text(max(counts))} "
            f"(per seed: {', '.join(text(c) for c in counts)})")


def plot_comparison(out_dir: Path, runs: list[MethodRun], floor: float) -> None:
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
    ax.set_title(f"HV vs true evaluations (band: min-max over seeds)\nreference: accuracy floor {floor:.4f}, energy 1.0")
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


def compare(ctx, methods, seeds: int, budget: int, full_budget: int | None, base: SearchConfig, out_dir: Path,
            tag: str = "cmp", only_seed: int | None = None) -> tuple[list[MethodRun], list[dict], list[str]]:
    """`only_seed`: run that seed's methods only and write no tables (one process or machine
    per seed; a final call without it reads every run back from the shared cache)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # A longer full-mode budget is one longer run: with the same seed its first `budget`
    # evaluations are exactly the shorter run, so HV at `budget` is read off its history.
    plan = [(m, s, max(budget, full_budget or 0) if m.startswith("full") else budget)
            for s in range(seeds) for m in methods if only_seed is None or s == only_seed]
    # One floor for every method and seed (all-exact search-set accuracy - 15 pp by default),
    # so their hypervolumes share one reference point.
    floor, floor_source = ctx.accuracy_floor(base, f"{tag}-floor")
    runs = []
    for method, seed, b in tqdm(plan, desc="compare", unit="run", disable=ctx.quiet or None):
        if method in ("surrogate", "full", "full-seeded"):
            runs.append(run_nsga(ctx, method, seed, b, tag, base, out_dir, floor))
        elif method == "random":
            runs.append(run_random(ctx, seed, b, tag, base, floor, out_dir))
        else:
            runs.append(run_optuna(ctx, seed, b, tag, base, floor, out_dir))
    if only_seed is not None:
        return runs, [], []
    rows = summarize(runs, tuple(n for n in CHECKPOINTS if n <= max(budget, full_budget or 0)) or (budget,))
    notes = [f"HV reference point: accuracy floor {floor:.4f} ({floor_source}), relative energy 1.0; "
             f"objectives on the search set ({len(ctx.evaluator.image_set.labels)} validation images)."]
    surrogate_runs = [r for r in runs if r.method == "surrogate" and r.budget == budget]
    if surrogate_runs:
        target = float(np.median([r.hv_history[-1][1] for r in surrogate_runs if r.hv_history]))
        for other in [m for m in methods if m != "surrogate"]:
            notes.append(f"Evaluations {other} needs to reach the surrogate's median HV at {budget} ({target:.4f}): "
                         f"{_reach_text(evaluations_to_reach(runs, other, target))}.")
    write_table(out_dir, rows, notes)
    plot_comparison(out_dir, runs, floor)
    return runs, rows, notes
