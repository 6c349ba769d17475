"""Before any retraining: how ending each conv layer's input range at a percentile of its
calibration inputs (`calibrate --input-percentile`), alone and with the kernels clipped
to mean +- c std (`--weight-clip`), moves the all-exact 8-bit twin and the 45.9 % design
q45 (`tune` compensation) on the run's search set.

A circuit's error is fixed in code units. Min..max ranges spend most of the 256 input codes
on rare large activations, so the bulk of the activations get few codes and the error is
large next to their products. Writes input-range/before-retraining.{json,md}.

    PYTHONPATH=. python experiments/finetune/input_range.py
"""

import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipes import Setup  # noqa: E402
from weight_clip import Q45, RUN  # noqa: E402

OUT = Path("experiments/finetune/recipes/input-range")
PERCENTILES = (100.0, 99.99, 99.9, 99.5, 99.0)
CLIPS = (None, 4.0, 3.0)


def main():
    from surrogate_nas.evaluation.evaluator import Evaluator
    from surrogate_nas.network.measure import calibrate_input_ranges
    from surrogate_nas.network.retraining import ClipRange
    from surrogate_nas.workflows.retrain import _exact_genome

    setup = Setup(RUN)
    x, y = setup.search.images, setup.search.labels
    rows = []
    for p in PERCENTILES:
        card = copy.deepcopy(setup.card)  # the shipped card's ranges are min..max on these calibration images
        if p < 100:
            card["input_ranges"] = [list(r) for r in
                                    calibrate_input_ranges(setup.float_model, setup.calibration.images, percentile=p)]
        ev = Evaluator(setup.float_model, card, setup.catalog, setup.search, compensation="tune",
                       calibration=setup.calibration, quiet=True)
        genome = [setup.catalog.index(name) for name in Q45]
        compensations = [ev.designs.compensation(i, g) for i, g in enumerate(genome)]
        exact = list(_exact_genome(ev))
        start = [layer.kernel.numpy().copy() for layer in ev.layers]
        for c in CLIPS:
            for layer, k in zip(ev.layers, start):
                layer.kernel.assign(k if c is None else ClipRange.around(k, c)(k))
            ev.set_designs(exact, [None] * len(exact))
            all_exact = ev.top1(x, y)
            ev.set_designs(genome, compensations)
            rows.append({"input_percentile": p, "clip_std": c, "input_ranges": card["input_ranges"],
                         "all_exact": all_exact, "q45_tune": ev.top1(x, y)})
            print({k: v for k, v in rows[-1].items() if k != "input_ranges"}, flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    doc = {"run": str(RUN), "images": "the run's search set (2,000 validation images)", "design": ";".join(Q45),
           "compensation": "tune", "calibration": "the card's 2,000 training images", "rows": rows}
    (OUT / "before-retraining.json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = ["| input ranges end at | kernels | all-exact | q45 (45.9 %, tune) |", "| --- | --- | --- | --- |"]
    for r in rows:
        end = "max (min..max)" if r["input_percentile"] == 100 else f"percentile {r['input_percentile']:g}"
        clip = "not clipped" if r["clip_std"] is None else f"mean +- {r['clip_std']:g} std"
        lines.append(f"| {end} | {clip} | {100 * r['all_exact']:.2f} % | {100 * r['q45_tune']:.2f} % |")
    (OUT / "before-retraining.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
