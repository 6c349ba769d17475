"""`multipliers list` / `multipliers import`: inspect and build multiplier catalogs.

The `index` column is the position in catalog.csv, i.e. the gene value the search uses,
so it is shown whatever the sort order.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from surrogate_nas import config
from surrogate_nas.errors import UserError

# sort key name -> (column header, function of (index, multiplier))
SORT_KEYS: dict[str, Callable] = {
    "index": lambda i, m: i,
    "name": lambda i, m: m.name,
    "power": lambda i, m: m.power_mw,
    "mae": lambda i, m: m.metrics.mae,
    "wce": lambda i, m: m.metrics.wce,
    "ep": lambda i, m: m.metrics.ep_pct,
    "mre": lambda i, m: m.metrics.mre_pct,
    "mse": lambda i, m: m.metrics.mse,
    "mean_error": lambda i, m: m.metrics.mean_error,
    "error_std": lambda i, m: m.metrics.error_std,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "multipliers",
        help="list or import catalogs of approximate multipliers",
        description="List a multiplier catalog or build one from lookup tables, C circuits or a Python function.",
    )
    parser.set_defaults(func=lambda args: _no_subcommand(parser))
    sub = parser.add_subparsers(dest="multipliers_command", metavar="SUBCOMMAND")

    p_list = sub.add_parser("list", help="print the catalog as a table (index = gene value)")
    p_list.add_argument("--catalog", metavar="DIR", help="catalog folder (default: SURROGATE_NAS_MULTIPLIERS "
                        "or [paths] multipliers in surrogate_nas.toml)")
    p_list.add_argument("--sort", choices=sorted(SORT_KEYS), default="power",
                        help="sort rows by this column (default: power, ascending)")
    p_list.set_defaults(func=cmd_list)

    p_imp = sub.add_parser(
        "import",
        help="build a catalog folder from .bin tables, EvoApproxLib .c files or module:function",
        description="SRC is a folder of .bin tables (powers from --powers or its catalog.csv/powers.csv), "
        "a .c file or folder of .c files (power from the header: '// PDK45_PWR = x mW' or EvoApprox8b's "
        "'///  Power  (45) = x' in uW; --powers wins), or module:function (needs --power). Several SRC "
        "build their union. The exact reference is the cheapest circuit whose table is the exact product "
        "(ties: by name) unless --exact names one. See multipliers/README.md.",
    )
    p_imp.add_argument("src", metavar="SRC", nargs="+")
    p_imp.add_argument("--exact", metavar="NAME", help="exact reference of relative energy (default: the "
                       "cheapest exact circuit, ties by name)")
    p_imp.add_argument("--rescale", action="store_true", help="several SRC with different power sources: take "
                       "each source's powers relative to its own exact circuit, times the reference's power")
    p_imp.add_argument("--out", metavar="DIR", required=True, help="catalog folder to write")
    p_imp.add_argument("--powers", metavar="CSV", help="CSV with columns name,power_mW")
    p_imp.add_argument("--power", metavar="MW", help="power in mW of a single circuit")
    p_imp.add_argument("--name", help="circuit name for a single circuit (default: from the source)")
    p_imp.add_argument("--overwrite", action="store_true", help="replace an existing catalog.csv in --out")
    p_imp.set_defaults(func=cmd_import)


def _no_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def format_table(catalog, sort: str = "power") -> str:
    """Aligned text table of a catalog; numbers right-aligned, ties kept in catalog order."""
    if sort not in SORT_KEYS:
        raise UserError(f"--sort {sort}: choose one of {', '.join(sorted(SORT_KEYS))}")
    key = SORT_KEYS[sort]
    order = sorted(enumerate(catalog), key=lambda im: (key(*im), im[0]))
    exact = catalog.exact
    ref = exact.power_mw if exact is not None and exact.power_mw > 0 else None
    header = ["index", "name", "power_mW", "rel_power", "MAE", "WCE", "EP_%", "MRE_%", "mean_err", "err_std"]
    rows = []
    for i, m in order:
        mt = m.metrics
        rows.append([
            str(i),
            m.name + (" *" if m is exact else ""),
            f"{m.power_mw:.4f}",
            f"{100 * m.power_mw / ref:.1f}%" if ref else "-",
            f"{mt.mae:.2f}",
            f"{mt.wce:.0f}",
            f"{mt.ep_pct:.2f}",
            f"{mt.mre_pct:.3f}",
            f"{mt.mean_error:.2f}",
            f"{mt.error_std:.2f}",
        ])
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    left = {1}

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if k in left else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [line(header), *(line(r) for r in rows)]
    note = f"{catalog.reference_text()} (*)" if exact is not None else catalog.reference_text()
    sources = catalog.power_sources
    power = f"; power from {', '.join(sources)}" if sources else ""
    lines.append(f"{len(catalog)} multipliers in {catalog.path}; {note}{power}; index = gene value")
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace) -> int:
    from surrogate_nas.multipliers.catalog import load_catalog

    paths = config.resolve_paths(multipliers=args.catalog)
    folder = config.require(paths.multipliers, "multipliers", "multiplier catalog")
    catalog = load_catalog(folder)
    print(format_table(catalog, args.sort))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from surrogate_nas.multipliers.importers import import_catalog

    notes: list[str] = []
    src = args.src[0] if len(args.src) == 1 else args.src
    catalog = import_catalog(src, args.out, powers_csv=args.powers, name=args.name, power=args.power,
                             overwrite=args.overwrite, exact=args.exact, rescale=args.rescale, notes=notes)
    print(f"imported {len(catalog)} multiplier(s) from {', '.join(args.src)} into {catalog.path}")
    print(format_table(catalog, "power"))
    for line in notes:
        print(line)
    print(catalog.reference_text())
    return 0
