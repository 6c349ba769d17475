"""A catalog: named circuits with their table, power and metrics (`catalog.csv` + tables),
and the exact reference against which every relative energy is taken."""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from surrogate_nas.errors import UserError
from surrogate_nas.multipliers.metrics import (
    Metrics,
    _check_stated_metrics,
    compute_metrics,
)
from surrogate_nas.multipliers.tables import _EXACT, _read_lut

CATALOG_CSV = "catalog.csv"


REQUIRED_COLUMNS = ("name", "lut_file", "power_mW")


# Optional column: "yes" on the row of the exact reference. Without it (older catalogs)
# the reference is the cheapest exact circuit, ties by name.
EXACT_COLUMN = "exact_reference"


# Optional column: where a row's power comes from (a C header format, a CSV, --power).
POWER_SOURCE_COLUMN = "power_source"


class UnknownMultiplierError(UserError, KeyError, IndexError):
    """Lookup of a name/position that the catalog does not hold.

    Both a UserError (the CLI reports it in one line) and a KeyError/IndexError (so code
    using `in`-style fallbacks or sequence protocols behaves as with a list or dict).
    """

    __str__ = Exception.__str__  # KeyError would wrap the message in quotes


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

    def __init__(self, entries: list[Multiplier], path: Path | None = None, exact: str | None = None):
        """`exact`: name of the exact reference; None: the cheapest circuit whose table
        equals the exact product (ties: by name)."""
        if not entries:
            raise UserError(f"{path or 'catalog'}: empty catalog (no multipliers)")
        self._entries = tuple(entries)
        self._index: dict[str, int] = {}
        for i, entry in enumerate(self._entries):
            if entry.name in self._index:
                raise UserError(f"{path or 'catalog'}: duplicate multiplier name {entry.name!r}")
            self._index[entry.name] = i
        self.path = Path(path) if path is not None else None
        exacts = [e for e in self._entries if e.is_exact]
        # before the reference was explicit it was the first exact entry: the fingerprint
        # names the reference only where it differs from that choice (old keys stay valid)
        self._first_exact = exacts[0] if exacts else None
        default = min(exacts, key=lambda e: (e.power_mw, e.name)) if exacts else None
        if exact is not None:
            i = self._lookup_name(exact)
            if i is None:
                raise UserError(f"{path or 'catalog'}: exact reference {exact!r} is not in the catalog")
            if not self._entries[i].is_exact:
                raise UserError(f"{path or 'catalog'}: exact reference {exact!r} is not exact "
                                "(its table differs from a*b)")
            self._exact: Multiplier | None = self._entries[i]
        else:
            self._exact = default
        self.exact_chosen = self._exact is not default  # True: named, and not the default rule's pick
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
        """The exact reference: every relative energy and saving is taken against its power."""
        return self._exact

    reference = exact

    @property
    def exact_index(self) -> int:
        """Gene value of the exact reference (the all-exact genome repeats it)."""
        return self.index(self._exact.name)

    @property
    def exact_rule(self) -> str:
        """How the reference was chosen, in words."""
        return "chosen with --exact" if self.exact_chosen else "cheapest exact circuit"

    @property
    def power_sources(self) -> list[str]:
        """Where the powers come from (`power_source` column; empty for older catalogs)."""
        return sorted({e.csv.get("power_source", "") for e in self._entries} - {""})

    def reference_text(self) -> str:
        """One line naming the exact reference, for listings and report headers."""
        if self._exact is None:
            return "no exact multiplier in this catalog"
        return f"exact reference {self._exact.name} ({self._exact.power_mw:g} mW, {self.exact_rule})"

    @property
    def fingerprint(self) -> str:
        """Identifies tables, names, order, powers and the exact reference: cached results
        keyed on it stay valid. The reference enters only where it is not the first exact
        entry (the implicit choice of catalogs before it was explicit), so their
        fingerprints are unchanged."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for e in self._entries:
                h.update(f"{e.name}\0{e.sha256}\0{e.power_mw!r}\n".encode())
            if self._exact is not self._first_exact:
                h.update(f"exact-reference\0{self._exact.name}\n".encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return f"Catalog({len(self)} multipliers, path={str(self.path)!r})"


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
    marked: list[tuple[int, str]] = []
    for line, row in rows:
        where = f"{csv_path}:{line}"
        name = row["name"]
        if not name:
            raise UserError(f"{where}: empty name")
        name = name.removesuffix(".bin")
        if name in seen:
            raise UserError(f"{where}: duplicate name {name!r} (first on line {seen[name]})")
        seen[name] = line
        flag = row.get(EXACT_COLUMN, "").strip().lower()
        if flag in ("yes", "true", "1", "x"):
            marked.append((line, name))
        elif flag not in ("", "no", "false", "0"):
            raise UserError(f"{where}: {name}: {EXACT_COLUMN} {row[EXACT_COLUMN]!r}: expected yes or empty")
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
    if len(marked) > 1:
        raise UserError(f"{csv_path}: {EXACT_COLUMN} marks several rows ({', '.join(n for _, n in marked)}); "
                        "one exact reference only")
    if marked and not entries[[e.name for e in entries].index(marked[0][1])].is_exact:
        raise UserError(f"{csv_path}:{marked[0][0]}: {marked[0][1]} is marked {EXACT_COLUMN} but its table "
                        "is not the exact product")
    return Catalog(entries, path, exact=marked[0][1] if marked else None)
