"""Catalogs of approximate 8x8-bit unsigned multipliers, stored as 256x256 lookup tables.

A catalog is a folder with `catalog.csv` plus one `<name>.bin` table per circuit (the
tf-approximate `mul_map_file` format, see multipliers/README.md). The position of a circuit
in `catalog.csv` is the gene value used by the search, so file order is preserved everywhere.
Error metrics are always recomputed from the tables: the CSV figures are rounded and only
cross-checked, never trusted.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from surrogate_nas.errors import UserError

__all__ = [
    "LUT_SIZE",
    "LUT_BYTES",
    "CATALOG_CSV",
    "REQUIRED_COLUMNS",
    "METRIC_COLUMNS",
    "Metrics",
    "Multiplier",
    "Catalog",
    "CatalogMetricWarning",
    "UnknownMultiplierError",
    "exact_table",
    "error_table",
    "compute_metrics",
    "load_lut",
    "load_catalog",
    "import_catalog",
]

LUT_SIZE = 256
LUT_BYTES = LUT_SIZE * LUT_SIZE * 2  # 131,072
CATALOG_CSV = "catalog.csv"
REQUIRED_COLUMNS = ("name", "lut_file", "power_mW")
# Metrics that catalog.csv may state; each is cross-checked against the table.
METRIC_COLUMNS = ("mae", "mae_pct", "wce", "wce_pct", "ep_pct", "mre_pct", "mse", "wcre_pct")
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


class CatalogMetricWarning(UserWarning):
    """A metric stated in catalog.csv disagrees with the one computed from the table."""


class UnknownMultiplierError(UserError, KeyError, IndexError):
    """Lookup of a name/position that the catalog does not hold.

    Both a UserError (the CLI reports it in one line) and a KeyError/IndexError (so code
    using `in`-style fallbacks or sequence protocols behaves as with a list or dict).
    """

    __str__ = Exception.__str__  # KeyError would wrap the message in quotes


# --------------------------------------------------------------------------- tables


def _make_exact() -> np.ndarray:
    codes = np.arange(LUT_SIZE, dtype=np.int32)
    table = np.multiply.outer(codes, codes)  # [a, b] = a * b
    table.setflags(write=False)
    return table


_EXACT = _make_exact()
_NONZERO = _EXACT != 0
_EXACT_NZ = _EXACT[_NONZERO].astype(np.float64)


def exact_table() -> np.ndarray:
    """The exact product table a*b (int32, read-only): the reference every metric uses."""
    return _EXACT


def error_table(lut: np.ndarray) -> np.ndarray:
    """Signed error lut[a, b] - a*b as int32 (uint16 arithmetic would wrap around)."""
    lut = np.asarray(lut)
    if lut.shape != (LUT_SIZE, LUT_SIZE):
        raise ValueError(f"lookup table must have shape (256, 256), not {lut.shape}")
    return lut.astype(np.int32) - _EXACT


@dataclass(frozen=True)
class Metrics:
    """Error statistics over all 65,536 input pairs (definitions: multipliers/README.md)."""

    mae: float
    wce: float
    ep_pct: float
    mre_pct: float
    mse: float
    mean_error: float
    error_std: float
    mae_pct: float
    wce_pct: float
    wcre_pct: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def compute_metrics(lut: np.ndarray) -> Metrics:
    """Compute all metrics in one vectorised pass (~1 ms per table)."""
    err = error_table(lut).astype(np.float64)
    abs_err = np.abs(err)
    rel = abs_err[_NONZERO] / _EXACT_NZ
    mae = float(abs_err.mean())
    wce = float(abs_err.max())
    scale = 100.0 / (LUT_SIZE * LUT_SIZE)
    return Metrics(
        mae=mae,
        wce=wce,
        ep_pct=float(np.count_nonzero(err) * scale),
        mre_pct=float(rel.mean() * 100.0),
        mse=float(np.mean(err * err)),
        mean_error=float(err.mean()),
        error_std=float(err.std()),
        mae_pct=mae * scale,
        wce_pct=wce * scale,
        wcre_pct=float(rel.max() * 100.0),
    )


def _read_lut(path: Path, context: str = "") -> tuple[np.ndarray, str]:
    """Read and validate one table; return it (read-only) with its sha256."""
    where = f" ({context})" if context else ""
    if not path.exists():
        raise UserError(f"{path}: lookup table not found{where}")
    if not path.is_file():
        raise UserError(f"{path}: lookup table is not a regular file{where}")
    size = path.stat().st_size
    if size != LUT_BYTES:
        raise UserError(
            f"{path}: lookup table is {size:,} bytes, expected {LUT_BYTES:,} "
            f"(65,536 little-endian uint16){where}"
        )
    data = path.read_bytes()
    if len(data) != LUT_BYTES:  # changed while reading
        raise UserError(f"{path}: lookup table is {len(data):,} bytes, expected {LUT_BYTES:,}{where}")
    lut = np.frombuffer(data, dtype="<u2").astype(np.uint16).reshape(LUT_SIZE, LUT_SIZE)
    lut.setflags(write=False)
    return lut, hashlib.sha256(data).hexdigest()


def load_lut(path: str | os.PathLike[str]) -> np.ndarray:
    """Load a single `.bin` table as a read-only uint16 (256, 256) array, [a, b] = a x b."""
    return _read_lut(Path(path))[0]


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True, eq=False)
class Multiplier:
    """One circuit. Compared and hashed by (name, sha256, power), not by array contents."""

    name: str
    lut: np.ndarray = field(repr=False)
    power_mw: float
    sha256: str
    csv: dict[str, str] = field(default_factory=dict, repr=False)
    metrics: Metrics = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.metrics is None:
            object.__setattr__(self, "metrics", compute_metrics(self.lut))

    @property
    def is_exact(self) -> bool:
        return bool(np.array_equal(self.lut, _EXACT))

    def _key(self) -> tuple[str, str, float]:
        return (self.name, self.sha256, self.power_mw)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Multiplier):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


class Catalog:
    """Ordered, read-only collection of multipliers; position = gene value."""

    def __init__(self, entries: list[Multiplier], path: Path | None = None):
        if not entries:
            raise UserError(f"{path or 'catalog'}: empty catalog (no multipliers)")
        self._entries = tuple(entries)
        self._index: dict[str, int] = {}
        for i, entry in enumerate(self._entries):
            if entry.name in self._index:
                raise UserError(f"{path or 'catalog'}: duplicate multiplier name {entry.name!r}")
            self._index[entry.name] = i
        self.path = Path(path) if path is not None else None
        self._exact = next((e for e in self._entries if e.is_exact), None)
        self._fingerprint: str | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Multiplier]:
        return iter(self._entries)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, Multiplier):
            return key in self._entries
        if isinstance(key, str):
            return self._lookup_name(key) is not None
        return False

    def __getitem__(self, key: int | np.integer | str) -> Multiplier:
        if isinstance(key, str):
            return self._entries[self.index(key)]
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)):
            raise TypeError(f"catalog index must be an int or a name, not {type(key).__name__}")
        i = int(key)
        n = len(self._entries)
        if not -n <= i < n:
            raise UnknownMultiplierError(f"multiplier index {i} out of range: catalog has {n} (0..{n - 1})")
        return self._entries[i]

    def _lookup_name(self, name: str) -> int | None:
        if name in self._index:
            return self._index[name]
        if name.endswith(".bin"):
            return self._index.get(name[: -len(".bin")])
        return None

    def index(self, name: str) -> int:
        """Position of a circuit (its gene value); accepts 'mul8u_125K' or 'mul8u_125K.bin'."""
        i = self._lookup_name(name)
        if i is None:
            where = f" in {self.path}" if self.path else ""
            raise UnknownMultiplierError(f"unknown multiplier {name!r}{where}")
        return i

    @property
    def names(self) -> list[str]:
        return [e.name for e in self._entries]

    @property
    def powers(self) -> np.ndarray:
        """Power per position (float64), for vectorised objective computation."""
        return np.array([e.power_mw for e in self._entries], dtype=np.float64)

    @property
    def exact(self) -> Multiplier | None:
        return self._exact

    @property
    def fingerprint(self) -> str:
        """Identifies tables, names, order and powers: cached results keyed on it stay valid."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for e in self._entries:
                h.update(f"{e.name}\0{e.sha256}\0{e.power_mw!r}\n".encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return f"Catalog({len(self)} multipliers, path={str(self.path)!r})"


def _parse_csv_float(text: str) -> tuple[float, float]:
    """Parse a rounded CSV figure; return (value, unit of its last written digit)."""
    value = float(text)
    s = text.strip().lower()
    mantissa, _, exponent = s.partition("e")
    decimals = len(mantissa.partition(".")[2])
    exp = int(exponent) if exponent else 0
    return value, 10.0 ** (exp - decimals)


def _check_stated_metrics(name: str, row: dict[str, str], metrics: Metrics, where: str) -> None:
    """Warn once per metric that catalog.csv states differently from the table.

    Tolerance: 2 % relative, or one unit in the last written digit (the CSV figures are
    rounded/truncated to a few significant digits, e.g. MAE 11.37 is published as 11).
    """
    computed = metrics.as_dict()
    for col in METRIC_COLUMNS:
        text = (row.get(col) or "").strip()
        if not text:
            continue
        try:
            stated, unit = _parse_csv_float(text)
        except ValueError:
            warnings.warn(f"{where}: {name}: {col} = {text!r} is not a number", CatalogMetricWarning, stacklevel=3)
            continue
        value = computed[col]
        tol = max(0.02 * abs(stated), unit, 1e-9)
        if not math.isfinite(stated) or abs(value - stated) > tol:
            warnings.warn(
                f"{where}: {name}: {col} stated as {text} but the table gives {value:.6g}",
                CatalogMetricWarning,
                stacklevel=3,
            )


def _parse_power(text: Any, where: str) -> float:
    try:
        power = float(str(text).strip())
    except ValueError:
        raise UserError(f"{where}: power {text!r} is not a number") from None
    if math.isnan(power) or math.isinf(power):
        raise UserError(f"{where}: power {text!r} is not a finite number")
    if power < 0:
        raise UserError(f"{where}: power {text!r} is negative")
    return power


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Read a CSV with stripped headers/values; return (columns, [(line number, row)])."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                return [], []
            columns = [c.strip() for c in header]
            rows = []
            for values in reader:
                if not any(v.strip() for v in values):
                    continue
                if len(values) > len(columns):
                    raise UserError(
                        f"{path}:{reader.line_num}: {len(values)} fields but the header has {len(columns)}"
                    )
                row = {c: (values[i].strip() if i < len(values) else "") for i, c in enumerate(columns)}
                rows.append((reader.line_num, row))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text CSV file") from None
    except csv.Error as exc:
        raise UserError(f"{path}: malformed CSV ({exc})") from None
    return columns, rows


def load_catalog(path: str | os.PathLike[str]) -> Catalog:
    """Load and validate a catalog folder (or its catalog.csv); see multipliers/README.md."""
    path = Path(path)
    if path.is_file() and path.name == CATALOG_CSV:
        path = path.parent
    if not path.exists():
        raise UserError(f"{path}: multiplier catalog folder not found")
    if not path.is_dir():
        raise UserError(f"{path}: multiplier catalog must be a folder holding {CATALOG_CSV}")
    csv_path = path / CATALOG_CSV
    if not csv_path.is_file():
        raise UserError(f"{csv_path}: catalog file not found (a catalog folder needs {CATALOG_CSV})")
    columns, rows = _read_csv(csv_path)
    if not columns:
        raise UserError(f"{csv_path}: empty catalog (no header, no multipliers)")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise UserError(f"{csv_path}: missing required column(s) {', '.join(missing)} (has: {', '.join(columns)})")
    dupes = {c for c in columns if columns.count(c) > 1}
    if dupes:
        raise UserError(f"{csv_path}: duplicate column(s) {', '.join(sorted(dupes))}")
    if not rows:
        raise UserError(f"{csv_path}: empty catalog (header only, no multipliers)")

    entries: list[Multiplier] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        where = f"{csv_path}:{line}"
        name = row["name"]
        if not name:
            raise UserError(f"{where}: empty name")
        if name.endswith(".bin"):
            name = name[: -len(".bin")]
        if name in seen:
            raise UserError(f"{where}: duplicate name {name!r} (first on line {seen[name]})")
        seen[name] = line
        power = _parse_power(row["power_mW"], f"{where}: {name}")
        lut_file = row["lut_file"]
        if not lut_file:
            raise UserError(f"{where}: {name}: empty lut_file")
        lut, sha = _read_lut(path / lut_file, f"named by {csv_path.name} line {line}")
        stated_sha = row.get("lut_sha256", "").strip().lower()
        if stated_sha and stated_sha != sha:
            raise UserError(
                f"{path / lut_file}: sha256 mismatch: {csv_path.name} line {line} says {stated_sha}, file has {sha}"
            )
        metrics = compute_metrics(lut)
        _check_stated_metrics(name, row, metrics, where)
        extra = {k: v for k, v in row.items() if k not in ("name", "power_mW", "lut_sha256")}
        entries.append(Multiplier(name=name, lut=lut, power_mw=power, sha256=sha, csv=extra, metrics=metrics))
    return Catalog(entries, path)


# --------------------------------------------------------------------------- import


@dataclass
class _Source:
    name: str
    lut: np.ndarray
    power: float
    origin: str


def _check_name(name: str, where: str) -> str:
    if name.endswith(".bin"):
        name = name[: -len(".bin")]
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
        if name.endswith(".bin"):
            name = name[: -len(".bin")]
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
        lut, _ = _read_lut(path)
        sources.append(_Source(circuit, lut, pw, path.name))
    return sources


_C_COMMENTS = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_C_FUNC = re.compile(
    r"(?m)^[ \t]*(static\s+)?(?:inline\s+)?((?:const\s+|unsigned\s+|signed\s+|long\s+|short\s+)*"
    r"(?:u?int\d+_t|int|long|short|char|unsigned|size_t))\s+([A-Za-z_]\w*)\s*\(([^()]*)\)\s*\{"
)
_C_INT_PARAM = re.compile(
    r"(?:const\s+|unsigned\s+|signed\s+|long\s+|short\s+)*(?:u?int\d+_t|int|long|short|char|unsigned|size_t)"
    r"(?:\s+const)?\s+[A-Za-z_]\w*"
)
_C_POWER = re.compile(r"PDK45_PWR\s*=\s*([-+0-9.eE]+)\s*mW")


def _c_circuits(text: str) -> list[str]:
    """Names of non-static functions taking two integer arguments: the circuits in a file."""
    code = _C_COMMENTS.sub(" ", text)
    names = []
    for m in _C_FUNC.finditer(code):
        static, _ret, fname, params = m.groups()
        if static or fname == "main":
            continue
        parts = [p.strip() for p in params.split(",")]
        if len(parts) == 2 and all(_C_INT_PARAM.fullmatch(p) for p in parts):
            names.append(fname)
    return names


def _c_compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise UserError("no C compiler found (cc): install one or set CC to import .c circuits")
    return cc


_DRIVER = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#define main surrogate_nas_circuit_main
#include "%(source)s"
#undef main

static unsigned char surrogate_nas_buf[131072];

static int surrogate_nas_write(const char *path, const char *name) {
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "cannot write %%s\n", path); return 2; }
    if (fwrite(surrogate_nas_buf, 1, sizeof surrogate_nas_buf, f) != sizeof surrogate_nas_buf) {
        fprintf(stderr, "cannot write %%s\n", path); fclose(f); return 2;
    }
    fclose(f);
    (void)name;
    return 0;
}

