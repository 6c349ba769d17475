"""`python -m surrogate_nas evaluate --genome ...`: true accuracy and energy of one genome."""

from __future__ import annotations

import argparse
import json

from surrogate_nas.cli.flags import add_approximate_flag, add_path_flags


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="accuracy and relative energy of one genome")
    p.add_argument("--genome", required=True,
                   help="one multiplier per approximable layer, comma-separated names or catalog indices")
    p.add_argument("--split", default="validation", help="validation (search set) or test")
    p.add_argument("--images", type=int, default=None,
                   help="stratified subset size (default: 2000 validation, all test); with --check, also the "
                        "check's images (default: 32 of them)")
    p.add_argument("--seed", type=int, default=0, help="seed of the stratified subset")
    p.add_argument("--compensation", default="auto",
                   help="none, bias, tune, alwann, tune+bias or auto (default: per layer and circuit, the method "
                        "measured best on training images)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    p.add_argument("--check", action="store_true",
                   help="also show, on a few images (32, or --images), that each non-exact circuit's table changes "
                        "its layers' outputs against the exact table; a table that changes nothing is an error")
    add_approximate_flag(p)
    add_path_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from surrogate_nas.cli.flags import paths_from_args
    from surrogate_nas.errors import UserError
    from surrogate_nas.evaluation.images import SCORED_SPLITS
    from surrogate_nas.evaluation.inputs import ensure_model, load_catalog_from
    from surrogate_nas.genome import (
        check_approximate,
        format_layers,
        genome_names,
        parse_genome,
    )
    from surrogate_nas.multipliers.compensation import check_method
    from surrogate_nas.network.card import load_model
    from surrogate_nas.network.layers import approximable_layers
    from surrogate_nas.workflows.context import Context

    if args.split not in SCORED_SPLITS:
        raise UserError(f"--split: expected one of {', '.join(SCORED_SPLITS)}, got {args.split!r}")
    check_method(args.compensation)
    check_approximate(args.approximate)
    if args.images is not None and args.images < 1:
        raise UserError(f"--images: must be positive, got {args.images}")
    if args.seed < 0:
        raise UserError(f"--seed: must be >= 0, got {args.seed}")
    paths = paths_from_args(args)
    parse_genome(args.genome, load_catalog_from(paths, args.compensation))  # names and indices, before anything loads
    # the genome's length before data, card and the auto rule (minutes on a new model)
    layers = approximable_layers(load_model(ensure_model(paths)), args.approximate)
    parse_genome(args.genome, load_catalog_from(paths, args.compensation), len(layers))
    n_images = args.images if args.images is not None else (2000 if args.split == "validation" else None)
    ctx = Context(paths, None, None, seed=args.seed, quiet=args.json, compensation=args.compensation,
                  approximate=args.approximate)
    catalog = ctx.catalog
    genome = parse_genome(args.genome, catalog, len(layers))
    evaluator = ctx.build_evaluator(args.split, n_images, args.seed, rule_for=[genome])
    score = evaluator.score(genome)
    methods = evaluator.design_labels(genome)
    check = None
    if args.check:
        from surrogate_nas.evaluation.table_check import (
            CHECK_IMAGES,
            check_dict,
            check_tables,
            format_check,
            unused_error,
        )

        n_check = min(args.images or CHECK_IMAGES, evaluator.n_images)
        check = check_tables(evaluator, genome, evaluator.image_set.images[:n_check])
    if args.json:
        doc = {
            "genome": genome_names(genome, catalog),
            "genome_indices": list(genome),
            "layers": evaluator.layer_names,
            "compensation": args.compensation,
            "layer_compensation": methods,
            "accuracy": score.accuracy,
            "energy": score.energy,
            "n_images": score.n_images,
            "split": args.split,
            "seconds": round(score.seconds, 3),
            "fingerprint": evaluator.fingerprint,
        }
        if check is not None:
            doc["check"] = check_dict(check, n_check, args.split)
        print(json.dumps(doc))
    else:
        print(format_layers(genome, catalog, methods, evaluator.infos))
        print(f"Accuracy: {score.accuracy:.4f} ({args.split}, {score.n_images} images)")
        print(f"Relative energy: {score.energy:.4f}")
        print(f"Seconds: {score.seconds:.2f}")
        if check is not None:
            print(format_check(check, n_check, args.split))
    error = None if check is None else unused_error(check, n_check, args.split)
    if error is not None:  # after the report, which shows every layer
        raise error
    return 0
