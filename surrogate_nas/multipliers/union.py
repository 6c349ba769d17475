"""Sources of circuits joined into one catalog: the circuit records of an import, their one
power source, the exact reference, the union of several sources (rescaled where their
power sources differ), what is worth reporting about a library, and catalog.csv writing."""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from surrogate_nas.errors import UserError
from surrogate_nas.multipliers.catalog import (
    CATALOG_CSV,
    EXACT_COLUMN,
    POWER_SOURCE_COLUMN,
)
from surrogate_nas.multipliers.metrics import compute_metrics
from surrogate_nas.multipliers.tables import _EXACT


@dataclass
class _Source:
    name: str
    lut: np.ndarray
    power: float
    origin: str
    power_source: str = "--power"
    source_power: float | None = None  # power as its source states it, when rescaled by a merge
    sha256: str = ""

    def __post_init__(self):
        if not self.sha256:
            self.sha256 = hashlib.sha256(np.asarray(self.lut).astype("<u2").tobytes()).hexdigest()

    @property
    def is_exact(self) -> bool:
        return bool(np.array_equal(self.lut, _EXACT))


# a disagreement between a powers CSV and a C header is listed above this relative difference
DISAGREEMENT = 0.01


def _one_source(sources: list[_Source], where: str) -> str:
    """The one power source of `sources`; refuses a mix (relative energies would compare syntheses)."""
    counts: dict[str, int] = {}
    for s in sources:
        counts[s.power_source] = counts.get(s.power_source, 0) + 1
    if len(counts) > 1:
        parts = ", ".join(f"{n} from {label}" for label, n in counts.items())
        raise UserError(f"{where}: powers come from several sources ({parts}); a catalog takes them from one "
                        "source: give --powers for every circuit")
    return next(iter(counts))


def _fmt(value: float) -> str:
    return format(value, ".10g")


