"""`design`'s final choice and its report: on the choosing images only, reported on test.

The choosing images are the validation images the search did not use (the search set is
the tuning set: it chose the front, the retraining epochs, the race and the soups), so the
choice is the only thing they ever decide. "Within X pp": the largest-saving design whose
paired loss against the all-exact 8-bit network on the choosing images is <= X (point
estimate); the conservative rule asks the same of the loss's upper 95 % bound. Test
accuracies, with paired 95 % intervals, only report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from surrogate_nas.results.summary import TOLERANCES_PP, paired_loss

RULE_TEXT = {
    "chosen": "the largest-saving design whose paired loss against all-exact on the choosing images is <= X pp",
    "chosen_upper": "the largest-saving design whose paired loss's upper 95 % bound on the choosing images is <= X pp",
}


def tolerance_key(t: float) -> str:
    return f"{t:g}"


def choose(points: list[dict], exact_right: np.ndarray, tolerances=TOLERANCES_PP) -> dict:
    """{"chosen": {X: point}, "chosen_upper": {X: point}} from `points` (each with
    "saving_pct" and "right": per choosing image, right?), None where no point qualifies.
    Each point gets its "choosing" paired loss. Ties in saving: the smaller loss."""
    for p in points:
        p["choosing"] = paired_loss(exact_right, p["right"])
    out = {"chosen": {}, "chosen_upper": {}}
    for t in tolerances:
        for rule, field in (("chosen", "loss_pp"), ("chosen_upper", "upper_pp")):
            ok = [p for p in points if p["choosing"][field] <= t + 1e-9]
            out[rule][tolerance_key(t)] = None if not ok else max(
                ok, key=lambda p: (round(p["saving_pct"], 6), -p["choosing"]["loss_pp"]))
    return out


def entry(point: dict | None, test_exact_right: np.ndarray | None) -> dict | None:
    """A chosen point as design.json records it (test loss with its paired interval)."""
    if point is None:
        return None
    c = point["choosing"]
    test = None if test_exact_right is None or point.get("test_right") is None else \
        paired_loss(test_exact_right, point["test_right"])
    return {"genome": [int(g) for g in point["genome"]], "circuits": point.get("circuits"),
            "energy_saving_pct": round(point["saving_pct"], 4), "choosing_loss_pp": c["loss_pp"],
            "choosing_loss_ci_pp": [c["lower_pp"], c["upper_pp"]],
            "choosing_accuracy": float(np.mean(point["right"])),
            "test_loss_pp": None if test is None else test["loss_pp"],
            "test_loss_ci_pp": None if test is None else [test["lower_pp"], test["upper_pp"]],
            "test_accuracy": None if point.get("test_right") is None else float(np.mean(point["test_right"])),
            "retrained": bool(point["retrained"]), "candidate": point.get("key"), "design": point.get("design")}


def write_table(path: Path, doc: dict) -> None:
    """design.md: the chosen designs under both rules, and the cost."""
    ref = doc["reference"]
    lines = [f"# design: {doc['model']}, seed {doc['seed']}", "",
             f"All-exact 8-bit network: choosing images {100 * ref['choosing_accuracy']:.2f} % "
             f"({len(doc['images']['choosing'])} images), test {100 * ref['test_accuracy']:.2f} % "
             f"({ref['test_images']} images). Losses are paired against it, 95 % intervals in brackets.", "",
             "| rule | within | saving | choosing loss | test loss (reported only) | retrained | circuits |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for rule, name in (("chosen", "point estimate"), ("chosen_upper", "upper bound")):
        for key, c in doc[rule].items():
            if c is None:
                lines.append(f"| {name} | {key} pp | no design | | | | |")
                continue
            test = "-" if c["test_loss_pp"] is None else \
                f"{c['test_loss_pp']:.2f} pp [{c['test_loss_ci_pp'][0]:.2f}, {c['test_loss_ci_pp'][1]:.2f}]"
            lines.append(f"| {name} | {key} pp | {c['energy_saving_pct']:.1f} % | {c['choosing_loss_pp']:.2f} pp "
                         f"[{c['choosing_loss_ci_pp'][0]:.2f}, {c['choosing_loss_ci_pp'][1]:.2f}] | {test} | "
                         f"{'yes' if c['retrained'] else 'no'} | {', '.join(c.get('circuits') or [])} |")
    cost = doc["cost"]
    lines += ["", f"Cost: {cost['wall_s']:.0f} s in all = {cost['wall_s'] / cost['float_pass_s']:.0f} float passes "
                  f"(float model on 2,000 images: {cost['float_pass_s']:.3f} s in this process). Retraining epoch "
                  f"{cost['retrain_epoch_s'] or 0:.0f} s = {(cost['retrain_epoch_s'] or 0) / cost['float_train_epoch_s']:.1f} "
                  f"float training epochs ({cost['float_train_epoch_s']:.1f} s, same images and batch).", "",
              "| phase | seconds |", "| --- | --- |"]
    lines += [f"| {k} | {v:.0f} |" for k, v in cost["phases"].items()]
    path.write_text("\n".join(lines) + "\n")


def plot_design(path: Path, doc: dict, points: list[dict]) -> None:
    """Choosing-image loss against saving: un-tuned front points, retrained candidates and the choices."""
    from surrogate_nas.results.plots import plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for retrained, colour, label in ((False, "0.55", "search front, not retrained"), (True, "C3", "retrained")):
        pts = [p for p in points if bool(p["retrained"]) == retrained]
        if pts:
            ax.errorbar([p["saving_pct"] for p in pts], [p["choosing"]["loss_pp"] for p in pts],
                        yerr=np.array([[p["choosing"]["loss_pp"] - p["choosing"]["lower_pp"],
                                        p["choosing"]["upper_pp"] - p["choosing"]["loss_pp"]] for p in pts]).T,
                        fmt="o", ms=4, c=colour, ecolor=colour, elinewidth=0.8, capsize=2, label=label)
    for key, c in doc["chosen"].items():
        if c is not None:
            ax.scatter([c["energy_saving_pct"]], [c["choosing_loss_pp"]], s=120, facecolors="none", edgecolors="k")
            ax.annotate(f"{key} pp", (c["energy_saving_pct"], c["choosing_loss_pp"]), textcoords="offset points",
                        xytext=(6, 6), fontsize=8)
    for t in TOLERANCES_PP:
        ax.axhline(t, c="k", ls=":", lw=0.7)
    ax.set_ylim(min(-1.0, ax.get_ylim()[0]), min(6.0, max(3.0, ax.get_ylim()[1])))
    ax.set_xlabel("energy saving (%)")
    ax.set_ylabel("loss against all-exact, choosing images (pp)")
    ax.set_title(f"design: {doc['model']}, seed {doc['seed']} (circles: chosen, point estimate)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
