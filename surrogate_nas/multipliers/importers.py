"""Catalogs of approximate 8x8-bit unsigned multipliers, stored as 256x256 lookup tables.

A catalog is a folder with `catalog.csv` plus one `<name>.bin` table per circuit (the
tf-approximate `mul_map_file` format, see multipliers/README.md). The position of a circuit
in `catalog.csv` is the gene value used by the search, so file order is preserved everywhere.
Error metrics are always recomputed from the tables: the CSV figures are rounded and only
cross-checked, never trusted.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from surrogate_nas.errors import UserError
from surrogate_nas.multipliers.c_circuits import (
    KNOWN_HEADER_FORMATS,
    _c_compiler,
    _run_c_file,
    header_power,
)
from surrogate_nas.multipliers.catalog import (
    CATALOG_CSV,
    EXACT_COLUMN,
    POWER_SOURCE_COLUMN,
    Catalog,
    _parse_power,
    _read_csv,
    load_catalog,
)
from surrogate_nas.multipliers.tables import LUT_SIZE, _read_lut
from surrogate_nas.multipliers.union import (
    DISAGREEMENT,
    _library_notes,
    _merge,
    _one_source,
    _Source,
    _write_catalog,
)

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


def _check_name(name: str, where: str) -> str:
    name = name.removesuffix(".bin")
    if not _NAME_RE.fullmatch(name):
        raise UserError(f"{where}: {name!r} is not usable as a multiplier name (letters, digits, _ . + - only)")
    return name


def _validate_products(values: Any, name: str, where: str) -> np.ndarray:
    """Turn computed products into a uint16 table, refusing anything that is not 0..65535."""
    try:
        arr = np.asarray(values)
        if arr.dtype == object:
            arr = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: {name} returned non-numeric values ({exc})") from None
    if arr.shape != (LUT_SIZE, LUT_SIZE):
        try:
            arr = np.broadcast_to(arr, (LUT_SIZE, LUT_SIZE))
        except ValueError:
            raise UserError(f"{where}: {name} returned shape {arr.shape}, expected (256, 256)") from None
    if arr.dtype.kind not in "biuf":
        raise UserError(f"{where}: {name} returned values of type {arr.dtype}, expected integers")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            a, b = map(int, np.argwhere(bad)[0])
            raise UserError(f"{where}: {name}({a}, {b}) = {arr[a, b]!r} is not an integer")
    bad = (arr < 0) | (arr > 0xFFFF)
    if bad.any():
        a, b = map(int, np.argwhere(bad)[0])
        raise UserError(f"{where}: {name}({a}, {b}) = {arr[a, b]} does not fit in 16 bits (0..65535)")
    lut = arr.astype(np.uint16)
    lut.setflags(write=False)
    return lut


def _csv_label(path: Path) -> str:
    """Power source label of a CSV: its file name with its folder (no absolute path)."""
    return f"CSV {path.parent.name}/{path.name}" if path.parent.name else f"CSV {path.name}"


def _read_powers_csv(path: Path) -> dict[str, float]:
    """name -> power from a CSV with `name` and `power_mW` (also keyed by lut_file stem)."""
    if not path.is_file():
        raise UserError(f"{path}: powers CSV not found")
    columns, rows = _read_csv(path)
    missing = [c for c in ("name", "power_mW") if c not in columns]
    if missing:
        raise UserError(f"{path}: missing required column(s) {', '.join(missing)}")
    powers: dict[str, float] = {}
    for line, row in rows:
        name = row["name"]
        if not name:
            raise UserError(f"{path}:{line}: empty name")
        name = name.removesuffix(".bin")
        if name in powers:
            raise UserError(f"{path}:{line}: duplicate name {name!r}")
        power = _parse_power(row["power_mW"], f"{path}:{line}: {name}")
        powers[name] = power
        lut_file = row.get("lut_file", "")
        if lut_file:
            powers.setdefault(Path(lut_file).stem, power)
    if not powers:
        raise UserError(f"{path}: no rows")
    return powers


def _from_bins(bins: list[Path], folder: Path, powers_csv: Path | None, name: str | None,
               power: float | None) -> list[_Source]:
    if powers_csv is None and power is None:
        for candidate in (folder / CATALOG_CSV, folder / "powers.csv"):
            if candidate.is_file():
                powers_csv = candidate
                break
    powers = _read_powers_csv(powers_csv) if powers_csv is not None else {}
    if name is not None and len(bins) != 1:
        raise UserError(f"{folder}: --name applies only to a single table, not {len(bins)}")
    if power is not None and len(bins) != 1:
        raise UserError(f"{folder}: --power applies only to a single source; give powers per circuit with --powers")
    order = {n: i for i, n in enumerate(powers)}
    bins = sorted(bins, key=lambda p: (order.get(p.stem, len(order)), p.name))
    sources = []
    for path in bins:
        circuit = _check_name(name or path.stem, str(path))
        if power is not None:
            pw = power
        elif path.stem in powers:
            pw = powers[path.stem]
        else:
            hint = f"{powers_csv} has no row for it" if powers_csv else \
                f"no powers CSV: pass --powers or put {CATALOG_CSV}/powers.csv next to the tables"
            raise UserError(f"{path}: no power for {path.stem} ({hint})")
        lut, sha = _read_lut(path)
        label = "--power" if power is not None else _bins_label(powers_csv)
        sources.append(_Source(circuit, lut, pw, path.name, label, sha256=sha))
    return sources


def _bins_label(powers_csv: Path) -> str:
    """A catalog's own power source where its catalog.csv records one, else the CSV's name."""
    if powers_csv.name == CATALOG_CSV:
        columns, rows = _read_csv(powers_csv)
        if POWER_SOURCE_COLUMN in columns:
            labels = {row[POWER_SOURCE_COLUMN] for _, row in rows} - {""}
            if len(labels) == 1:
                return labels.pop()
            if labels:  # a merged catalog: consistent relative to its exact reference
                return f"catalog {powers_csv.parent.name}"
    return _csv_label(powers_csv)


def _from_c(files: list[Path], powers_csv: Path | None, name: str | None, power: float | None,
            notes: list[str]) -> list[_Source]:
    """Tables of C circuits. Power: --power, else the --powers CSV (which wins over the
    headers; disagreements over 1 % are noted), else the C header (`PDK45_PWR` in mW or
    EvoApprox8b's `Power (45)` in uW). All circuits take their power from one source."""
    powers = _read_powers_csv(powers_csv) if powers_csv is not None else {}
    cc = _c_compiler()
    sources: list[_Source] = []
    missing: list[str] = []  # circuits the CSV has no row for
    disagree: list[str] = []
    for path in sorted(files, key=lambda p: p.name):
        names, luts, text = _run_c_file(path, cc)
        single = len(files) == 1 and len(names) == 1
        if (name is not None or power is not None) and not single:
            raise UserError(f"{path}: --name/--power apply only to a single circuit; use --powers for several")
        stated = header_power(text, str(path)) if len(names) == 1 else None
        for circuit, lut in zip(names, luts):
            if power is not None:
                pw, label = power, "--power"
            elif powers_csv is not None:
                if circuit not in powers:
                    missing.append(circuit)
                    continue
                pw, label = powers[circuit], _csv_label(powers_csv)
                if stated is not None and abs(pw - stated[0]) > DISAGREEMENT * max(abs(pw), abs(stated[0])):
                    disagree.append(f"  {circuit}: {pw:g} mW in the CSV, {stated[0]:g} mW in its header "
                                    f"({100 * (stated[0] - pw) / pw if pw else float('inf'):+.1f} %)")
            elif stated is not None:
                pw, label = stated
            else:
                raise UserError(f"{path}: no power for {circuit} (its header states none in a known format: "
                                f"{KNOWN_HEADER_FORMATS}); pass --power or --powers CSV (name,power_mW)")
            sources.append(_Source(_check_name(name or circuit, str(path)), lut, pw, path.name, label))
    if missing:
        raise UserError(f"{powers_csv}: no row for {len(missing)} of {len(missing) + len(sources)} circuits "
                        f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); powers must come from "
                        "one source, so the CSV needs every circuit")
    _one_source(sources, str(files[0].parent if len(files) > 1 else files[0]))
    if disagree:
        notes.append(f"powers: {_csv_label(powers_csv)} wins over the C headers; {len(disagree)} of "
                     f"{len(sources)} circuits differ by over {DISAGREEMENT:.0%}:")
        notes.extend(disagree)
    return sources