int main(int argc, char **argv) {
    uint64_t a, b, r;
    if (argc != %(count)d + 1) return 2;
%(calls)s
    return 0;
}
"""

# First argument = activation code a, second = weight code b (README: operand order).
_DRIVER_CALL = r"""
    for (a = 0; a < 256; a++) for (b = 0; b < 256; b++) {
        r = (uint64_t)(%(name)s(a, b));
        if (r > 65535u) {
            fprintf(stderr, "RANGE %(name)s %%llu %%llu %%llu\n",
                    (unsigned long long)a, (unsigned long long)b, (unsigned long long)r);
            return 3;
        }
        surrogate_nas_buf[2 * (a * 256 + b)] = (unsigned char)(r & 0xFFu);
        surrogate_nas_buf[2 * (a * 256 + b) + 1] = (unsigned char)(r >> 8);
    }
    if (surrogate_nas_write(argv[%(k)d], "%(name)s")) return 2;
"""


def _first_compiler_line(stderr: str, tmp: Path, original: Path) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    pick = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else "unknown error")
    return pick.replace(str(tmp / original.name), str(original)).replace(str(tmp) + os.sep, "")


def _run_c_file(path: Path, cc: str) -> tuple[list[str], list[np.ndarray], str]:
    """Compile one C file with a generated driver; return (circuit names, tables, source text)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    names = _c_circuits(text)
    if not names:
        raise UserError(
            f"{path}: no circuit function found (expected e.g. "
            "'uint64_t mul8u_XXX(const uint64_t B, const uint64_t A) {...}')"
        )
    with tempfile.TemporaryDirectory(prefix="surrogate_nas_cc_") as tmpdir:
        tmp = Path(tmpdir)
        (tmp / path.name).write_text(text, encoding="utf-8")
        calls = "".join(_DRIVER_CALL % {"name": n, "k": k + 1} for k, n in enumerate(names))
        driver = tmp / "surrogate_nas_driver.c"
        driver.write_text(_DRIVER % {"source": path.name, "count": len(names), "calls": calls})
        exe = tmp / "driver"
        try:
            proc = subprocess.run(
                [cc, "-O1", "-w", "-o", str(exe), str(driver), "-lm"],
                cwd=tmp, capture_output=True, text=True, timeout=300,
            )
        except subprocess.TimeoutExpired:
            raise UserError(f"{path}: C compiler timed out") from None
        except OSError as exc:
            raise UserError(f"{path}: cannot run C compiler {cc} ({exc.strerror})") from None
        if proc.returncode != 0:
            raise UserError(f"{path}: C compile failed: {_first_compiler_line(proc.stderr, tmp, path)}")
        outs = [tmp / f"out{k}.bin" for k in range(len(names))]
        try:
            run = subprocess.run([str(exe), *map(str, outs)], cwd=tmp, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            raise UserError(f"{path}: evaluating the circuit(s) took over 120 s") from None
        if run.returncode != 0:
            m = re.search(r"RANGE (\S+) (\d+) (\d+) (\d+)", run.stderr)
            if m:
                raise UserError(
                    f"{path}: {m[1]}({m[2]}, {m[3]}) = {m[4]} does not fit in 16 bits (0..65535)"
                )
            detail = run.stderr.strip().splitlines()[:1] or [f"exit status {run.returncode}"]
            raise UserError(f"{path}: evaluating the circuit failed: {detail[0]}")
        luts = [_read_lut(o)[0] for o in outs]
    return names, luts, text


def _from_c(files: list[Path], powers_csv: Path | None, name: str | None, power: float | None) -> list[_Source]:
    powers = _read_powers_csv(powers_csv) if powers_csv is not None else {}
    cc = _c_compiler()
    sources = []
    for path in sorted(files, key=lambda p: p.name):
        names, luts, text = _run_c_file(path, cc)
        single = len(files) == 1 and len(names) == 1
        if (name is not None or power is not None) and not single:
            raise UserError(f"{path}: --name/--power apply only to a single circuit; use --powers for several")
        stated = _C_POWER.findall(text)
        for circuit, lut in zip(names, luts):
            where = str(path)
            if power is not None:
                pw = power
            elif circuit in powers:
                pw = powers[circuit]
            elif len(names) == 1 and len(stated) == 1:
                pw = _parse_power(stated[0], f"{path}: PDK45_PWR")
            elif len(stated) > 1 and len(names) == 1:
                raise UserError(f"{path}: several PDK45_PWR comments; pass --power or --powers")
            else:
                raise UserError(
                    f"{path}: no power for {circuit} (no '// PDK45_PWR = ... mW' comment); pass --power or --powers"
                )
            sources.append(_Source(_check_name(name or circuit, where), lut, pw, path.name))
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
    return [_Source(circuit, lut, power, f"python {spec}")]


def _fmt(value: float) -> str:
    return format(value, ".10g")


def _write_catalog(out: Path, sources: list[_Source]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in sources:
        data = s.lut.astype("<u2").tobytes()
        lut_file = f"{s.name}.bin"
        (out / lut_file).write_bytes(data)
        m = compute_metrics(s.lut)
        rows.append({
            "name": s.name,
            "lut_file": lut_file,
            "lut_sha256": hashlib.sha256(data).hexdigest(),
            "power_mW": repr(float(s.power)),
            **{k: _fmt(v) for k, v in m.as_dict().items()},
            "lut_origin": s.origin,
        })
    columns = ["name", "lut_file", "lut_sha256", "power_mW", "mae_pct", "mae", "wce_pct", "wce", "wcre_pct",
               "ep_pct", "mre_pct", "mse", "mean_error", "error_std", "lut_origin"]
    tmp = out / (CATALOG_CSV + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out / CATALOG_CSV)


def import_catalog(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    powers_csv: str | os.PathLike[str] | None = None,
    name: str | None = None,
    power: float | str | None = None,
    overwrite: bool = False,
) -> Catalog:
    """Build a catalog folder from .bin tables, EvoApproxLib C files or a Python callable.

    `src` kinds: a folder of `.bin` tables (powers from `powers_csv`, or the folder's
    catalog.csv / powers.csv), a single `.bin` (needs `power` or `powers_csv`), a `.c` file
    or a folder of them (power from `// PDK45_PWR = x mW`), or "module:function" (needs `power`).
    `power`/`name` apply to a single circuit only. Returns the catalog as loaded back.
    """
    out = Path(out)
    powers_path = Path(powers_csv) if powers_csv is not None else None
    pw = _parse_power(power, "--power") if power is not None and str(power).strip() != "" else None
    if name is not None:
        name = _check_name(name, "--name")
    if (out / CATALOG_CSV).exists() and not overwrite:
        raise UserError(f"{out / CATALOG_CSV}: already exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: output exists and is not a folder")

    src_str = os.fspath(src)
    src_path = Path(src_str)
    if src_path.exists():
        if src_path.is_dir():
            bins = sorted(src_path.glob("*.bin"))
            cfiles = sorted(src_path.glob("*.c"))
            if bins and cfiles:
                raise UserError(f"{src_path}: holds both .bin and .c files; import them separately")
            if bins:
                sources = _from_bins(bins, src_path, powers_path, name, pw)
            elif cfiles:
                sources = _from_c(cfiles, powers_path, name, pw)
            else:
                raise UserError(f"{src_path}: no .bin tables or .c files to import")
        elif src_path.suffix == ".c":
            sources = _from_c([src_path], powers_path, name, pw)
        elif src_path.suffix == ".bin":
            sources = _from_bins([src_path], src_path.parent, powers_path, name, pw)
        else:
            raise UserError(f"{src_path}: not a .bin table, a .c file or a folder of them")
    elif re.fullmatch(r"[^:]+:[A-Za-z_][\w.]*", src_str):
        sources = _from_callable(src_str, name, pw)
    else:
        raise UserError(f"{src_str}: not found (expected a folder, a .c/.bin file or module:function)")

    seen: dict[str, str] = {}
    for s in sources:
        if s.name in seen:
            raise UserError(f"{src_str}: duplicate circuit name {s.name!r} ({seen[s.name]} and {s.origin})")
        seen[s.name] = s.origin
    _write_catalog(out, sources)
    return load_catalog(out)
