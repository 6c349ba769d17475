"""`python -m surrogate_nas train`: train the float model, calibrate it, write its card."""

from __future__ import annotations

import argparse
from pathlib import Path

from surrogate_nas.config import DEFAULT_TRAIN_EPOCHS
from surrogate_nas.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a shipped architecture (alexnet, resnet8) and write its card")
    p.add_argument("--arch", default="alexnet", help="alexnet (default) or resnet8 (tf-approximate's example ResNet-8)")
    p.add_argument("--epochs", type=int, default=DEFAULT_TRAIN_EPOCHS, help=f"training epochs (default {DEFAULT_TRAIN_EPOCHS})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-images", type=int, default=None, help="use only the first N training images (smoke runs)")
    p.add_argument("--data", help="data: image-folder dataset (folder or archive), or CIFAR-10's official release")
    p.add_argument("--cache", help="cache folder (decoded dataset)")
    p.add_argument("--model", help="where to write the .keras model (its card goes next to it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.epochs < 1:
        raise UserError(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if args.train_images is not None and args.train_images < 1:
        raise UserError(f"--train-images must be >= 1, got {args.train_images}")
    from surrogate_nas.config import resolve_paths
    from surrogate_nas.network.architectures import ARCHITECTURES
    from surrogate_nas.network.training import train_and_save

    if args.arch not in ARCHITECTURES:
        raise UserError(f"--arch: expected one of {', '.join(ARCHITECTURES)}, got {args.arch!r}")
    paths = resolve_paths(data=args.data, cache=args.cache, model=args.model)
    if args.arch != "alexnet" and args.model is None:
        model_path = Path(f"models/{args.arch}_cifar10.keras")  # the configured model is the AlexNet
    else:
        model_path = Path(paths.model or "models/alexnet_cifar10.keras")
    card = train_and_save(
        model_path,
        data_path=paths.data,
        cache_dir=paths.cache,
        epochs=args.epochs,
        seed=args.seed,
        batch_size=args.batch_size,
        train_images=args.train_images,
        arch=args.arch,
    )
    print(
        f"saved {model_path}: float test accuracy {card['float_test_accuracy']:.4f}, "
        f"8-bit exact {card['int8_exact_test_accuracy']:.4f}, {card['train_seconds']:.0f} s"
    )
    return 0
