"""Genomes: one catalog index per conv layer, in network order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from surrogate_nas.errors import UserError

N_LAYERS = 5


def parse_genome(value: str | Sequence, catalog, n_layers: int = N_LAYERS, what: str = "--genome") -> tuple[int, ...]:
    """Indices from a comma-separated string or a sequence of names/indices."""
    items = [s.strip() for s in value.split(",")] if isinstance(value, str) else list(value)
    if len(items) != n_layers:
        raise UserError(f"{what}: expected {n_layers} multipliers (one per conv layer), got {len(items)}")
    genome = []
    for position, item in enumerate(items, start=1):
        digits = item.lstrip("-") if isinstance(item, str) else ""
        if isinstance(item, (int, np.integer)) or (digits.isascii() and digits.isdecimal()):
            index = int(item)
            if not 0 <= index < len(catalog):
                raise UserError(f"{what}: layer {position}: index {index} is out of range 0..{len(catalog) - 1}")
        else:
            try:
                index = catalog.index(str(item))
            except (KeyError, IndexError, UserError):
                raise UserError(
                    f"{what}: layer {position}: unknown multiplier {item!r} "
                    f"(see `python -m surrogate_nas multipliers list`)"
                ) from None
        genome.append(index)
    return tuple(genome)


def genome_names(genome: Sequence[int], catalog) -> list[str]:
    """Circuit names (a `--compensation search` design catalog's `+method` suffix dropped)."""
    methods = getattr(catalog, "design_methods", None)
    names = [catalog[int(i)].name for i in genome]
    if methods is None:
        return names
    return [name.removesuffix(f"+{methods[int(i)]}") for name, i in zip(names, genome)]


def design_names(genome: Sequence[int], catalog, methods: Sequence[str] | None = None) -> list[str]:
    """Circuit names, each with its compensation when one is applied: `mul8u_DM1 (bias)`."""
    names = genome_names(genome, catalog)
    if methods is None:
        return names
    return [name if method == "none" else f"{name} ({method})" for name, method in zip(names, methods)]


def format_layers(genome: Sequence[int], catalog, methods: Sequence[str] | None = None) -> str:
    """The original project's report lines: `ConvLayer 1: mul8u_125K.bin`, with the
    compensation next to the circuit: `ConvLayer 2: mul8u_DM1.bin (bias)`."""
    methods = methods or ["none"] * len(genome)
    return "\n".join(
        f"ConvLayer {i + 1}: {name}.bin" + ("" if method == "none" else f" ({method})")
        for i, (name, method) in enumerate(zip(genome_names(genome, catalog), methods))
    )

