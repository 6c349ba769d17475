"""Compensation ablation: every uniform genome (one circuit in all conv layers) under
each compensation method, on the 2,000-image validation search set.

    python experiments/compensation/ablation.py [--images 2000]

Writes ablation.csv, ablation.md and ablation.png next to this file. Evaluations go
through the project's cache (same fingerprints as `run`), so they are computed once.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from surrogate_nas.config import resolve_paths
from surrogate_nas.evaluation.cache import EvalCache, default_cache_file
from surrogate_nas.evaluation.evaluator import Evaluator
from surrogate_nas.evaluation.inputs import (
    ensure_model,
    load_catalog_from,
    load_data_from,
)
from surrogate_nas.multipliers.compensation import METHODS
from surrogate_nas.results.plots import plt

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--methods", default=",".join(METHODS + ("auto",)))
    parser.add_argument("--out", default=str(HERE), help="folder for ablation.csv/.md/.png")
    args = parser.parse_args()
    out = Path(args.out)
    paths = resolve_paths()
    catalog = load_catalog_from(paths)
    data = load_data_from(paths)
    model = ensure_model(paths)
    cache = EvalCache(default_cache_file(Path(paths.cache)))
    n_layers = None
    rows = []
    start = time.time()
    for method in args.methods.split(","):
        ev = Evaluator.from_paths(model, catalog, data, "validation", args.images, 0, compensation=method,
                                  rule_store=Path(paths.cache))
        cache.register_fingerprint(ev.fingerprint, ev.description)
        n_layers = len(ev.layers)
        for m, entry in enumerate(tqdm(catalog, desc=method)):
            genome = (m,) * n_layers
            record = cache.get(ev.fingerprint, genome)
            if record is None:
                s = ev.score(genome)
                record = cache.put(ev.fingerprint, genome, s.accuracy, s.energy, s.n_images, s.seconds, "ablation")
            rows.append({"circuit": entry.name, "method": method, "layers": ";".join(ev.design_labels(genome)),
                         "energy": ev.energy(genome), "accuracy": record.accuracy})
    with open(out / "ablation.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    table = {(r["circuit"], r["method"]): r["accuracy"] for r in rows}
    energy = {r["circuit"]: r["energy"] for r in rows}
    order = sorted(energy, key=energy.get)
    lines = [f"Uniform genomes, {args.images} validation images (search set); accuracy in %. "
             f"Computed in {time.time() - start:.0f} s (cache hits included).", "",
             "| circuit | energy | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for c in order:
        best = max(table[(c, m)] for m in methods)
        cells = [(f"**{100 * table[(c, m)]:.1f}**" if table[(c, m)] == best else f"{100 * table[(c, m)]:.1f}") for m in methods]
        lines.append(f"| {c} | {energy[c]:.3f} | " + " | ".join(cells) + " |")
    for m in methods:
        accs = np.array([table[(c, m)] for c in order])
        lines.append(f"\n{m}: {int(np.sum(accs >= 0.80))} circuits >= 80 %, {int(np.sum(accs <= 0.15))} near chance (<= 15 %)")
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, m in enumerate(methods):
        ax.plot([energy[c] for c in order], [table[(c, m)] for c in order], marker="o", ms=3, lw=0.8, label=m, c=f"C{i}")
    ax.set_xlabel("relative multiplication energy (same circuit in every conv layer)")
    ax.set_ylabel(f"top-1 accuracy ({args.images} validation images)")
    ax.set_title("Compensation ablation: uniform genomes")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "ablation.png", dpi=120)


if __name__ == "__main__":
    main()
