"""surrogate_nas.evaluation.quiet against brute force over every genome."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from surrogate_nas.evaluation.quiet import (
    layer_energy,
    least_noise_designs,
    least_noise_front,
)


def _instance(seed, layers=4, circuits=7):
    rng = np.random.default_rng(seed)
    macs = rng.integers(1, 10, layers) * 1000
    powers = np.concatenate([[1.0], rng.uniform(0.1, 1.0, circuits - 1)])
    noise = rng.uniform(0, 0.3, (layers, circuits)) ** 2
    noise[:, 0] = 0.0  # circuit 0: the exact one
    return layer_energy(macs, powers, 1.0), noise


def _all(energy, noise):
    L, C = energy.shape
    for g in itertools.product(range(C), repeat=L):
        yield g, sum(energy[l, c] for l, c in enumerate(g)), sum(noise[l, c] for l, c in enumerate(g))


@pytest.mark.parametrize("seed", range(5))
def test_least_noise_design_equals_brute_force(seed):
    energy, noise = _instance(seed)
    targets = [10, 30, 45, 60, 80, 99.9]
    got = least_noise_designs(energy, noise, targets)
    for target, design in zip(targets, got):
        ok = [(n, e, g) for g, e, n in _all(energy, noise) if 100 * (1 - e) >= target - 1e-9]
        if not ok:
            assert design is None
            continue
        n = min(ok)[0]
        assert design["noise_power"] == pytest.approx(n, abs=1e-12)
        assert 100 * (1 - design["energy"]) >= target - 1e-9
        g = design["genome_indices"]
        assert sum(noise[l, c] for l, c in enumerate(g)) == pytest.approx(n, abs=1e-12)
        assert sum(energy[l, c] for l, c in enumerate(g)) == pytest.approx(design["energy"], abs=1e-12)


def test_front_is_exactly_the_nondominated_genomes():
    energy, noise = _instance(7, layers=3, circuits=6)
    points = [(round(e, 12), round(n, 12)) for _, e, n in _all(energy, noise)]
    expected = {p for p in points if not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points)}
    assert {(round(e, 12), round(n, 12)) for e, n, _ in least_noise_front(energy, noise)} == expected


def test_layer_energy_sums_to_the_energy_model():
    from surrogate_nas.evaluation.energy import EnergyModel

    macs, powers = [100, 300, 50], [0.5, 0.2, 0.9, 0.7]
    model = EnergyModel(macs, powers, 0.9)
    table = layer_energy(macs, powers, 0.9)
    for g in [(0, 1, 2), (3, 3, 3), (2, 2, 2)]:
        assert sum(table[l, c] for l, c in enumerate(g)) == pytest.approx(model(g))


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="expected equal"):
        least_noise_front(np.zeros((2, 3)), np.zeros((3, 2)))
