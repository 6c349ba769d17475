"""What a person looks at after a run: CSV tables, the text report, and plots."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from surrogate_nas.genome import format_layers, genome_names  # noqa: E402


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


def write_evaluations_csv(path: Path, evaluations, catalog) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["order", "generation", "reason", "genome", "genome_indices", "accuracy", "energy", "from_cache", "seconds"])
        for order, e in enumerate(evaluations):
            writer.writerow(
                [order, e.generation, e.reason, ";".join(genome_names(e.genome, catalog)), ",".join(map(str, e.genome)),
                 f"{e.accuracy:.6f}", f"{e.energy:.6f}", int(e.from_cache), f"{e.seconds:.3f}"]
            )


def write_front_csv(path: Path, front, catalog, test_scores: dict | None = None, exact_test: float | None = None) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        header = ["genome", "genome_indices", "search_accuracy", "energy", "energy_saving_pct"]
        if test_scores is not None:
            header += ["test_accuracy", "test_loss_pp"]
        writer.writerow(header)
        for e in front:
            row = [";".join(genome_names(e.genome, catalog)), ",".join(map(str, e.genome)), f"{e.accuracy:.6f}",
                   f"{e.energy:.6f}", f"{100 * (1 - e.energy):.2f}"]
            if test_scores is not None:
                test = test_scores.get(e.genome)
                row += ["" if test is None else f"{test:.6f}",
                        "" if test is None or exact_test is None else f"{100 * (exact_test - test):.2f}"]
            writer.writerow(row)


def write_report(path: Path, front, catalog, header: str, test_scores: dict | None = None) -> None:
    lines = [header, ""]
    for i, e in enumerate(front, start=1):
        lines.append(f"# Pareto point {i}")
        lines.append(format_layers(e.genome, catalog))
        test = "" if not test_scores or e.genome not in test_scores else f", test accuracy {test_scores[e.genome]:.4f}"
        lines.append(f"Accuracy (search set): {e.accuracy:.4f}{test}")
        lines.append(f"Relative energy: {e.energy:.4f} (saving {100 * (1 - e.energy):.1f} %)")
        lines.append("")
    path.write_text("\n".join(lines))


def plot_front(path: Path, evaluations, front, exact_genome, title: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([e.energy for e in evaluations], [e.accuracy for e in evaluations], s=10, c="0.7", label="evaluated")
    ax.step([e.energy for e in front], [e.accuracy for e in front], where="post", c="C0", lw=1)
    ax.scatter([e.energy for e in front], [e.accuracy for e in front], s=22, c="C0", label="Pareto front")
    exact = [e for e in evaluations if e.genome == tuple(exact_genome)]
    if exact:
        ax.scatter([exact[0].energy], [exact[0].accuracy], marker="*", s=150, c="C3", label="all exact", zorder=5)
        top = exact[0].accuracy
        ax.set_ylim(max(0.0, top - 0.25), min(1.0, top + 0.03))
    ax.set_xlabel("relative multiplication energy (1.0 = all exact)")
    ax.set_ylabel("top-1 accuracy (search set)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_hv(path: Path, series: dict[str, list[tuple[int, float]]], reference, title: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, points in series.items():
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], label=label)
    ax.set_xlabel("true evaluations")
    ax.set_ylabel("hypervolume")
    ax.set_title(f"{title}\nreference point: accuracy {1 - reference[0]:.2f}, energy {reference[1]:.2f}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
