"""Parameter studies: one TOML file per NSGA-II setting, each run in full and in
surrogate mode, summarised in one table and one plot."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from surrogate_nas.errors import UserError
from surrogate_nas.results.tables import write_table
from surrogate_nas.search.config import SearchConfig
from surrogate_nas.search.pareto import hypervolume

STUDY_KEYS = {"name", "modes", "description"} | {f.name for f in fields(SearchConfig)}


# TOML value types each key accepts (a float setting takes an integer too).
_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "tuple[int, ...]": (list,)}


FIELD_TYPES = {f.name: tuple(t for part in str(f.type).split("|") for t in _TYPES.get(part.strip(), (type(None),)))
               for f in fields(SearchConfig)}


FIELD_TYPES.update({"name": (str,), "modes": (list,), "description": (str,)})


def load_study(path: Path) -> tuple[str, list[str], SearchConfig]:
    try:
        doc = tomllib.loads(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: study file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the study file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    unknown = set(doc) - STUDY_KEYS
    if unknown:
        raise UserError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    for key, value in doc.items():
        expected = FIELD_TYPES.get(key, str)
        if isinstance(value, bool) is not (bool in expected) or not isinstance(value, expected):
            raise UserError(f"{path}: {key} = {value!r} has the wrong type "
                            f"(expected {' or '.join(t.__name__ for t in expected if t is not type(None))})")
    name = str(doc.pop("name", Path(path).stem))
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name) or name.startswith("."):
        raise UserError(f"{path}: name {name!r} is not usable in a run id (letters, digits, _ . + - only)")
    modes = doc.pop("modes", ["full", "surrogate"])
    if not isinstance(modes, list) or not modes or any(m not in ("full", "surrogate") for m in modes):
        raise UserError(f"{path}: modes must be a list of 'full' and/or 'surrogate', got {modes!r}")
    doc.pop("description", None)
    try:
        config = SearchConfig(**doc)
        config.validate()
    except (TypeError, UserError) as exc:
        raise UserError(f"{path}: {exc}") from None
    return name, modes, config


def study_configs(paths: list[Path], overrides: dict) -> list[tuple[str, list[str], SearchConfig]]:
    """Every study file with the command-line overrides applied, all checked before any work."""
    studies = []
    for path in paths:
        name, modes, config = load_study(path)
        config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
        config.validate()  # an override is a flag: its error names the flag
        studies.append((name, modes, config))
    return studies


def run_studies(make_context, paths: list[Path], out_dir: Path, overrides: dict) -> list[dict]:
    """`make_context(config)` gives the Context each study runs in: every study uses its
    own image settings (one Context per distinct setting, built when first needed; the
    previous one is released first)."""
    from surrogate_nas.workflows.run import execute

    rows = []
    results = {}
    key, ctx = None, None
    for name, modes, config in study_configs(paths, overrides):
        wanted = (config.search_images, config.test_images, config.compensation, config.approximate,
                  config.rule_images, config.prune_k)
        if wanted != key:
            key, ctx = wanted, None
            ctx = make_context(config)
        for mode in modes:
            run_id = f"{name}-{mode}-b{config.budget}-s{config.seed}"
            run_dir = out_dir / "runs" / run_id
            result = execute(ctx, replace(config, mode=mode), out_dir / "runs", run_id=run_id, resume=run_dir.exists(),
                             resume_flag=f"study {name}: run {run_id}")
            results[(name, mode)] = result
            exact = result.exact_test_accuracy
            chosen = {t: result.chosen(t) for t in (0.5, 1.0)}
            rows.append({
                "study": name, "mode": mode, "pop": config.pop_size, "generations": config.generations,
                "crossover": f"{config.crossover_prob}/{config.crossover_eta}",
                "mutation": f"{config.mutation_prob}/{config.mutation_eta}",
                "pareto_points": len(result.front),
                "hv": hypervolume(np.array([[1 - e.accuracy, e.energy] for e in result.front]), result.hv_reference),
                "exact_test_acc": exact,
                # chosen on validation (the one rule, results.summary.choose_within), test loss reported
                **{f"saving_at_{t:g}pp_%": c["energy_saving_pct"] if c else 0.0 for t, c in chosen.items()},
                **{f"test_loss_at_{t:g}pp": c["test_loss_pp"] if c else None for t, c in chosen.items()},
                "true_evals": len(result.evaluations), "computed": result.computed, "wall_s": round(result.seconds),
            })
    write_table(out_dir, rows)
    plot_study_fronts(out_dir, results)
    return rows


def plot_study_fronts(out_dir: Path, results: dict) -> None:
    from surrogate_nas.results.plots import draw_front, plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, mode in zip(axes, ("full", "surrogate")):
        for i, ((name, m), result) in enumerate(results.items()):
            if m != mode:
                continue
            draw_front(ax, result.front, name, f"C{i // 2}", marker_size=9)
        ax.set_title(f"{mode} mode: Pareto fronts (search set)")
        ax.set_xlabel("relative multiplication energy")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel("top-1 accuracy")
    fig.tight_layout()
    fig.savefig(out_dir / "fronts.png", dpi=120)
    plt.close(fig)
