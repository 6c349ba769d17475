"""Designs chosen for retraining rather than for accuracy before it: at a given energy
saving, the genome whose circuits add the least noise to the layer outputs.

Retraining absorbs an approximate circuit's systematic error (the network moves its
biases and weights) but not its random part. Measured on AlexNet (experiments/finetune/
recipes, section e): after the same retraining five designs rank by their total noise power
(one near-tie excepted), not by their accuracy before retraining, and the least-noise designs
at 45.9 % and 55.4 % saving end above the most accurate ones at 43.2 % and 52.8 %. The noise
of a (layer, circuit) is the relative std of the error it adds to the layer's outputs after its
compensation (`LayerDesigns.residual_noise`: code histograms and the all-exact twin's output
spread, no labels).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _pareto(energy: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Indices of the (energy, noise) pairs no other pair dominates (both <=, one <);
    of equal pairs the first is kept. Sorted by energy."""
    order = np.lexsort((noise, energy))
    keep, best = [], np.inf
    for i in order:
        if noise[i] < best:
            keep.append(i)
            best = noise[i]
    return np.asarray(keep, dtype=np.int64)


def least_noise_front(energy: np.ndarray, noise_power: np.ndarray) -> list[tuple[float, float, tuple[int, ...]]]:
    """Every genome on the (energy, noise power) Pareto front, as (energy, noise, genome).

    energy[l, c]: layer l's share of the relative energy with circuit c (a genome's energy
    is the sum over layers); noise_power[l, c]: the noise power it adds (a genome's is the
    sum). Exact: layer by layer the partial sums are combined and dominated ones dropped,
    which can never drop a genome of the final front (every completion adds the same to both)."""
    energy, noise_power = np.asarray(energy, float), np.asarray(noise_power, float)
    if energy.shape != noise_power.shape or energy.ndim != 2:
        raise ValueError(f"energy {energy.shape} and noise {noise_power.shape}: expected equal (layers, circuits)")
    e, n, genomes = np.zeros(1), np.zeros(1), [()]
    for layer in range(energy.shape[0]):
        own = _pareto(energy[layer], noise_power[layer])
        e_all = (e[:, None] + energy[layer, own][None, :]).ravel()
        n_all = (n[:, None] + noise_power[layer, own][None, :]).ravel()
        keep = _pareto(e_all, n_all)
        genomes = [genomes[k // len(own)] + (int(own[k % len(own)]),) for k in keep]
        e, n = e_all[keep], n_all[keep]
    return [(float(a), float(b), g) for a, b, g in zip(e, n, genomes)]


def least_noise_designs(energy: np.ndarray, noise_power: np.ndarray, savings: Sequence[float]) -> list[dict | None]:
    """For each target saving (percent), the genome with the least noise power among those
    saving at least that much (ties: the cheaper one), or None when no genome saves that much."""
    front = least_noise_front(energy, noise_power)
    out = []
    for target in savings:
        ok = [f for f in front if 100.0 * (1.0 - f[0]) >= target - 1e-9]
        if not ok:
            out.append(None)
            continue
        e, n, g = min(ok, key=lambda f: (f[1], f[0]))
        out.append({"target_pct": float(target), "genome_indices": g, "energy": e, "noise_power": n})
    return out


def layer_energy(macs: Sequence[float], powers: Sequence[float], exact_power: float) -> np.ndarray:
    """(layers, circuits): each layer's share of the relative energy with each circuit, as
    `EnergyModel` sums it (its total over a genome's layers is the genome's energy)."""
    macs = np.asarray(macs, float)
    return (macs / macs.sum())[:, None] * np.asarray(powers, float)[None, :] / float(exact_power)
