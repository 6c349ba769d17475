"""`cache stats` / `cache export` / `cache import`: see what the evaluation cache holds, take
it elsewhere, and bring evaluations back (another machine's export, or run folders whose
cache is gone).

Fingerprints are shown by their first 12 characters; `--fingerprint` accepts any unique
prefix, so what stats prints can be pasted back.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from surrogate_nas import config
from surrogate_nas.errors import UserError
from surrogate_nas.evaluation.cache import EvalCache, default_cache_file

SHORT_FP = 12


DESCRIPTION_WIDTH = 60


# Description keys worth showing first; hashes and long lists are left out of the summary.
PREFERRED_KEYS = ("model", "catalog", "n_images", "quantization", "dataset", "data")


_HEX = re.compile(r"^[0-9a-f]{32,}$")


_CACHE_HELP = "cache folder (default: SURROGATE_NAS_CACHE or [paths] cache in surrogate_nas.toml, else ./cache)"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="inspect or export the genome -> accuracy evaluation cache",
        description="The evaluation cache is <cache folder>/evaluations.sqlite, shared by runs and processes. "
                    "A damaged file is left as it is: move it away and `cache import` the run folders to rebuild it.",
    )
    parser.set_defaults(func=lambda args: _no_subcommand(parser))
    sub = parser.add_subparsers(dest="cache_command", metavar="SUBCOMMAND")

    p_stats = sub.add_parser("stats", help="rows and hits per fingerprint")
    p_stats.add_argument("--cache", metavar="DIR", help=_CACHE_HELP)
    p_stats.set_defaults(func=cmd_stats)

    p_exp = sub.add_parser("export", help="write cached evaluations to a CSV file")
    p_exp.add_argument("--csv", metavar="FILE", required=True, help="CSV file to write")
    p_exp.add_argument("--fingerprint", metavar="FP", help="only this fingerprint (a unique prefix is enough)")
    p_exp.add_argument("--cache", metavar="DIR", help=_CACHE_HELP)
    p_exp.set_defaults(func=cmd_export)

    p_imp = sub.add_parser("import", help="add evaluations from `cache export` files or run folders",
                           description="Rows already in the cache win, unless an imported row settles more "
                                       "(a complete evaluation replacing an early stop), as in a run.")
    p_imp.add_argument("sources", nargs="+", metavar="PATH",
                       help="a `cache export` CSV, a run folder, or a folder searched for run folders")
    p_imp.add_argument("--cache", metavar="DIR", help=_CACHE_HELP)
    p_imp.set_defaults(func=cmd_import)


def _no_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _cache_file(args: argparse.Namespace) -> Path:
    return default_cache_file(config.resolve_paths(cache=args.cache).cache)


def summarize_description(description: dict | None, width: int = DESCRIPTION_WIDTH) -> str:
    """A one-line hint of what a fingerprint is for (model, catalog, images...)."""
    if not isinstance(description, dict):
        return ""
    keys = [k for k in PREFERRED_KEYS if k in description]
    keys += sorted(k for k in description if k not in keys)
    parts = []
    for key in keys:
        value = description[key]
        if isinstance(value, bool) or value is None:
            text = str(value).lower()
        elif isinstance(value, (int, float)):
            text = str(value)
        elif isinstance(value, str):
            if _HEX.match(value):
                continue
            text = Path(value).name if ("/" in value or "\\" in value) else value
        elif isinstance(value, (list, tuple)) and key in PREFERRED_KEYS:
            text = f"[{len(value)}]"
        else:
            continue
        parts.append(f"{key}={text}")
    line = " ".join(parts)
    return line if len(line) <= width else line[: width - 3] + "..."


def format_stats(stats: list[dict]) -> str:
    header = ["fingerprint", "rows", "hits", "first_created", "last_created", "description"]
    rows = [[
        s["fingerprint"][:SHORT_FP],
        str(s["rows"]),
        str(s["hits"]),
        _short_time(s["first_created"]),
        _short_time(s["last_created"]),
        summarize_description(s["description"]),
    ] for s in stats]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {1, 2}
    lines = []
    for r in [header, *rows]:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _short_time(iso: str | None) -> str:
    """'2024-05-01T12:34:56.789+00:00' -> '2024-05-01 12:34:56' (all times are UTC)."""
    if not iso:
        return "-"
    return iso[:19].replace("T", " ")


def cmd_stats(args: argparse.Namespace) -> int:
    path = _cache_file(args)
    if not path.exists():
        print(f"no evaluation cache at {path}")
        return 0
    with EvalCache(path) as cache:
        stats = cache.stats()
    if not stats:
        print(f"{path}: empty")
        return 0
    print(f"{path} (times in UTC)")
    print(format_stats(stats))
    total_rows = sum(s["rows"] for s in stats)
    total_hits = sum(s["hits"] for s in stats)
    print(f"total: {total_rows} rows, {total_hits} hits, {len(stats)} fingerprint(s)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from surrogate_nas.evaluation.cache_csv import export_csv

    path = _cache_file(args)
    out = Path(args.csv).expanduser()
    if out.is_dir():
        raise UserError(f"--csv {out}: is a folder; give a file name")
    if not out.parent.is_dir():
        raise UserError(f"--csv {out}: folder {out.parent} does not exist")
    if not path.exists():
        raise UserError(f"no evaluation cache at {path}: pass --cache or set SURROGATE_NAS_CACHE")
    with EvalCache(path) as cache:
        fp = cache.resolve_fingerprint(args.fingerprint) if args.fingerprint else None
        n = export_csv(cache, out, fingerprint=fp)
    print(f"wrote {n} row(s) to {out}")
    return 0


def _import_sources(path: Path) -> list[Path]:
    """Run folders (holding config.json and evaluations.csv) at or under `path`, or `path`
    itself when it is a file."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"cache import: {path} does not exist")
    found = sorted(p.parent for p in path.rglob("config.json") if (p.parent / "evaluations.csv").is_file())
    if not found:
        raise UserError(f"cache import: {path} holds no run folder (config.json with evaluations.csv)")
    return found


def cmd_import(args: argparse.Namespace) -> int:
    from surrogate_nas.evaluation.cache_csv import read_export_csv
    from surrogate_nas.workflows.run_folder import evaluations_of

    sources = [s for arg in args.sources for s in _import_sources(Path(arg).expanduser())]
    path = _cache_file(args)
    loaded = []  # every source is read before anything is written: a bad one changes nothing
    for source in sources:
        if source.is_dir():
            fp, description, records = evaluations_of(source)
            loaded.append((fp, description, records))
        else:
            loaded.append((None, None, read_export_csv(source)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with EvalCache(path) as cache:
        for fp, description, records in loaded:
            if fp and records:
                cache.register_fingerprint(fp, description)
        changed = cache.merge(r for _, _, records in loaded for r in records)
    total = sum(len(records) for _, _, records in loaded)
    print(f"{path}: read {total} evaluation(s) from {len(sources)} source(s); {changed} row(s) added or updated")
    return 0
