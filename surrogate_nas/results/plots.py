"""Figures of a run: the front, hypervolume over evaluations, surrogate predictions."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window: runs happen on machines without a screen
import matplotlib.pyplot as plt  # noqa: E402

from surrogate_nas.search.surrogate import prediction_quality  # noqa: E402


def plot_predictions(path: Path, log: list) -> None:
    pred = [p for row in log for p in row["predicted"]]
    true = [t for row in log for t in row["true"]]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(true, pred, s=12, c=[row["generation"] for row in log for _ in row["true"]], cmap="viridis")
    if true:
        lo, hi = min(true + pred), max(true + pred)
        ax.plot([lo, hi], [lo, hi], c="0.5", lw=1)
        r2, mae, tau = prediction_quality(pred, true)
        ax.set_title(f"surrogate on fresh points (n={len(true)})\nR^2 {r2:.3f}, MAE {mae:.4f}, Kendall tau {tau:.3f}", fontsize=10)
    ax.set_xlabel("true accuracy")
    ax.set_ylabel("predicted accuracy (before refit)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw_front(ax, front, label: str | None = None, color: str = "C0", marker_size: float = 22, **step) -> None:
    """One Pareto front (points with .energy and .accuracy, by energy) as a staircase with
    its points: how every front plot of the package draws one."""
    energies, accuracies = [e.energy for e in front], [e.accuracy for e in front]
    ax.step(energies, accuracies, where="post", c=color, lw=step.pop("lw", 1), **step)
    ax.scatter(energies, accuracies, s=marker_size, c=color, label=label, zorder=3)


def plot_front(path: Path, evaluations, front, exact_genome, title: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([e.energy for e in evaluations], [e.accuracy for e in evaluations], s=10, c="0.7", label="evaluated")
    draw_front(ax, front, "Pareto front")
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


def finish_front_axes(ax, fig, path: Path, ylabel: str, title: str) -> None:
    """The common frame of a front figure (energy against accuracy), saved and closed."""
    ax.set_xlabel("relative multiplication energy (1.0 = all exact)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
