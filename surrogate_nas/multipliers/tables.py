"""256x256 product tables: the exact one, the error of an approximate one, and reading a
tf-approximate `.bin` file (65,536 little-endian uint16, row = first operand)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from surrogate_nas.errors import UserError

LUT_SIZE = 256


LUT_BYTES = LUT_SIZE * LUT_SIZE * 2  # 131,072


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
