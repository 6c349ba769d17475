"""Parameter studies: one TOML file per NSGA-II setting, each run in full and in
surrogate mode, summarised in one table and one plot."""

from __future__ import annotations

import tomllib
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from surrogate_nas.errors import UserError
from surrogate_nas.report import write_table
from surrogate_nas.search import SearchConfig, hypervolume

STUDY_KEYS = {"name", "modes", "description"} | {f.name for f in fields(SearchConfig)}


def load_study(path: Path) -> tuple[str, list[str], SearchConfig]:
    try:
        doc = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: study file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    unknown = set(doc) - STUDY_KEYS
    if unknown:
        raise UserError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    name = str(doc.pop("name", Path(path).stem))
    modes = list(doc.pop("modes", ["full", "surrogate"]))
    doc.pop("description", None)
    try:
        config = SearchConfig(**doc)
        config.validate()
    except (TypeError, UserError) as exc:
        raise UserError(f"{path}: {exc}") from None
    return name, modes, config


def best_saving(front, test_scores: dict, exact_test: float, max_loss_pp: float) -> float:
    """Largest energy saving (%) among front members within `max_loss_pp` of all-exact (test set)."""
    savings = [100 * (1 - e.energy) for e in front
               if e.genome in test_scores and 100 * (exact_test - test_scores[e.genome]) <= max_loss_pp]
    return max(savings, default=0.0)


def run_studies(ctx, paths: list[Path], out_dir: Path, overrides: dict) -> list[dict]:
    from surrogate_nas.runner import execute

    rows = []
    results = {}
    for path in paths:
        name, modes, config = load_study(path)
        config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
        for mode in modes:
            run_id = f"{name}-{mode}-b{config.budget}-s{config.seed}"
            run_dir = out_dir / "runs" / run_id
            result = execute(ctx, replace(config, mode=mode), out_dir / "runs", run_id=run_id, resume=run_dir.exists())
            results[(name, mode)] = result
            exact = result.exact_test_accuracy
            rows.append({
                "study": name, "mode": mode, "pop": config.pop_size, "generations": config.generations,
                "crossover": f"{config.crossover_prob}/{config.crossover_eta}",
                "mutation": f"{config.mutation_prob}/{config.mutation_eta}",
                "pareto_points": len(result.front),
                "hv": hypervolume(np.array([[1 - e.accuracy, e.energy] for e in result.front])),
                "exact_test_acc": exact,
                "saving_at_0.5pp_%": best_saving(result.front, result.test_scores, exact, 0.5),
                "saving_at_1pp_%": best_saving(result.front, result.test_scores, exact, 1.0),
                "true_evals": len(result.evaluations), "computed": result.computed, "wall_s": round(result.seconds),
            })
    write_table(out_dir, rows)
    plot_study_fronts(out_dir, results)
    return rows


def plot_study_fronts(out_dir: Path, results: dict) -> None:
    from surrogate_nas.report import plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, mode in zip(axes, ("full", "surrogate")):
        for i, ((name, m), result) in enumerate(results.items()):
            if m != mode:
                continue
            ax.step([e.energy for e in result.front], [e.accuracy for e in result.front], where="post",
                    marker="o", ms=3, c=f"C{i // 2}", label=name)
        ax.set_title(f"{mode} mode: Pareto fronts (search set)")
        ax.set_xlabel("relative multiplication energy")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel("top-1 accuracy")
    fig.tight_layout()
    fig.savefig(out_dir / "fronts.png", dpi=120)
    plt.close(fig)
