"""What a person looks at after a run: CSV tables, the text report, and plots."""

from __future__ import annotations

import csv
from pathlib import Path

from surrogate_nas.genome import format_layers, genome_names  # noqa: E402

SURROGATE_COLUMNS = ("generation", "train_size", "n_fresh", "r2", "mae", "kendall_tau", "cum_n", "cum_r2", "cum_mae", "cum_kendall_tau", "kind")


def write_surrogate_log(run_dir: Path, log: list) -> None:
    with open(run_dir / "surrogate.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(SURROGATE_COLUMNS)
        for row in log:
            writer.writerow([row[c] if not isinstance(row[c], float) else f"{row[c]:.4f}" for c in SURROGATE_COLUMNS])




def _no_methods(genome):
    return ["none"] * len(genome)


def _layer_names(layers, genome) -> str:
    """The `layers` column: the Keras names of the genome's layers, `;`-separated like `genome`."""
    return "" if layers is None else ";".join(info.name for info in layers)


def write_table(out_dir: Path, rows: list[dict], notes=()) -> None:
    """summary.csv and summary.md (a Markdown table plus notes) from rows of dicts."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(out_dir / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(row.get(k, "")) for k in keys) + " |" for row in rows]
    (out_dir / "summary.md").write_text("\n".join(lines + [""] + list(notes)) + "\n")


def write_evaluations_csv(path: Path, evaluations, catalog, methods=_no_methods, layers=None) -> None:
    """Every true evaluation; `genome` holds the circuit of each layer and `layers` the
    Keras names of those layers (when `layers`, the evaluator's LayerInfos, are given);
    `dominated_by`: the front point a racing stop lost to (genome indices)."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["order", "generation", "reason", "genome", "compensation", "genome_indices", "accuracy", "energy",
                         "from_cache", "seconds", "n_images", "below_floor", "layers", "dominated_by"])
        for order, e in enumerate(evaluations):
            stopped = getattr(e, "below_floor", None)
            writer.writerow(
                [order, e.generation, e.reason, ";".join(genome_names(e.genome, catalog)), ";".join(methods(e.genome)),
                 ",".join(map(str, e.genome)), f"{e.accuracy:.6f}", f"{e.energy:.6f}", int(e.from_cache), f"{e.seconds:.3f}",
                 getattr(e, "n_images", None) or "", "" if stopped is None else f"{stopped:.6f}",
                 _layer_names(layers, e.genome),
                 "" if getattr(e, "dominated_by", None) is None else ",".join(map(str, e.dominated_by))]
            )


def _fmt(value: float | None, scale: float = 1.0, digits: int = 6) -> str:
    return "" if value is None else f"{scale * value:.{digits}f}"


def write_front_csv(path: Path, front, catalog, rescored: dict | None = None, exact_genome=None, methods=_no_methods,
                    layers=None) -> None:
    """The front with its search-set accuracy and, when re-scored, its accuracy on the
    whole validation split and on the test set (losses against all-exact)."""
    rescored = rescored or {}
    exact = rescored.get(tuple(exact_genome)) if exact_genome is not None else None
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["genome", "compensation", "genome_indices", "search_accuracy", "validation_accuracy", "test_accuracy",
                         "energy", "energy_saving_pct", "validation_loss_pp", "test_loss_pp", "layers"])
        for e in front:
            val, test = rescored.get(e.genome, (None, None))
            writer.writerow([
                ";".join(genome_names(e.genome, catalog)), ";".join(methods(e.genome)), ",".join(map(str, e.genome)),
                f"{e.accuracy:.6f}", _fmt(val), _fmt(test), f"{e.energy:.6f}", f"{100 * (1 - e.energy):.2f}",
                "" if val is None or exact is None else f"{100 * (exact[0] - val):.2f}",
                "" if test is None or exact is None else f"{100 * (exact[1] - test):.2f}",
                _layer_names(layers, e.genome),
            ])


def write_rescored_csv(path: Path, rescored: dict, front_genomes, exact_genome, catalog, energy, methods=_no_methods,
                       layers=None, raced: dict | None = None) -> None:
    """Every re-scored genome (all-exact first): what `summarize` chooses from. A point
    stopped on validation by racing has no accuracies, and names the cheaper point it lost to."""
    front_genomes = set(front_genomes)
    raced = raced or {}
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["role", "genome", "compensation", "genome_indices", "energy", "validation_accuracy", "test_accuracy",
                         "layers", "validation_worse_than"])
        for genome, (val, test) in rescored.items():
            role = "all-exact" if genome == tuple(exact_genome) else ("front" if genome in front_genomes else "other")
            lost = raced.get(genome)
            row = [";".join(genome_names(genome, catalog)), ";".join(methods(genome)), ",".join(map(str, genome)),
                   f"{energy(genome):.6f}", _fmt(val), _fmt(test), _layer_names(layers, genome),
                   "" if lost is None else ",".join(map(str, lost))]
            writer.writerow([role, *row])
            if role == "all-exact" and genome in front_genomes:  # also a front point
                writer.writerow(["front", *row])


def write_report(path: Path, front, catalog, header: str, rescored: dict | None = None, methods=_no_methods,
                 layers=None, raced: dict | None = None) -> None:
    lines = [header, f"relative energy and savings against the {catalog.reference_text()}", ""]
    for i, e in enumerate(front, start=1):
        lines.append(f"# Pareto point {i}")
        lines.append(format_layers(e.genome, catalog, methods(e.genome), layers))
        val, test = (rescored or {}).get(e.genome, (None, None))
        extra = "" if val is None else f", validation accuracy {val:.4f}, test accuracy {_fmt(test, digits=4) or 'not scored'}"
        if e.genome in (raced or {}):
            extra = ", validation: stopped, shown worse than a cheaper point"
        lines.append(f"Accuracy (search set): {e.accuracy:.4f}{extra}")
        lines.append(f"Relative energy: {e.energy:.4f} (saving {100 * (1 - e.energy):.1f} %)")
        lines.append("")
    path.write_text("\n".join(lines))
