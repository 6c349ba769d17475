"""Per-layer pruning of a circuit library before the `auto` compensation rule.

The rule measures every (layer, circuit, method) on calibration images: linear in the
number of circuits (36 circuits x 5 layers: 3.5 min). For a library of hundreds of
circuits, most are no use in a given layer: another circuit is both cheaper and, after
its best compensation, less wrong under that layer's operand codes. Pruning ranks them
analytically (numpy, no network) and lets the rule test only those dominated by fewer
than `k` others:

- power: the circuit's power (mW; relative energy is proportional to it per layer);
- error: the RMS error that the circuit adds to one output of the layer, after the best
  of the rule's candidate methods, from `compensation.residual_statistics` under the
  layer's activation- and weight-code histograms: sqrt((K*mean)^2 + K*std^2) for K
  products per output (K = kernel taps x input channels), mean 0 after `bias`.

`k = 1` keeps only the (power, error) Pareto front of each layer; `k = 2` also keeps the
circuits that a single other circuit beats (a margin for where the analytic error and
the measured loss disagree), and so on; `k = 0` keeps everything. A pruned circuit stays
a legal gene: the search space is unchanged, only its compensation is not measured.
"""

from __future__ import annotations

import numpy as np

from surrogate_nas.multipliers import compensation as comp

# What a circuit that the rule does not test gets: `bias` needs no measurement, costs no
# energy and removes the mean error, the largest part of an EvoApprox circuit's error.
PRUNED_METHOD = "bias"


# Catalogs up to this size are not pruned unless asked: the rule tests all their
# circuits within minutes, and their rule stays what it was before pruning existed.
AUTO_PRUNE_ABOVE = 100


# k used above that size (see `effective_k`).
AUTO_PRUNE_K = 2


def effective_k(prune_k: int | None, n_circuits: int) -> int:
    """The k a run uses: `prune_k` when given; by default AUTO_PRUNE_K for catalogs of
    more than AUTO_PRUNE_ABOVE circuits, else 0 (off)."""
    if prune_k is not None:
        return int(prune_k)
    return AUTO_PRUNE_K if n_circuits > AUTO_PRUNE_ABOVE else 0


_CODES = np.arange(256, dtype=np.float64)


def tuned_map_on_support(lut: np.ndarray, activation_hist, kernel_hist) -> np.ndarray:
    """`compensation.tuned_weight_map(lut, activation_hist)` on the weight codes the layer
    uses (identity elsewhere), summing only over activation codes that occur: the same
    residual statistics at a fraction of the cost (541 circuits x 5 layers)."""
    p = comp.code_distribution(activation_hist)
    rows = np.flatnonzero(p > 0)
    ws = np.flatnonzero(np.asarray(kernel_hist) > 0)
    table = np.asarray(lut, dtype=np.float64)[rows]  # |A| x 256
    pa, a = p[rows], _CODES[rows]
    weight_map = np.arange(256, dtype=np.int64)
    for w in ws:
        cost = pa @ np.abs(a[:, None] * w - table)
        best = int(np.argmin(cost))
        weight_map[w] = w if cost[w] <= cost[best] else best
    return weight_map


def output_error(lut: np.ndarray, activation_hist, kernel_hist, taps: int) -> tuple[float, str]:
    """(RMS error added to one layer output, method achieving it) over the rule's candidates."""
    weight_map = tuned_map_on_support(lut, activation_hist, kernel_hist)
    marker = np.zeros(1, np.float32)  # residual_statistics only asks whether an offset exists
    candidates = {
        "none": comp.Compensation("none"),
        "bias": comp.Compensation("bias", None, marker),
        "tune": comp.Compensation("tune", weight_map),
        "tune+bias": comp.Compensation("tune+bias", weight_map, marker),
    }
    best = (np.inf, "none")
    for method in comp.AUTO_CANDIDATES:
        mean, std, _ = comp.residual_statistics(candidates[method], lut, activation_hist, kernel_hist)
        rms = float(np.sqrt((taps * mean) ** 2 + taps * std**2))
        if rms < best[0]:
            best = (rms, method)
    return best


def dominated_counts(power, error) -> np.ndarray:
    """For each circuit, how many others are at most as costly in power and in error and
    strictly better in one (identical pairs do not dominate each other)."""
    p = np.asarray(power, dtype=np.float64)
    e = np.asarray(error, dtype=np.float64)
    no_worse = (p[:, None] <= p[None, :]) & (e[:, None] <= e[None, :])  # [j, i]: j no worse than i
    better = (p[:, None] < p[None, :]) | (e[:, None] < e[None, :])
    return (no_worse & better).sum(axis=0)


def keep_mask(power, error, k: int) -> np.ndarray:
    """Circuits dominated by fewer than `k` others (k = 0: all)."""
    if k < 0:
        raise ValueError(f"prune k must be >= 0, got {k}")
    n = len(np.asarray(power))
    if k == 0:
        return np.ones(n, dtype=bool)
    return dominated_counts(power, error) < k
