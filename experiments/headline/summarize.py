"""Headline table and plot from the two headline runs' evaluations.csv / front.csv
(HV with the project's fixed reference point, energy savings on the test subset).

    python experiments/headline/summarize.py
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from surrogate_nas.report import plot_hv
from surrogate_nas.search import HV_REFERENCE, hypervolume

HERE = Path(__file__).parent
RUNS = {"surrogate": "headline-surrogate-b300-i500", "full": "headline-full-b300-i500"}


def main() -> None:
    lines = ["| mode | HV@100 | HV@200 | HV@300 | Pareto points | best saving, test loss <= 0.5 pp | <= 1 pp | <= 2 pp |",
             "|---|---|---|---|---|---|---|---|"]
    series = {}
    for mode, run in RUNS.items():
        rows = list(csv.DictReader(open(HERE / run / "evaluations.csv")))
        points = np.array([[1 - float(r["accuracy"]), float(r["energy"])] for r in rows])
        series[mode] = [(n, hypervolume(points[:n])) for n in range(1, len(points) + 1)]
        front = list(csv.DictReader(open(HERE / run / "front.csv")))

        def best(pp):
            ok = [float(r["energy_saving_pct"]) for r in front if r["test_accuracy"] and float(r["test_loss_pp"]) <= pp]
            return max(ok, default=0.0)

        hv = {n: series[mode][n - 1][1] for n in (100, 200, 300)}
        lines.append(f"| {mode} | {hv[100]:.4f} | {hv[200]:.4f} | {hv[300]:.4f} | {len(front)} | "
                     f"{best(0.5):.1f} % | {best(1.0):.1f} % | {best(2.0):.1f} % |")
    lines.append(f"\nHV reference point: accuracy {1 - HV_REFERENCE[0]:.2f}, relative energy {HV_REFERENCE[1]:.2f}.")
    (HERE / "summary.md").write_text("\n".join(lines) + "\n")
    plot_hv(HERE / "hv_surrogate_vs_full.png", series, HV_REFERENCE, "budget 300, search set 500 validation images")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
