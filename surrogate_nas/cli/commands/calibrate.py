"""`python -m surrogate_nas calibrate --model M.keras`: write the model's card (any Keras CNN)."""

from __future__ import annotations

import argparse

from surrogate_nas.cli.flags import add_path_flags


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="measure a model's card: input ranges, code histograms, MACs, accuracies",
                       description="Calibrate any Keras CNN (.keras file) on the training split of --data and "
                                   "write its card (M.json next to M.keras); evaluate and run use it.")
    p.add_argument("--seed", type=int, default=0, help="seed of the 2,000 calibration images (default 0)")
    p.add_argument("--force", action="store_true",
                   help="re-measure a card that is current (its ranges may move in the last bits, which changes "
                        "the evaluation fingerprint: cached accuracies are then not reused)")
    p.add_argument("--input-percentile", type=float, default=100.0, metavar="P",
                   help="each layer's input range ends at this percentile of its calibration inputs instead of "
                        "their maximum (e.g. 99.9: the rarest activations saturate, every other one gets finer "
                        "codes, so a circuit's error weighs less); default 100, tf-approximate's min..max")
    add_path_flags(p, catalog=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from surrogate_nas.cli.flags import paths_from_args
    from surrogate_nas.errors import UserError
    from surrogate_nas.evaluation.inputs import ensure_model, load_data_from
    from surrogate_nas.network.calibrate import calibrate_model, format_card

    if args.seed < 0:
        raise UserError(f"--seed: must be >= 0, got {args.seed}")
    if not 50 < args.input_percentile <= 100:
        raise UserError(f"--input-percentile: must be in (50, 100], got {args.input_percentile:g}")
    paths = paths_from_args(args)
    model_path = ensure_model(paths)
    card_file = model_path.with_suffix(".json")
    if card_file.is_file() and not args.force:
        import json

        from surrogate_nas.network.card import weights_sha256

        try:
            current = json.loads(card_file.read_text()).get("weights_sha256")
        except (ValueError, AttributeError, UnicodeDecodeError):
            current = None
        if current == weights_sha256(model_path):
            raise UserError(f"{card_file}: the card of {model_path} is current; pass --force to measure it again "
                            "(evaluations cached under the old card are then not reused)")
    card = calibrate_model(model_path, load_data_from(paths), seed=args.seed, input_percentile=args.input_percentile)
    print(format_card(model_path, card))
    print(f"wrote {model_path.with_suffix('.json')} ({card['calibration_seconds']:.0f} s)")
    return 0
