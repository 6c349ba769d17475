"""Hypervolume of a (1 - accuracy, energy) front and its reference point (the accuracy
floor), the one yardstick for comparing fronts and methods."""

from __future__ import annotations

import numpy as np

# Hypervolume reference point before the accuracy floor (runs from before it record this
# one in config.json): accuracy 0.70 and the all-exact energy 1.0.
LEGACY_HV_REFERENCE = (0.30, 1.0)


def hv_reference(floor: float) -> tuple[float, float]:
    """Reference point in objective space (1 - accuracy, relative energy): the accuracy
    floor and the all-exact energy, so designs nobody would deploy (a chance-level network
    at zero energy) add nothing to the indicator, whatever the model."""
    return (1.0 - float(floor), 1.0)


def hypervolume(points: np.ndarray, reference) -> float:
    """HV of (1 - accuracy, energy) points w.r.t. `reference` (see hv_reference)."""
    from pymoo.indicators.hv import HV

    points = np.asarray(points, dtype=float).reshape(-1, 2)
    inside = points[np.all(points < np.asarray(reference), axis=1)]
    if len(inside) == 0:
        return 0.0
    return float(HV(ref_point=np.asarray(reference, dtype=float))(inside))


def hv_at(history: list[tuple[int, float]], n: int) -> float:
    """HV after the first n true evaluations of a `(used, hv)` history (its last value
    when the run used fewer; 0 before the first)."""
    values = [hv for used, hv in history if used <= n]
    return values[-1] if values else 0.0


class HVHistory:
    """Hypervolume after each true evaluation, as `(evaluations used, hv)` pairs: the one
    way a run, a baseline and a summary build their HV curves."""

    def __init__(self, reference):
        self.reference = reference
        self.points: list[list[float]] = []
        self.values: list[tuple[int, float]] = []

    def add(self, objectives, used: int | None = None) -> float:
        """Record one evaluation's (1 - accuracy, energy); an early stop passes (1, 1)."""
        self.points.append(list(objectives))
        hv = hypervolume(np.array(self.points), self.reference)
        self.values.append((len(self.points) if used is None else used, hv))
        return hv

    def at(self, n: int) -> float | None:
        """HV after n evaluations; None when fewer were made."""
        return hv_at(self.values, n) if len(self.points) >= n else None