def _load_callable(spec: str) -> Callable[..., Any]:
    module_name, _, func_name = spec.rpartition(":")
    if not module_name or not func_name:
        raise UserError(f"{spec}: expected module:function")
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            if not file.is_file():
                raise UserError(f"{spec}: file {file} not found")
            mod_spec = importlib.util.spec_from_file_location(file.stem, file)
            assert mod_spec and mod_spec.loader
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            added = os.getcwd() not in sys.path and "" not in sys.path
            if added:
                sys.path.append(os.getcwd())
            try:
                module = importlib.import_module(module_name)
            finally:
                if added:
                    sys.path.remove(os.getcwd())
    except UserError:
        raise
    except ImportError as exc:
        raise UserError(f"{spec}: cannot import module {module_name} ({exc})") from None
    except Exception as exc:  # a user module raising on import is a user mistake
        raise UserError(f"{spec}: importing {module_name} failed: {type(exc).__name__}: {exc}") from None
    func = module
    for part in func_name.split("."):
        func = getattr(func, part, None)
        if func is None:
            raise UserError(f"{spec}: module {module_name} has no attribute {func_name}")
    if not callable(func):
        raise UserError(f"{spec}: {func_name} is not callable")
    return func  # type: ignore[return-value]


def _from_callable(spec: str, name: str | None, power: float | None) -> list[_Source]:
    if power is None:
        raise UserError(f"{spec}: --power is required when importing a Python callable")
    func = _load_callable(spec)
    circuit = _check_name(name or spec.rpartition(":")[2].split(".")[-1], spec)
    a, b = np.meshgrid(np.arange(LUT_SIZE, dtype=np.int64), np.arange(LUT_SIZE, dtype=np.int64), indexing="ij")
    values: Any = None
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            out = func(a, b)
        arr = np.asarray(out)
        if arr.dtype.kind in "biuf" and arr.shape in ((LUT_SIZE, LUT_SIZE), ()):
            values = arr
    except Exception:
        values = None  # not vectorisable: fall back to scalar calls
    if values is None:
        values = np.empty((LUT_SIZE, LUT_SIZE), dtype=object)
        for i in range(LUT_SIZE):
            for j in range(LUT_SIZE):
                try:
                    values[i, j] = func(i, j)
                except Exception as exc:
                    raise UserError(f"{spec}: calling {circuit}({i}, {j}) failed: {type(exc).__name__}: {exc}") from None
        try:
            values = np.array(values.tolist())
        except (TypeError, ValueError) as exc:
            raise UserError(f"{spec}: {circuit} returned non-numeric values ({exc})") from None
    lut = _validate_products(values, circuit, spec)
    return [_Source(circuit, lut, power, f"python {spec}", "--power")]


