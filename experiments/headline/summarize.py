"""Headline table and plots from the run folders in this directory that have a
summary.json (written by `run`, or by `python -m surrogate_nas summarize RUN_DIR`).

Savings are chosen on validation (all 5,000 validation images, against all-exact) and
reported with their test loss (10,000 test images): never chosen on test.

    python experiments/headline/summarize.py
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from surrogate_nas.report import plot_hv, plt
from surrogate_nas.search import HV_REFERENCE, hypervolume

HERE = Path(__file__).parent


def _cell(chosen: dict | None) -> str:
    if chosen is None:
        return "-"
    return f"{chosen['energy_saving_pct']:.1f} % ({chosen['validation_loss_pp']:.2f} / {chosen['test_loss_pp']:.2f})"


def main() -> None:
    runs = sorted(p.parent for p in HERE.glob("*/summary.json"))
    lines = ["| run | mode | compensation | HV@100 | HV@200 | HV@300 | <= 0.5 pp | <= 1 pp | <= 2 pp |",
             "|---|---|---|---|---|---|---|---|---|"]
    series, fronts = {}, {}
    for run in runs:
        s = json.loads((run / "summary.json").read_text())
        hv = s["hv"]
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(f"| {run.name} | {s['mode']} | {s['compensation']} | {fmt(hv['100'])} | {fmt(hv['200'])} | "
                     f"{fmt(hv['300'])} | {_cell(s['chosen']['0.5pp'])} | {_cell(s['chosen']['1pp'])} | "
                     f"{_cell(s['chosen']['2pp'])} |")
        rows = list(csv.DictReader(open(run / "evaluations.csv")))
        points = np.array([[1 - float(r["accuracy"]), float(r["energy"])] for r in rows])
        series[run.name] = [(n, hypervolume(points[:n])) for n in range(1, len(points) + 1)]
        fronts[run.name] = sorted((float(r["energy"]), float(r["validation_accuracy"]))
                                  for r in csv.DictReader(open(run / "front.csv")) if r["validation_accuracy"])
        exact = s["all_exact"]
    lines += ["", "Cells: energy saving of the validation-chosen point (validation loss / test loss, pp) against "
              f"all-exact (validation {exact['validation_accuracy']:.4f}, test {exact['test_accuracy']:.4f}).",
              f"HV on the 2,000-image search set, reference point accuracy {1 - HV_REFERENCE[0]:.2f}, energy "
              f"{HV_REFERENCE[1]:.2f}."]
    (HERE / "summary.md").write_text("\n".join(lines) + "\n")
    plot_hv(HERE / "hv.png", series, HV_REFERENCE, "budget 300, 2,000-image search set")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, pts) in enumerate(fronts.items()):
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", marker="o", ms=3, c=f"C{i}", label=name)
    ax.axhline(exact["validation_accuracy"], c="k", ls=":", lw=1, label="all-exact")
    ax.set_ylim(exact["validation_accuracy"] - 0.1, exact["validation_accuracy"] + 0.01)
    ax.set_xlabel("relative multiplication energy (1.0 = all exact)")
    ax.set_ylabel("top-1 accuracy (all 5,000 validation images)")
    ax.set_title("Fronts re-scored on validation (no retraining)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "fronts.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
