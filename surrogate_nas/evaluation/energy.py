"""Relative multiplication energy of a genome (how ALWANN reports it).

energy = sum_l MACs_l * power(m_l) / sum_l MACs_l * power(exact): 1.0 when every
layer uses the exact multiplier. Free to compute, so the search evaluates it exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class EnergyModel:
    def __init__(self, macs: Sequence[int], powers: Sequence[float], exact_power: float):
        self.macs = np.asarray(macs, dtype=np.float64)
        self.powers = np.asarray(powers, dtype=np.float64)
        if exact_power <= 0:
            raise ValueError(f"exact_power must be positive, got {exact_power}")
        self.reference = float((self.macs * exact_power).sum())  # same summation as batch(): all-exact is exactly 1.0

    @classmethod
    def from_catalog(cls, macs: Sequence[int], catalog) -> "EnergyModel":
        exact = catalog.exact
        if exact is None:
            raise ValueError(f"catalog {catalog.path}: no exact multiplier (a*b) to normalise energy against")
        return cls(macs, catalog.powers, exact.power_mw)

    def __call__(self, genome: Sequence[int]) -> float:
        return float(self.batch(np.asarray([genome]))[0])

    def batch(self, genomes: np.ndarray) -> np.ndarray:
        """Energies of many genomes (rows) at once."""
        genomes = np.asarray(genomes, dtype=np.int64)
        return (self.powers[genomes] * self.macs[None, :]).sum(axis=1) / self.reference
