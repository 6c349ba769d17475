"""Cost of one `design` retraining epoch against one float training epoch (issue 37).

Both in the same process, on the same training images with the same batch size: the float
model's epoch (Keras fit, Adam, cross-entropy) and `design`'s retraining epoch of one design
(its recipe: distillation from the all-exact twin, kernels clipped, every product looked up,
the search-set accuracy after the epoch). Machines differ up to 3x, so the ratio is the figure.

    python benchmarks/bench_retrain_epoch.py --from experiments/design/alexnet/seed0/search \
        --genome 4,23,21,12,23 [--epochs 2] [--train-images 20000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

from surrogate_nas.config import resolve_paths
from surrogate_nas.workflows.context import Context
from surrogate_nas.workflows.design import DesignSettings
from surrogate_nas.workflows.design_phases import design_recipe, design_retrainer, float_baselines
from surrogate_nas.workflows.design_retrain import Candidate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="run_dir", required=True, help="a finished run folder (a design's search/)")
    parser.add_argument("--genome", required=True, help="circuit indices, comma-separated, one per conv layer")
    parser.add_argument("--epochs", type=int, default=2, help="retraining epochs timed (default 2)")
    parser.add_argument("--train-images", type=int, default=DesignSettings.train_images)
    parser.add_argument("--recipe", default=DesignSettings.recipe)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    settings = DesignSettings(train_images=args.train_images, recipe=args.recipe, epochs=args.epochs)
    genome = tuple(int(g) for g in args.genome.split(","))
    ctx, _ = Context.from_run(Path(args.run_dir), replace(resolve_paths(), model=None), quiet=True)
    try:
        base = float_baselines(ctx, design_recipe(settings))
        with tempfile.TemporaryDirectory() as tmp:
            retrainer = design_retrainer(ctx, settings, Path(tmp))
            history = retrainer.train(Candidate("bench", genome, 0.0, "front"), 0, args.epochs)
    finally:
        ctx.close()
    epochs = [h["seconds"] for h in history[1:]]
    first, rest = epochs[0], epochs[1:]
    steady = sum(rest) / len(rest) if rest else first
    result = {"genome": list(genome), "train_images": base["train_images"], "recipe": args.recipe,
              "float_train_epoch_s": base["float_train_epoch_s"], "float_pass_s": base["float_pass_s"],
              "retrain_epoch_s": epochs, "retrain_epoch_steady_s": steady,
              "ratio_first": first / base["float_train_epoch_s"], "ratio_steady": steady / base["float_train_epoch_s"],
              "tune_accuracy": [h["tune_accuracy"] for h in history]}
    print(f"genome {args.genome}, {base['train_images']} training images, recipe {args.recipe}")
    print(f"float training epoch {base['float_train_epoch_s']:.1f} s (float pass on 2,000 images "
          f"{base['float_pass_s']:.3f} s)")
    print(f"retraining epochs {', '.join(f'{s:.1f}' for s in epochs)} s: first {result['ratio_first']:.2f}x, "
          f"later {result['ratio_steady']:.2f}x a float training epoch")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
