"""`python -m surrogate_nas design --out DIR`: from a model to retrained designs chosen on
images nothing else used (calibration rule, search, raced retraining, soups, choice)."""

from __future__ import annotations

import argparse
from pathlib import Path

from surrogate_nas.cli.flags import add_path_flags


def register(sub: argparse._SubParsersAction) -> None:
    from surrogate_nas.workflows.design import DesignSettings

    d = DesignSettings()
    p = sub.add_parser("design", help="model -> calibrated, searched, retrained designs chosen on held-out images",
                       description="One resumable folder: calibration chosen by a rule on training images, the "
                                   "search (as run), retraining candidates raced within --retrain-epochs with "
                                   "several seeds and a greedy soup, then the choice at 0.5 / 1 / 2 pp on the "
                                   "validation images the search did not use; test only reports. Run the same "
                                   "command again to continue an interrupted design.")
    p.add_argument("--out", required=True, help="the design's folder (design.json, design.md, design.png, .keras)")
    p.add_argument("--budget", type=int, default=d.budget, help=f"true evaluations of the search (default {d.budget})")
    p.add_argument("--from", dest="from_run", metavar="RUN_DIR",
                   help="start from this finished run instead of calibrating and searching")
    p.add_argument("--retrain-epochs", type=int, default=d.retrain_epochs,
                   help=f"retraining budget: epochs over all candidates and seeds, race included (default "
                        f"{d.retrain_epochs}; the same on every machine; 0: no retraining)")
    p.add_argument("--retrain-hours", type=float, default=None,
                   help="also stop the retraining after this many hours (default: no wall-clock cap; 0: none)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the search (default 0)")
    p.add_argument("--search-images", type=int, default=d.search_images,
                   help=f"validation images of the search and tuning (default {d.search_images}); the rest choose")
    p.add_argument("--recipe", default=d.recipe, help=f"retraining recipe, a name from "
                                                      f"surrogate_nas.network.retraining.RECIPES (default {d.recipe})")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs per retraining (default {d.epochs})")
    p.add_argument("--train-images", type=int, default=d.train_images,
                   help=f"training images per retraining epoch (default {d.train_images}; 0: all)")
    p.add_argument("--seeds", type=int, default=d.seeds, help=f"retraining seeds per candidate, at most "
                                                              f"(default {d.seeds})")
    p.add_argument("--max-candidates", type=int, default=d.max_candidates,
                   help=f"retraining candidates, at most (default {d.max_candidates})")
    p.add_argument("--max-distinct", type=int, default=None, metavar="K",
                   help="every design uses at most K distinct circuits (hardware shares multipliers)")
    p.add_argument("--test-images", type=int, default=None, help="test images for the report (default: all)")
    add_path_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from surrogate_nas.cli.flags import paths_from_args
    from surrogate_nas.config import portable, project_root
    from surrogate_nas.errors import UserError
    from surrogate_nas.workflows.design import DesignSettings, design

    import signal

    def stop(signum, frame):  # a kill ends like Ctrl-C: the phase's seconds are recorded, nothing is lost
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    paths = paths_from_args(args)
    root = project_root(paths)
    if args.from_run and not Path(args.from_run).is_dir():
        raise UserError(f"--from {args.from_run}: no such run folder")
    if args.train_images is not None and args.train_images < 0:
        raise UserError(f"--train-images: must be >= 0 (0: all), got {args.train_images}")
    settings = DesignSettings(
        model=None if args.from_run else portable(paths.model, root), budget=args.budget, seed=args.seed,
        retrain_hours=args.retrain_hours, retrain_epochs=args.retrain_epochs, from_run=portable(args.from_run, root) if args.from_run else None,
        search_images=args.search_images, recipe=args.recipe, epochs=args.epochs,
        train_images=args.train_images or None,
        seeds=args.seeds, test_images=args.test_images, max_candidates=args.max_candidates,
        max_distinct=args.max_distinct)
    doc = design(paths, settings, Path(args.out))
    for rule, name in (("chosen", "point estimate"), ("chosen_upper", "upper bound")):
        for key, c in doc[rule].items():
            print(f"within {key} pp ({name}): " + ("no design" if c is None else
                  f"saving {c['energy_saving_pct']:.1f} %, choosing loss {c['choosing_loss_pp']:.2f} pp, test loss "
                  f"{c['test_loss_pp']:.2f} pp, {'retrained' if c['retrained'] else 'not retrained'}: {c['design']}"))
    print(f"-> {Path(args.out) / 'design.json'}, design.md, design.png")
    return 0
