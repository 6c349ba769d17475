"""The figures of `report.html` (`report_html` gathers their data from the run folder),
as base64 PNG text for a data: URI, so the page needs no file beside it."""

from __future__ import annotations

import base64
import io

import numpy as np

from surrogate_nas.results.plots import plt


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def front_figure(front, exact, evaluations, chosen, config) -> str:
    """Left: the search set (every true evaluation, the front). Right, when re-scored:
    validation accuracy of the front with the paired 95 % interval of its loss as bars,
    all-exact and the 0.5 / 1 / 2 pp lines, the chosen points ringed."""
    rescored = [p for p in front if p["validation"] is not None]
    fig, axes = plt.subplots(1, 2 if rescored and exact else 1, figsize=(12 if rescored and exact else 7, 4.6),
                             squeeze=False)
    ax = axes[0][0]
    done = [e for e in evaluations if not (e.get("below_floor") or e.get("dominated_by"))]
    if done:
        ax.scatter([100 * (1 - float(e["energy"])) for e in done], [float(e["accuracy"]) for e in done], s=9,
                   c="0.72", label="evaluated")
    points = [p for p in front if p["search"] is not None]  # cheapest first: saving falls, so "post" holds
    floor = (config.get("accuracy_floor") or {}).get("value")  # the cheaper point's accuracy up to the next
    low = None if floor is None else floor - 0.03
    hidden = sum(1 for p in points if low is not None and p["search"] < low)
    ax.step([p["saving"] for p in points], [p["search"] for p in points], where="post", c="C0", lw=1)
    ax.scatter([p["saving"] for p in points], [p["search"] for p in points], s=22, c="C0", zorder=3,
               label="Pareto front" + (f" ({hidden} below the floor, off the plot)" if hidden else ""))
    if floor is not None:
        ax.axhline(floor, c="C3", lw=0.8, ls=":", label=f"accuracy floor {floor:.3f}")
        ax.set_ylim(low, max([p["search"] for p in points] + [floor]) + 0.02)
    _frame(ax, "top-1 accuracy (search set)", "the search: search-set accuracy")
    if len(axes[0]) == 2:
        _validation_panel(axes[0][1], rescored, exact, chosen)
    return _png(fig)


def _validation_panel(ax, rescored, exact, chosen) -> None:
    x = np.array([p["saving"] for p in rescored])
    y = np.array([p["validation"] for p in rescored])
    bars = [p["intervals"]["validation"] for p in rescored]
    with_bars = [i for i, b in enumerate(bars) if b is not None]
    if with_bars:
        # the interval is of the loss against all-exact; around the point: accuracy = exact - loss
        lo = np.array([(bars[i]["upper_pp"] - bars[i]["loss_pp"]) / 100 for i in with_bars])
        hi = np.array([(bars[i]["loss_pp"] - bars[i]["lower_pp"]) / 100 for i in with_bars])
        ax.errorbar(x[with_bars], y[with_bars], yerr=[lo, hi], fmt="none", ecolor="C0", elinewidth=1, capsize=3,
                    alpha=0.7, label="paired 95 % interval of the loss")
    ax.scatter(x, y, s=22, c="C0", zorder=3, label="front point (validation)")
    ax.axhline(exact["validation"], c="k", lw=1, label=f"all-exact {exact['validation']:.4f}")
    for k, tolerance in enumerate((0.5, 1.0, 2.0)):
        ax.axhline(exact["validation"] - tolerance / 100, c=f"C{k + 1}", lw=0.8, ls="--",
                   label=f"all-exact - {tolerance:g} pp")
    marks = {c["genome_indices"] for rule in chosen[:1] for c in rule["rows"] if c["genome_indices"]}
    picked = [p for p in rescored if p["genome_indices"] in marks]
    if picked:
        ax.scatter([p["saving"] for p in picked], [p["validation"] for p in picked], s=120, facecolors="none",
                   edgecolors="C3", lw=1.5, zorder=4, label="chosen (point estimate)")
    low = min(list(y) + [exact["validation"] - 0.025])
    ax.set_ylim(max(0.0, low - 0.01), exact["validation"] + 0.015)
    _frame(ax, "top-1 accuracy (all validation images)", "re-scored front, with intervals")


def _frame(ax, ylabel: str, title: str) -> None:
    ax.set_xlabel("energy saving (%) against all-exact")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)


def hv_figure(hv, config, run: str) -> str:
    from surrogate_nas.results.summary import run_reference

    reference = run_reference(config)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.plot([n for n, _ in hv], [v for _, v in hv], c="C0", label=f"run {run}")
    ax.set_xlabel("true evaluations")
    ax.set_ylabel("hypervolume (search set)")
    ax.set_title(f"hypervolume against evaluations\nreference point: accuracy {1 - reference[0]:.3f}, "
                 f"energy {reference[1]:.2f}", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)