def _load_source(src: str, powers_path: Path | None, name: str | None, pw: float | None,
                 notes: list[str]) -> tuple[list[_Source], str | None]:
    """One SRC as circuits, and the exact reference its catalog.csv records (if any)."""
    src_path = Path(src)
    recorded = None
    if src_path.exists():
        if src_path.is_dir():
            bins = sorted(src_path.glob("*.bin"))
            cfiles = sorted(src_path.glob("*.c"))
            if bins and cfiles:
                raise UserError(f"{src_path}: holds both .bin and .c files; import them separately")
            if bins:
                if powers_path is None and pw is None and (src_path / CATALOG_CSV).is_file():
                    recorded = _recorded_reference(src_path / CATALOG_CSV)
                sources = _from_bins(bins, src_path, powers_path, name, pw)
            elif cfiles:
                sources = _from_c(cfiles, powers_path, name, pw, notes)
            else:
                raise UserError(f"{src_path}: no .bin tables or .c files to import")
        elif src_path.suffix == ".c":
            sources = _from_c([src_path], powers_path, name, pw, notes)
        elif src_path.suffix == ".bin":
            sources = _from_bins([src_path], src_path.parent, powers_path, name, pw)
        else:
            raise UserError(f"{src_path}: not a .bin table, a .c file or a folder of them")
    elif re.fullmatch(r"[^:]+:[A-Za-z_][\w.]*", src):
        sources = _from_callable(src, name, pw)
    else:
        raise UserError(f"{src}: not found (expected a folder, a .c/.bin file or module:function)")
    return sources, recorded


