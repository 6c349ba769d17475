"""`--max-distinct K`: every design uses at most K distinct circuits, because hardware
shares one multiplier among the layers that use the same circuit. The search keeps to it
the pymoo way, with a repair operator: every genome it samples, recombines, mutates or
seeds is mapped to a feasible one before anything scores it, so the surrogate screens and
the front holds only feasible genomes."""

from __future__ import annotations

import itertools
from math import comb

import numpy as np
from pymoo.core.repair import Repair


class CircuitLimit:
    """At most `k` distinct circuits per genome. `circuits[g]`: the circuit of gene value g
    (with `--compensation search` several designs share one circuit, hence one multiplier);
    `macs`: per layer, `powers`: per gene value."""

    def __init__(self, k: int, macs, powers, circuits=None):
        self.k = int(k)
        self.macs = np.asarray(macs, dtype=np.float64)
        self.powers = np.asarray(powers, dtype=np.float64)
        self.circuits = np.arange(len(self.powers)) if circuits is None else np.asarray(circuits, dtype=np.int64)
        self._space: int | None = None

    @classmethod
    def of(cls, k: int | None, catalog, macs) -> "CircuitLimit | None":
        """The limit of a run over `catalog` (None: no limit)."""
        if k is None:
            return None
        return cls(k, macs, catalog.powers, circuit_ids(catalog))

    @property
    def n_layers(self) -> int:
        return len(self.macs)

    def distinct(self, genome) -> int:
        return len({int(self.circuits[int(g)]) for g in genome})

    def feasible(self, genome) -> bool:
        return self.distinct(genome) <= self.k

    def repair_one(self, genome) -> tuple[int, ...]:
        """Keep the K circuits covering most MACs; every other layer takes the kept one nearest in power."""
        # ties: the circuit used first in layer order is kept; the more powerful one is nearer;
        # a kept circuit replaces as the gene value (design) it covers most MACs with
        genome = tuple(int(g) for g in genome)
        if self.distinct(genome) <= self.k:
            return genome
        cover: dict[int, float] = {}  # circuit -> MACs it covers, in order of first use
        gene_cover: dict[int, float] = {}  # gene value -> MACs it covers, in order of first use
        for g, macs in zip(genome, self.macs):
            c = int(self.circuits[g])
            cover[c] = cover.get(c, 0.0) + macs
            gene_cover[g] = gene_cover.get(g, 0.0) + macs
        order = list(cover)
        kept = sorted(order, key=lambda c: (-cover[c], order.index(c)))[: self.k]
        genes = list(gene_cover)
        face = {c: max((g for g in genes if self.circuits[g] == c), key=lambda g: (gene_cover[g], -genes.index(g)))
                for c in kept}  # the gene value that stands for each kept circuit
        out = []
        for g in genome:
            if int(self.circuits[g]) in face:
                out.append(g)
                continue
            p = self.powers[g]
            nearest = min(kept, key=lambda c: (abs(self.powers[face[c]] - p), -self.powers[face[c]], c))
            out.append(face[nearest])
        return tuple(out)

    def repair(self, X) -> np.ndarray:
        """Rows of genes (floats of integral value, as pymoo holds them) repaired, same dtype."""
        X = np.asarray(X)
        G = np.rint(X).astype(np.int64).reshape(-1, self.n_layers)
        return np.array([self.repair_one(row) for row in G], dtype=X.dtype).reshape(X.shape)

    def space(self) -> int:
        """The number of feasible genomes, exactly: with s_c gene values of circuit c, the
        sequences of n_layers genes over at most K circuits, counted by exponential
        generating functions: sum_j n! [x^n y^j] prod_c (1 + y (exp(s_c x) - 1))."""
        if self._space is None:
            n = self.n_layers
            sizes = np.bincount(self.circuits)
            counts = [[1] + [0] * n] + [[0] * (n + 1) for _ in range(self.k)]  # [circuits used][length]
            for s in (int(s) for s in sizes if s):
                power = [0] + [s**m for m in range(1, n + 1)]  # sequences of length m over this circuit alone
                for j in range(self.k, 0, -1):
                    prev = counts[j - 1]
                    for m in range(n + 1):
                        counts[j][m] += sum(comb(m, i) * prev[i] * power[m - i] for i in range(m))
            self._space = sum(row[n] for row in counts[1:])
        return self._space

    def genomes(self):
        """Every feasible genome in lexicographic order (for small spaces only)."""
        n_genes = len(self.powers)

        def extend(prefix: tuple[int, ...], used: frozenset):
            if len(prefix) == self.n_layers:
                yield prefix
                return
            for g in range(n_genes):
                c = int(self.circuits[g])
                if c in used or len(used) < self.k:
                    yield from extend(prefix + (g,), used | {c})

        yield from extend((), frozenset())


def circuit_ids(catalog) -> np.ndarray:
    """Per gene value, the circuit it multiplies with: the gene itself, except for the
    designs of `--compensation search` (`mul8u_DM1+bias`), which share their circuit."""
    methods = getattr(catalog, "design_methods", None)
    if methods is None:
        return np.arange(len(catalog))
    bases = [e.name if m == "none" else e.name[: -len("+" + m)] for e, m in zip(catalog, methods)]
    ids = {name: i for i, name in enumerate(dict.fromkeys(bases))}
    return np.array([ids[b] for b in bases], dtype=np.int64)


class DistinctRepair(Repair):
    """pymoo's hook for the limit: NSGA-II applies it to the initial population and to
    every offspring of crossover and mutation, before duplicate elimination."""

    def __init__(self, limit: CircuitLimit):
        super().__init__()
        self.limit = limit

    def _do(self, problem, X, **kwargs):
        return self.limit.repair(X)


def space_size(n_choices: int, n_layers: int, limit: CircuitLimit | None) -> int:
    """Genomes a search may visit: all of them, or the feasible ones."""
    return n_choices**n_layers if limit is None else limit.space()


def all_genomes(n_choices: int, n_layers: int, limit: CircuitLimit | None):
    """Every genome a search may visit, in lexicographic order (for small spaces only)."""
    if limit is None:
        return itertools.product(range(n_choices), repeat=n_layers)
    return limit.genomes()
