"""Several `design` folders (one per model and seed) as one table: the median and range over
seeds of what each rule chose, because one seed's choice at 0.5 pp moves by several points
of saving with the noise of 3,000 choosing images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from surrogate_nas.errors import UserError
from surrogate_nas.results.summary import TOLERANCES_PP

RULES = (("chosen", "point estimate"), ("chosen_upper", "upper bound"))
COLUMNS = ("model", "rule", "within_pp", "seeds", "designs_found", "saving_median_pct", "saving_min_pct",
           "saving_max_pct", "choosing_loss_median_pp", "test_loss_median_pp", "test_loss_max_pp",
           "every_seed_test_within", "retrained", "wall_s_median", "float_passes_median")


def find_designs(root: Path) -> list[Path]:
    """Every design.json at or below `root`."""
    root = Path(root)
    found = sorted(root.rglob("design.json"))
    if not found:
        raise UserError(f"{root}: no design.json at or below it (run `python -m surrogate_nas design --out DIR`)")
    return found


def _median(values) -> float | None:
    return float(np.median(values)) if values else None


def seed_rows(docs: list[dict]) -> list[dict]:
    """One row per model, rule and tolerance; a seed whose rule found no design counts as
    0 % saving in the median (a user of that seed gets no saving)."""
    by_model: dict[str, list[dict]] = {}
    for doc in docs:
        by_model.setdefault(doc["model"], []).append(doc)
    rows = []
    for model, group in sorted(by_model.items()):
        group = sorted(group, key=lambda d: d["seed"])
        costs = [d["cost"] for d in group if d.get("cost")]
        for rule, name in RULES:
            for key in group[0][rule]:
                picks = [d[rule].get(key) for d in group]
                found = [c for c in picks if c is not None]
                savings = [c["energy_saving_pct"] if c else 0.0 for c in picks]
                tests = [c["test_loss_pp"] for c in found if c["test_loss_pp"] is not None]
                rows.append({
                    "model": model, "rule": name, "within_pp": float(key), "seeds": ",".join(str(d["seed"]) for d in group),
                    "designs_found": len(found), "saving_median_pct": _median(savings),
                    "saving_min_pct": min(savings), "saving_max_pct": max(savings),
                    "choosing_loss_median_pp": _median([c["choosing_loss_pp"] for c in found]),
                    "test_loss_median_pp": _median(tests), "test_loss_max_pp": max(tests) if tests else None,
                    "every_seed_test_within": bool(found) and len(tests) == len(group) and max(tests) <= float(key),
                    "retrained": sum(1 for c in found if c["retrained"]),
                    "wall_s_median": _median([c["wall_s"] for c in costs]),
                    "float_passes_median": _median([c["wall_s"] / c["float_pass_s"] for c in costs]),
                })
    return rows


def _fmt(value, spec: str, unit: str = "") -> str:
    return "-" if value is None else format(value, spec) + unit


def write_summary(root: Path) -> list[dict]:
    """summary.csv, summary.md and summary.png in `root`, from every design below it."""
    root = Path(root)
    paths = find_designs(root)
    docs = [json.loads(p.read_text()) for p in paths]
    rows = seed_rows(docs)
    with open(root / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["# design: median over seeds", "",
             "Saving: median [min, max] over seeds (a seed with no design counts as 0 %). Losses against each "
             "seed's all-exact network; test is reported only, never used to choose.", "",
             "| model | rule | within | seeds | saving | choosing loss (median) | test loss median / max | "
             "every seed's test loss within | retrained |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['rule']} | {r['within_pp']:g} pp | {r['seeds']} | "
            f"{r['saving_median_pct']:.1f} % [{r['saving_min_pct']:.1f}, {r['saving_max_pct']:.1f}] | "
            f"{_fmt(r['choosing_loss_median_pp'], '.2f', ' pp')} | {_fmt(r['test_loss_median_pp'], '.2f')} / "
            f"{_fmt(r['test_loss_max_pp'], '.2f', ' pp')} | {'yes' if r['every_seed_test_within'] else 'no'} | "
            f"{r['retrained']} of {r['designs_found']} |")
    lines.append("")
    for model in dict.fromkeys(r["model"] for r in rows):
        r = next(r for r in rows if r["model"] == model)
        lines.append(f"Cost of one {model} design, median over seeds: {_fmt(r['wall_s_median'], '.0f', ' s')} = "
                     f"{_fmt(r['float_passes_median'], '.0f')} float passes (the float model on 2,000 images, "
                     "timed in the same process).")
    lines += ["", "From: " + ", ".join(str(p.parent.relative_to(root)) for p in paths)]
    (root / "summary.md").write_text("\n".join(lines) + "\n")
    _plot(root / "summary.png", docs)
    return rows


def _plot(path: Path, docs: list[dict]) -> None:
    """Saving against choosing loss of each seed's point-estimate choices, one marker per model."""
    from surrogate_nas.results.plots import plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    models = sorted({doc["model"] for doc in docs})
    for doc in docs:
        picks = [c for c in doc["chosen"].values() if c is not None]
        ax.scatter([c["energy_saving_pct"] for c in picks], [c["test_loss_pp"] for c in picks],
                   marker="os^D"[models.index(doc["model"]) % 4], c=[f"C{doc['seed'] % 10}"] * len(picks),
                   label=f"{doc['model']}, seed {doc['seed']}")
    for t in TOLERANCES_PP:
        ax.axhline(t, c="k", ls=":", lw=0.7)
    ax.set_xlabel("energy saving of the chosen design (%)")
    ax.set_ylabel("test loss against all-exact (pp, reported only)")
    ax.set_title("design: each seed's choices at 0.5 / 1 / 2 pp (point estimate)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