def _write_catalog(out: Path, sources: list[_Source], exact: str | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rescaled = any(s.source_power is not None for s in sources)
    rows = []
    for s in sources:
        data = s.lut.astype("<u2").tobytes()
        lut_file = f"{s.name}.bin"
        (out / lut_file).write_bytes(data)
        m = compute_metrics(s.lut)
        row = {
            "name": s.name,
            "lut_file": lut_file,
            "lut_sha256": hashlib.sha256(data).hexdigest(),
            "power_mW": repr(float(s.power)),
            POWER_SOURCE_COLUMN: s.power_source,
            EXACT_COLUMN: "yes" if s.name == exact else "",
            **{k: _fmt(v) for k, v in m.as_dict().items()},
            "lut_origin": s.origin,
        }
        if rescaled:
            row["source_power_mW"] = "" if s.source_power is None else repr(float(s.source_power))
        rows.append(row)
    columns = ["name", "lut_file", "lut_sha256", "power_mW", POWER_SOURCE_COLUMN, EXACT_COLUMN, "mae_pct", "mae",
               "wce_pct", "wce", "wcre_pct", "ep_pct", "mre_pct", "mse", "mean_error", "error_std", "lut_origin"]
    if rescaled:
        columns.append("source_power_mW")
    tmp = out / (CATALOG_CSV + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out / CATALOG_CSV)


def _reference(sources: list[_Source], exact: str | None, where: str) -> _Source | None:
    """The exact reference among `sources`: the one named `exact`, else the cheapest
    circuit whose table is the exact product (ties: by name)."""
    if exact is not None:
        named = [s for s in sources if s.name == exact]
        if not named:
            return None
        if not named[0].is_exact:
            raise UserError(f"--exact {exact}: {where}: its table is not the exact product a*b")
        return named[0]
    exacts = [s for s in sources if s.is_exact]
    return min(exacts, key=lambda s: (s.power, s.name)) if exacts else None


def _merge(parts: list[tuple[str, list[_Source], str | None]], exact: str | None, rescale: bool,
           notes: list[str]) -> tuple[list[_Source], _Source | None]:
    """One list of circuits from several sources, and its exact reference.

    Each source keeps its own power source; where they differ, `rescale` expresses each
    source's powers relative to its own exact reference (same source), times the power of
    the union's reference. Without `rescale` such a mix is refused."""
    refs = []
    for src, sources, recorded in parts:
        label = _one_source(sources, src)
        names = {s.name for s in sources}
        ref = _reference(sources, exact if exact in names else recorded if recorded in names else None, src)
        refs.append((src, label, ref))
    if len(parts) == 1:
        ref = refs[0][2]
        if exact is not None and (ref is None or ref.name != exact):
            raise UserError(f"--exact {exact}: no circuit of that name in {parts[0][0]}")
        return parts[0][1], ref
    if exact is not None:
        union_ref = next((r for _, _, r in refs if r is not None and r.name == exact), None)
        if union_ref is None:
            raise UserError(f"--exact {exact}: no circuit of that name in {', '.join(p[0] for p in parts)}")
    else:
        cands = [r for _, _, r in refs if r is not None]
        union_ref = min(cands, key=lambda r: (r.power, r.name)) if cands else None
    labels = {label for _, label, _ in refs}
    merged: list[_Source] = []
    if len(labels) > 1:
        if not rescale:
            raise UserError("sources state power from different sources (" + "; ".join(
                f"{src}: {label}" for src, label, _ in refs) + "): relative energies would compare different "
                "syntheses; pass --rescale to take each source's powers relative to its own exact circuit")
        for (src, label, ref), (_, sources, _) in zip(refs, parts):
            if ref is None:
                raise UserError(f"{src}: no exact circuit, so its powers ({label}) cannot be related to the other "
                                "sources'; --rescale needs an exact circuit in every source")
            if not ref.power > 0:
                raise UserError(f"{src}: exact circuit {ref.name} has power {ref.power} mW; cannot rescale")
            factor = union_ref.power / ref.power
            notes.append(f"rescale: {src} ({label}): powers x {factor:.6g}, so its exact {ref.name} "
                         f"({ref.power:g} mW) has the reference's {union_ref.power:g} mW")
            for s in sources:
                power = s.power if s is union_ref else s.power * factor
                merged.append(_Source(s.name, s.lut, power, s.origin, s.power_source, s.power, s.sha256))
    else:
        merged = [s for _, sources, _ in parts for s in sources]
    # name clashes: one table under one name is kept once; two tables under one name are refused
    kept: list[_Source] = []
    by_name: dict[str, _Source] = {}
    clashes = []
    for s in merged:
        first = by_name.get(s.name)
        if first is None:
            by_name[s.name] = s
            kept.append(s)
        elif first.sha256 == s.sha256:
            notes.append(f"name clash: {s.name} ({s.origin}) has the same table as {first.origin}; kept once "
                         f"({first.power:g} mW)")
        else:
            clashes.append(f"{s.name} ({first.origin}, {s.origin})")
    if clashes:
        raise UserError(f"name clash: {len(clashes)} name(s) with different tables in two sources: "
                        f"{'; '.join(clashes[:5])}{'; ...' if len(clashes) > 5 else ''}; rename one side")
    return kept, union_ref


def _library_notes(sources: list[_Source], notes: list[str]) -> None:
    """Identical tables under two names, and circuits that always output 0."""
    groups: dict[str, list[str]] = {}
    for s in sources:
        groups.setdefault(s.sha256, []).append(s.name)
    dupes = [names for names in groups.values() if len(names) > 1]
    if dupes:
        notes.append(f"identical tables: {len(dupes)} group(s) of circuits with the same products:")
        for names in dupes:
            tag = " (exact)" if np.array_equal(next(s for s in sources if s.name == names[0]).lut, _EXACT) else ""
            notes.append(f"  {' = '.join(names)}{tag}")
    zero = [s.name for s in sources if not np.any(s.lut)]
    if zero:
        notes.append(f"always 0: {len(zero)} circuit(s) output 0 for every operand pair: {', '.join(zero)}")
