"""`python -m surrogate_nas finetune RUN_DIR`: approximation-aware fine-tuning of a
finished run's validation-chosen designs (or of one `--genome`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from surrogate_nas.cli.flags import add_path_flags


def register(sub: argparse._SubParsersAction) -> None:
    from surrogate_nas.workflows.finetune import (
        DEFAULT_EPOCHS,
        DEFAULT_LR,
        DEFAULT_TRAIN_IMAGES,
    )

    p = sub.add_parser("finetune", help="fine-tune chosen designs of a finished run through the emulation")
    p.add_argument("run_dir", help="a finished run folder (with summary.json)")
    p.add_argument("--points", default="0.5,1,2,5",
                   help="which designs: tolerances in pp, for each the validation-chosen front point (default "
                        "0.5,1,2,5); or band[:LO-HI/WIDTH], the most accurate front point in each WIDTH %% band of "
                        "saving from LO to HI %% (band = band:35-70/5), since a design poor before retraining can be "
                        "the best after it; or quiet[:LO-HI/STEP], at each saving LO, LO+STEP, .., HI %% the design "
                        "adding the least output noise (quiet = quiet:45-65/5), what retraining cannot absorb")
    p.add_argument("--genome", help="fine-tune this genome instead (names or indices, comma-separated)")
    p.add_argument("--compensation", default=None,
                   help="with --genome: compensation (default: the run's)")
    p.add_argument("--recipe", default=None,
                   help="retrain with a recipe of issue 16 instead (kd-adam1e-3-cos: distillation from the all-exact "
                        "twin, Adam 1e-3, warm-up + cosine, 4 epochs on all 45,000 images; kd-aug-adam1e-3-cos, "
                        "kd-adam3e-4-cos, kd-sgd2e-2-cos, kd-tg8-adam1e-3-cos (the tables' own gradient), "
                        "kd-ema-adam1e-3-cos (a moving average of the weights scored and kept), "
                        "kd-feat-adam1e-3-cos (layer-wise distillation from the all-exact twin), "
                        "kd-clip3-adam1e-3-cos, kd-clip4-adam1e-3-cos (kernels kept within 3 / 4 std of their mean), "
                        "ce-adam1e-4): checkpointed after every epoch (a rerun resumes), best epoch on the run's "
                        "search set, kept only when better than the un-tuned design on all validation images; "
                        "--epochs, --lr, --train-images and --weight-clip override the recipe's")
    p.add_argument("--epochs", type=int, default=None, help=f"epochs per design (default {DEFAULT_EPOCHS})")
    p.add_argument("--train-images", type=int, default=None,
                   help=f"stratified training subset per epoch (default {DEFAULT_TRAIN_IMAGES}; 0 = all 45,000)")
    p.add_argument("--lr", type=float, default=None, help=f"(peak) learning rate (default {DEFAULT_LR})")
    p.add_argument("--weight-clip", type=float, default=None,
                   help="with --recipe: keep each approximate kernel within mean +- this many standard deviations "
                        "of its starting values (0 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-images", type=int, default=None, help="test images for re-scoring (default: all)")
    p.add_argument("--out", default=None, help="output folder (default RUN_DIR/finetune)")
    p.add_argument("--report-only", action="store_true", help="rewrite finetune.json/.png from finetune.csv, no training")
    add_path_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from surrogate_nas.cli.flags import paths_from_args
    from surrogate_nas.errors import UserError
    from surrogate_nas.search.config import parse_points
    from surrogate_nas.workflows.finetune import (
        DEFAULT_EPOCHS,
        DEFAULT_LR,
        DEFAULT_TRAIN_IMAGES,
        finetune_run,
        format_results,
    )

    if args.epochs is not None and args.epochs < 1:
        raise UserError(f"--epochs: must be at least 1, got {args.epochs}")
    if args.train_images is not None and args.train_images < 0:
        raise UserError(f"--train-images: must be >= 0 (0 = all), got {args.train_images}")
    if args.lr is not None and not args.lr > 0:
        raise UserError(f"--lr: must be > 0, got {args.lr}")
    if args.weight_clip is not None and (args.recipe is None or not 0 <= args.weight_clip < float("inf")):
        raise UserError(f"--weight-clip: needs --recipe and a value >= 0 (0 = off), got {args.weight_clip}")
    recipe = None
    if args.recipe is not None:
        from dataclasses import replace

        from surrogate_nas.network.retraining import RECIPES

        if args.recipe not in RECIPES:
            raise UserError(f"--recipe: expected one of {', '.join(RECIPES)}, got {args.recipe!r}")
        overrides = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr), ("weight_clip", args.weight_clip))
                     if v is not None}
        if args.train_images is not None:
            overrides["train_images"] = args.train_images or None
        recipe = replace(RECIPES[args.recipe], **overrides)
    tolerances, band = parse_points(args.points)
    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else run_dir / "finetune"
    if args.report_only:
        from surrogate_nas.workflows.context import run_catalog
        from surrogate_nas.workflows.finetune import report_only

        results, summary = report_only(run_dir, out, run_catalog(run_dir, paths_from_args(args)))
        print(format_results(results, summary))
        return 0
    results, summary = finetune_run(
        paths_from_args(args), run_dir, out, tolerances=tolerances, genome=args.genome,
        compensation=args.compensation, epochs=DEFAULT_EPOCHS if args.epochs is None else args.epochs,
        train_images=DEFAULT_TRAIN_IMAGES if args.train_images is None else args.train_images or None,
        lr=DEFAULT_LR if args.lr is None else args.lr, seed=args.seed, test_images=args.test_images, band=band,
        recipe=recipe,
    )
    print(format_results(results, summary))
    print(f"-> {out / 'finetune.csv'}, {out / 'finetune.png'}, {out / 'finetune.json'}")
    return 0
