"""Seeding ablation, seed 0: HV after n true evaluations of surrogate mode, full mode, and
full mode started from surrogate mode's seed set (full-seeded), read from the run folders
with the compare's reference point (accuracy floor, energy 1).

    python experiments/compare/floor-s500/ablation.py
"""

import csv
import json
from pathlib import Path

import numpy as np

from surrogate_nas.search.pareto import hv_reference, hypervolume

HERE = Path(__file__).parent
RUNS = {"surrogate": "cmp-surrogate-b300-s0", "full": "cmp-full-b900-s0", "full-seeded": "cmp-full-seeded-b900-s0"}
CHECKPOINTS = (45, 100, 200, 300, 600, 900)


def main() -> None:
    floor = json.loads((HERE / "runs" / RUNS["full"] / "config.json").read_text())["accuracy_floor"]["value"]
    ref = hv_reference(floor)
    from surrogate_nas.results.plots import plot_hv

    curves = {}
    lines = [f"HV (search set, reference: accuracy floor {floor:.4f}, energy 1.0), seed 0", "",
             "| method | " + " | ".join(f"@{n}" for n in CHECKPOINTS) + " | stopped early |",
             "|---" * (len(CHECKPOINTS) + 2) + "|"]
    for method, run in RUNS.items():
        with open(HERE / "runs" / run / "evaluations.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        points = np.array([[1 - float(r["accuracy"]), float(r["energy"])] if not r["below_floor"] else [1.0, 1.0]
                           for r in rows])
        cells = [f"{hypervolume(points[:n], ref):.4f}" if len(points) >= n else "" for n in CHECKPOINTS]
        stopped = sum(1 for r in rows if r["below_floor"])
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {stopped} of {len(rows)} |")
        curves[method] = [(n, hypervolume(points[:n], ref)) for n in range(1, len(points) + 1)]
    plot_hv(HERE / "ablation.png", curves, ref, "seeding ablation, seed 0 (500-image search set)")
    (HERE / "ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
