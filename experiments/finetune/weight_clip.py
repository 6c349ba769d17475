"""Before any retraining: how clipping each conv kernel to mean +- c standard deviations moves
the all-exact 8-bit twin and the 45.9 % design q45 (`tune` compensation) on the run's search set.

The emulation quantizes a kernel over its own min..max, and a circuit's error is fixed in code
units, so a narrower range (outliers clipped) makes the error smaller next to the products,
while the clipping itself costs the all-exact network accuracy. Retraining (`--weight-clip`,
`ClipRange`) then trains within the clipped range. Writes weight-clip/before-retraining.{json,md}.

    PYTHONPATH=. python experiments/finetune/weight_clip.py
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import Setup  # noqa: E402

RUN = Path("experiments/headline/seeds/surrogate-b300-s0")
OUT = Path("experiments/finetune/recipes/weight-clip")
Q45 = ("mul8u_19DB", "mul8u_185Q", "mul8u_185Q", "mul8u_PKY", "mul8u_185Q")


def main():
    from surrogate_nas.evaluation.evaluator import Evaluator
    from surrogate_nas.network.retraining import ClipRange
    from surrogate_nas.workflows.retrain import _exact_genome

    setup = Setup(RUN)
    ev = Evaluator(setup.float_model, setup.card, setup.catalog, setup.search, compensation="tune",
                   calibration=setup.calibration, rule_store=setup.cache, quiet=True)
    genome = [setup.catalog.index(name) for name in Q45]
    compensations = [ev.designs.compensation(i, g) for i, g in enumerate(genome)]
    exact = list(_exact_genome(ev))
    start = [layer.kernel.numpy().copy() for layer in ev.layers]
    spread = {layer.name: float(np.abs(k - k.mean()).max() / k.std()) for layer, k in zip(ev.layers, start)}
    x, y = setup.search.images, setup.search.labels
    rows = []
    for c in (None, 6.0, 4.0, 3.0, 2.5, 2.0):
        for layer, k in zip(ev.layers, start):
            layer.kernel.assign(k if c is None else ClipRange.around(k, c)(k))
        ev.set_designs(exact, [None] * len(exact))
        all_exact = ev.top1(x, y)
        ev.set_designs(genome, compensations)
        rows.append({"clip_std": c, "all_exact": all_exact, "q45_tune": ev.top1(x, y)})
        print(rows[-1], flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    doc = {"run": str(RUN), "images": "the run's search set (2,000 validation images)", "design": ";".join(Q45),
           "compensation": "tune", "max_abs_deviation_in_std": spread, "rows": rows}
    (OUT / "before-retraining.json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = ["| kernels clipped to | all-exact | q45 (45.9 %, tune) |", "| --- | --- | --- |"]
    for r in rows:
        label = "not clipped" if r["clip_std"] is None else f"mean +- {r['clip_std']:g} std"
        lines.append(f"| {label} | {100 * r['all_exact']:.2f} % | {100 * r['q45_tune']:.2f} % |")
    (OUT / "before-retraining.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
