"""Error metrics of a product table (EvoApprox8b's definitions), computed from the table
itself; a catalog's stated metrics are checked against them, not trusted."""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from surrogate_nas.multipliers.tables import _EXACT_NZ, _NONZERO, LUT_SIZE, error_table

# Metrics that catalog.csv may state; each is cross-checked against the table.
METRIC_COLUMNS = ("mae", "mae_pct", "wce", "wce_pct", "ep_pct", "mre_pct", "mse", "wcre_pct")


class CatalogMetricWarning(UserWarning):
    """A metric stated in catalog.csv disagrees with the one computed from the table."""


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
