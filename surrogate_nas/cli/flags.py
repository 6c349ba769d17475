"""Flags shared by commands, and settings from flags: paths, layers, workers, and the
search flags of `run`/`compare`/`study`."""

from __future__ import annotations

import argparse

from surrogate_nas.config import Paths, resolve_paths


def add_path_flags(parser, model: bool = True, data: bool = True, catalog: bool = True, cache: bool = True) -> None:
    if catalog:
        parser.add_argument("--catalog", help="multiplier catalog folder (catalog.csv + .bin tables)")
    if data:
        parser.add_argument("--data", help="data: image-folder dataset (folder or archive), or CIFAR-10's official release")
    if model:
        parser.add_argument("--model", help="trained .keras model (its .json card next to it)")
    if cache:
        parser.add_argument("--cache", help="cache folder (evaluation database, decoded data)")


def add_approximate_flag(parser) -> None:
    parser.add_argument("--approximate", default="conv",
                        help="which layers get a multiplier (a gene): conv (default) or conv+dense")


def paths_from_args(args) -> Paths:
    return resolve_paths(
        multipliers=getattr(args, "catalog", None),
        data=getattr(args, "data", None),
        cache=getattr(args, "cache", None),
        model=getattr(args, "model", None),
    )


def add_search_flags(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per `SearchConfig` field (but those in `skip`), with its default and help:
    the settings are defined once, there."""
    from dataclasses import MISSING, fields

    from surrogate_nas.search.config import SearchConfig

    for f in fields(SearchConfig):
        if f.name in skip:
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        if isinstance(default, bool):
            p.add_argument(flag, dest=f.name, action="store_false" if default else "store_true", help=f.metadata["help"])
            continue
        parse = f.metadata.get("parse") or type(default)
        p.add_argument(flag, dest=f.name, type=parse, default=default, help=f.metadata["help"],
                       metavar=f.name.upper())


def add_worker_flags(p: argparse.ArgumentParser) -> None:
    """Where evaluations run; never changes a result, so also allowed with --resume."""
    p.add_argument("--workers", type=int, default=1,
                   help="local worker processes for true evaluations (default 1: in this process)")
    p.add_argument("--dask-scheduler", metavar="ADDRESS",
                   help="run true evaluations on the Dask cluster of this scheduler (e.g. tcp://host:8786)")


def worker_settings(args) -> dict:
    from surrogate_nas.errors import UserError

    if args.workers < 1:
        raise UserError(f"--workers: must be >= 1, got {args.workers}")
    if args.workers > 1 and args.dask_scheduler:
        raise UserError("--workers and --dask-scheduler: give one (a cluster brings its own workers)")
    return {"workers": args.workers, "dask_scheduler": args.dask_scheduler}


def config_from_args(args, **fixed) -> "SearchConfig":  # noqa: F821
    """The `SearchConfig` of the flags `add_search_flags` made (and `fixed` values)."""
    from dataclasses import fields

    from surrogate_nas.search.config import SearchConfig

    given = {f.name: getattr(args, f.name) for f in fields(SearchConfig) if hasattr(args, f.name)}
    return SearchConfig(**{**given, **fixed})
