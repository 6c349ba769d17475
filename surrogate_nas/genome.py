"""Genomes: one catalog index per approximable layer (conv, optionally dense), in
network order; the text form `0,3,17,2,5` of the cache and the CSV files."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from surrogate_nas.errors import UserError


def genome_key(genome: Sequence[int]) -> str:
    """Canonical text of a genome ("0,3,17,2,5"); numpy ints and plain ints map alike."""
    import operator

    try:
        values = [operator.index(g) for g in genome]
    except TypeError:
        raise TypeError(f"genome must be a sequence of integers, got {genome!r}") from None
    return ",".join(str(v) for v in values)


def genome_from_key(text: str) -> tuple[int, ...]:
    """The genome of its canonical text (`genome_key`)."""
    return tuple(int(v) for v in text.split(",")) if text else ()


def parse_genome(value: str | Sequence, catalog, n_layers: int | None = None, what: str = "--genome") -> tuple[int, ...]:
    """Indices from what a person typed: a comma-separated string or a sequence of circuit
    names and/or catalog indices, one per approximable layer (`n_layers`; None: any)."""
    if isinstance(value, str):
        items = [s.strip() for s in value.split(",")] if value.strip() else []
    else:
        items = list(value)
    if n_layers is not None and len(items) != n_layers:
        raise UserError(f"{what}: expected {n_layers} multipliers (one per approximable layer), got {len(items)}")
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


def format_layers(genome: Sequence[int], catalog, methods: Sequence[str] | None = None, layers=None) -> str:
    """The original project's report lines: `ConvLayer 1: mul8u_125K.bin`, with the
    compensation next to the circuit and the Keras name of the layer when `layers` (the
    evaluator's `LayerInfo`s) are given: `ConvLayer 2: mul8u_DM1.bin (bias) [conv2]`;
    dense layers are `DenseLayer 6: ...`."""
    methods = methods or ["none"] * len(genome)
    layers = layers or [None] * len(genome)
    lines = []
    for i, (name, method, info) in enumerate(zip(genome_names(genome, catalog), methods, layers)):
        kind = "Dense" if info is not None and info.kind == "dense" else "Conv"
        lines.append(f"{kind}Layer {i + 1}: {name}.bin" + ("" if method == "none" else f" ({method})")
                     + ("" if info is None else f" [{info.name}]"))
    return "\n".join(lines)


APPROXIMATE = ("conv", "conv+dense")


def check_approximate(value: str, flag: str = "--approximate") -> str:
    if value not in APPROXIMATE:
        raise UserError(f"{flag}: expected one of {', '.join(APPROXIMATE)}, got {value!r}")
    return value
