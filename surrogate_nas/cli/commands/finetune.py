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
                        "the best after it")
    p.add_argument("--genome", help="fine-tune this genome instead (names or indices, comma-separated)")
    p.add_argument("--compensation", default=None,
                   help="with --genome: compensation (default: the run's)")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"epochs per design (default {DEFAULT_EPOCHS})")
    p.add_argument("--train-images", type=int, default=DEFAULT_TRAIN_IMAGES,
                   help=f"stratified training subset per epoch (default {DEFAULT_TRAIN_IMAGES}; 0 = all 45,000)")
    p.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"Adam learning rate (default {DEFAULT_LR})")
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
    from surrogate_nas.workflows.finetune import finetune_run, format_results

    if args.epochs < 1:
        raise UserError(f"--epochs: must be at least 1, got {args.epochs}")
    if args.train_images < 0:
        raise UserError(f"--train-images: must be >= 0 (0 = all), got {args.train_images}")
    if not args.lr > 0:
        raise UserError(f"--lr: must be > 0, got {args.lr}")
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
        compensation=args.compensation, epochs=args.epochs, train_images=args.train_images or None,
        lr=args.lr, seed=args.seed, test_images=args.test_images, band=band,
    )
    print(format_results(results, summary))
    print(f"-> {out / 'finetune.csv'}, {out / 'finetune.png'}, {out / 'finetune.json'}")
    return 0