def _recorded_reference(csv_path: Path) -> str | None:
    columns, rows = _read_csv(csv_path)
    if EXACT_COLUMN not in columns:
        return None
    marked = [row["name"].removesuffix(".bin") for _, row in rows if row[EXACT_COLUMN].strip().lower() == "yes"]
    return marked[0] if len(marked) == 1 else None


def import_catalog(
    src: str | os.PathLike[str] | list,
    out: str | os.PathLike[str],
    powers_csv: str | os.PathLike[str] | None = None,
    name: str | None = None,
    power: float | str | None = None,
    overwrite: bool = False,
    exact: str | None = None,
    rescale: bool = False,
    notes: list[str] | None = None,
) -> Catalog:
    """Build a catalog folder from .bin tables, EvoApproxLib C files or a Python callable.

    `src` kinds: a folder of `.bin` tables (powers from `powers_csv`, or the folder's
    catalog.csv / powers.csv), a single `.bin` (needs `power` or `powers_csv`), a `.c` file
    or a folder of them (power from the header, `// PDK45_PWR = x mW` or EvoApprox8b's
    `///  Power  (45) = x` in uW, unless `powers_csv` gives it), or "module:function"
    (needs `power`). A list of sources builds their union (order kept; see `_merge`).
    `power`/`name` apply to a single circuit only. `exact` names the exact reference
    (default: the cheapest exact circuit, ties by name). What the import found worth
    saying (power disagreements, rescaling, clashes, identical or all-zero tables) is
    appended to `notes`. Returns the catalog as loaded back.
    """
    notes = [] if notes is None else notes
    out = Path(out)
    srcs = [os.fspath(s) for s in src] if isinstance(src, (list, tuple)) else [os.fspath(src)]
    if not srcs:
        raise UserError("no source to import")
    powers_path = Path(powers_csv) if powers_csv is not None else None
    pw = _parse_power(power, "--power") if power is not None and str(power).strip() != "" else None
    if name is not None:
        name = _check_name(name, "--name")
    if len(srcs) > 1 and (name is not None or pw is not None):
        raise UserError("--name/--power apply to a single circuit, not to several sources")
    if (out / CATALOG_CSV).exists() and not overwrite:
        raise UserError(f"{out / CATALOG_CSV}: already exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: output exists and is not a folder")

    parts = []
    for one in srcs:
        sources, recorded = _load_source(one, powers_path, name, pw, notes)
        seen: dict[str, str] = {}
        for s in sources:
            if s.name in seen:
                raise UserError(f"{one}: duplicate circuit name {s.name!r} ({seen[s.name]} and {s.origin})")
            seen[s.name] = s.origin
        parts.append((one, sources, recorded))
    sources, ref = _merge(parts, exact, rescale, notes)
    _library_notes(sources, notes)
    _write_catalog(out, sources, None if ref is None else ref.name)
    return load_catalog(out)
