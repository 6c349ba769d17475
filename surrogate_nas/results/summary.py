"""A finished run's headline numbers, chosen honestly: on validation, reported on test.

"Best saving within X pp" takes, among the front points re-scored on the whole
validation split, the cheapest one whose validation accuracy is at most X pp below the
all-exact validation accuracy; its test loss is then read off, never used to choose.

Each loss comes with a paired 95 % interval against all-exact on the same images (from
the run folder's per-image records, `rescored_bits.csv`): the normal approximation of a
difference of paired proportions, whose variance comes from the discordant images. With
b images that only all-exact gets right and c that only the point gets right, out of n,
the loss is (b - c) / n with standard error sqrt(b + c - (b - c)^2 / n) / n. A second
rule, "upper bound", takes the cheapest point whose validation loss's upper bound is
within X pp: a point it chooses is shown, at that confidence, to lose at most X pp.
"""

from __future__ import annotations

import math
from pathlib import Path
from statistics import NormalDist

import numpy as np

from surrogate_nas.errors import UserError
from surrogate_nas.results.run_folder import RunFolder

TOLERANCES_PP = (0.5, 1.0, 2.0)


HV_CHECKPOINTS = (100, 200, 300)


CONFIDENCE = 0.95  # of the paired intervals (two-sided)


INTERVAL_METHOD = ("paired, on the same images: normal approximation with the variance from the discordant images, "
                   "loss (b - c) / n +- z sqrt(b + c - (b - c)^2 / n) / n, b (c) the images only all-exact (only the "
                   "point) gets right")


NO_RECORDS = "no per-image records (made before they existed)"


RULES = {
    "point estimate": "the cheapest front point whose validation loss against all-exact is <= X pp",
    "upper bound": ("the cheapest front point whose validation loss's upper 95 % bound (paired against all-exact) "
                    "is <= X pp"),
}


def paired_loss(exact_right, point_right, confidence: float = CONFIDENCE) -> dict:
    """Loss of a point against all-exact (accuracy difference, pp) on the same images, with
    its two-sided `confidence` interval (the module's normal approximation).
    `exact_right`, `point_right`: per image, right? (the same images, in the same order)."""
    e, p = np.asarray(exact_right, bool), np.asarray(point_right, bool)
    if e.shape != p.shape or e.ndim != 1 or len(e) == 0:
        raise ValueError(f"paired_loss: per-image records of shapes {e.shape} and {p.shape}")
    n = len(e)
    b, c = int(np.sum(e & ~p)), int(np.sum(~e & p))
    loss = (b - c) / n
    half = NormalDist().inv_cdf(0.5 + confidence / 2) * math.sqrt(max(0.0, b + c - (b - c) ** 2 / n)) / n
    return {"loss_pp": 100 * loss, "lower_pp": 100 * (loss - half), "upper_pp": 100 * (loss + half), "images": n,
            "only_exact_right": b, "only_point_right": c}


def _bound(point: dict, split: str) -> list[float] | None:
    interval = (point.get("intervals") or {}).get(split)
    return None if interval is None else [interval["lower_pp"], interval["upper_pp"]]


def choose_within(points: list[dict], exact: dict, tolerance_pp: float) -> dict | None:
    """The largest-saving point within `tolerance_pp` of all-exact on validation."""
    ok = [p for p in points if 100 * (exact["validation_accuracy"] - p["validation_accuracy"]) <= tolerance_pp + 1e-9]
    return _choice(ok, exact, tolerance_pp, "point estimate")


def choose_confidently(points: list[dict], exact: dict, tolerance_pp: float) -> dict | None:
    """The largest-saving point whose validation loss's upper bound is within `tolerance_pp`
    (points need `intervals`, as `summarize` gives them; a point without is never chosen)."""
    ok = [p for p in points if (b := _bound(p, "validation")) is not None and b[1] <= tolerance_pp + 1e-9]
    return _choice(ok, exact, tolerance_pp, "upper bound")


def _choice(ok: list[dict], exact: dict, tolerance_pp: float, rule: str) -> dict | None:
    if not ok:
        return None
    # energies come from CSVs with 6 decimals and from memory: compare them at that precision
    best = max(ok, key=lambda p: (round(1 - p["energy"], 6), p["validation_accuracy"]))
    return {
        "rule": rule,
        "tolerance_pp": tolerance_pp,
        "genome": best["genome"],
        "genome_indices": best.get("genome_indices"),
        "compensation": best.get("compensation", ""),
        "energy": best["energy"],
        "energy_saving_pct": 100 * (1 - best["energy"]),
        "validation_loss_pp": 100 * (exact["validation_accuracy"] - best["validation_accuracy"]),
        "test_loss_pp": None if best.get("test_accuracy") is None else 100 * (exact["test_accuracy"] - best["test_accuracy"]),
        "validation_accuracy": best["validation_accuracy"],
        "test_accuracy": best.get("test_accuracy"),
        "validation_loss_interval_pp": _bound(best, "validation"),
        "test_loss_interval_pp": _bound(best, "test"),
    }


def validation_choices(points: list[dict], exact: dict) -> list:
    """The genomes that either rule chooses at any of TOLERANCES_PP, from validation alone:
    the only front points whose test score a summary reports (`points` need "genome",
    "energy", "validation_accuracy" and, for the upper-bound rule, "intervals")."""
    chosen = [rule(points, exact, t) for t in TOLERANCES_PP for rule in (choose_within, choose_confidently)]
    return list(dict.fromkeys(c["genome"] for c in chosen if c is not None))


def band_candidates(front_rows, lo: float = 35, hi: float = 70, width: float = 5, accuracy: str = "validation_accuracy",
                    energy: str = "energy") -> list[dict]:
    """The most accurate front point (by `accuracy`, validation by default) in each band
    [lo, lo + width), [lo + width, lo + 2 width), ... up to hi of energy saving in %
    (100 * (1 - energy)); bands without a point are skipped. Ties: the cheaper point.
    Returned in band order, each row with `band` = (low, high) added."""
    out = []
    n = int(round((hi - lo) / width))
    for k in range(n):
        a, b = lo + k * width, lo + (k + 1) * width
        inside = [r for r in front_rows if a <= 100 * (1 - float(r[energy])) < b]
        if inside:
            best = max(inside, key=lambda r: (float(r[accuracy]), -float(r[energy])))
            out.append({**best, "band": (a, b)})
    return out


def hv_at(evaluations: list[dict], reference, checkpoints=HV_CHECKPOINTS) -> dict[str, float | None]:
    """Hypervolume of the search-set front after the first n true evaluations (early-stopped
    ones are below the floor and add nothing)."""
    from surrogate_nas.search.pareto import HVHistory

    history = HVHistory(reference)
    for e in evaluations:
        stopped = e.get("below_floor") or e.get("dominated_by")
        history.add([1 - e["accuracy"], e["energy"]] if not stopped else [1.0, 1.0])
    return {str(n): history.at(n) for n in checkpoints}


def run_reference(config: dict) -> tuple[float, float]:
    """A run folder's HV reference point, as its config.json records it."""
    from surrogate_nas.search.pareto import LEGACY_HV_REFERENCE

    ref = config.get("hv_reference")
    return (1.0 - ref["accuracy"], ref["energy"]) if ref else LEGACY_HV_REFERENCE


def read_rescored(run_dir: Path) -> list[dict]:
    """The re-scored genomes of a run (role all-exact / front / other)."""
    return RunFolder(run_dir).rescored()


def summarize(run_dir: Path) -> dict:
    """Read a run folder and write `summary.json` into it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    folder = RunFolder(run_dir)
    rows = folder.rescored()
    evaluations = folder.evaluations()
    exact = next((r for r in rows if r["role"] == "all-exact"), None)
    if exact is None or exact["test_accuracy"] is None:
        raise UserError(f"{run_dir / 'rescored.csv'}: no all-exact row with validation and test accuracy "
                        "(re-run without --no-test)")
    front = [r for r in rows if r["role"] == "front"]
    records = _attach_intervals(folder, rows, exact)
    config = folder.record() if folder.exists() else {}
    summary = {
        "run": run_dir.name,
        "mode": config.get("search", {}).get("mode"),
        "compensation": config.get("search", {}).get("compensation", "none"),
        "true_evaluations": len(evaluations),
        "exact_reference": exact["genome"].split(";")[0],
        "all_exact": {"validation_accuracy": exact["validation_accuracy"], "test_accuracy": exact["test_accuracy"]},
        "validation_images": config.get("rescore", {}).get("validation_images"),
        "test_images": config.get("rescore", {}).get("test_images"),
        "chosen": {f"{t:g}pp": choose_within(front, exact, t) for t in TOLERANCES_PP},
        "chosen_upper_bound": {f"{t:g}pp": choose_confidently(front, exact, t) for t in TOLERANCES_PP},
        "intervals": {"confidence": CONFIDENCE, "method": INTERVAL_METHOD if records else None,
                      "note": None if records else NO_RECORDS},
        "rules": RULES,
        "hv": hv_at([{"accuracy": float(e["accuracy"]), "energy": float(e["energy"]),
                      "below_floor": e.get("below_floor"), "dominated_by": e.get("dominated_by")}
                     for e in evaluations], run_reference(config)),
        "hv_reference_accuracy": 1.0 - run_reference(config)[0],
        "stopped_early": sum(1 for e in evaluations if e.get("below_floor") or e.get("dominated_by")),
        "stopped_by_race": sum(1 for e in evaluations if e.get("dominated_by")),
        "front_points_rescored": len(front),
        "front_points_tested": sum(1 for r in front if r["test_accuracy"] is not None),
        "front_points_raced_on_validation": sum(1 for r in folder.rows(folder.RESCORED) if r.get("validation_worse_than")),
        "rule": "chosen on validation accuracy (all validation images) against all-exact validation accuracy; "
                "losses reported on the test set",
    }
    if config.get("search", {}).get("max_distinct") is not None:
        # Only runs that limit the distinct circuits carry the key, so older records still regenerate unchanged.
        summary["max_distinct"] = config["search"]["max_distinct"]
    folder.write_summary(summary)
    return summary


def _attach_intervals(folder: RunFolder, rows: list[dict], exact: dict) -> bool:
    """Give each re-scored row its paired intervals against all-exact ("intervals": split ->
    `paired_loss` or None) from the folder's per-image records; False when it has none."""
    bits = folder.rescored_bits()
    for r in rows:
        for split in ("validation", "test"):
            right = bits.get((r["genome_indices"], split))
            if right is not None and (r[f"{split}_accuracy"] is None or abs(right.mean() - r[f"{split}_accuracy"]) > 1e-6):
                raise UserError(f"{folder / folder.RESCORED_BITS}: {split} records of {r['genome']} give accuracy "
                                f"{right.mean():.6f}, {folder.RESCORED} says {r[f'{split}_accuracy']}")
    for r in rows:
        r["intervals"] = {}
        for split in ("validation", "test"):
            e, p = bits.get((exact["genome_indices"], split)), bits.get((r["genome_indices"], split))
            r["intervals"][split] = None if e is None or p is None or len(e) != len(p) else paired_loss(e, p)
    return bool(bits)


def format_summary(summary: dict) -> str:
    lines = [
        f"run {summary['run']}: mode {summary['mode']}, compensation {summary['compensation']}, "
        f"{summary['true_evaluations']} true evaluations",
        f"all-exact: validation {summary['all_exact']['validation_accuracy']:.4f}, "
        f"test {summary['all_exact']['test_accuracy']:.4f}",
        "HV: " + ", ".join(f"@{n} {'-' if v is None else f'{v:.4f}'}" for n, v in summary["hv"].items()),
    ]
    if summary.get("exact_reference"):
        lines.append(f"savings: energy relative to the exact reference {summary['exact_reference']}")
    note = (summary.get("intervals") or {}).get("note")
    for key in summary["chosen"]:
        for rule, c in (("point estimate", summary["chosen"][key]),
                        ("upper bound", (summary.get("chosen_upper_bound") or {}).get(key))):
            if c is None:
                why = note if rule == "upper bound" and note else "no point"
                lines.append(f"within {key} ({rule}): {why}")
            else:
                test = "not scored" if c["test_loss_pp"] is None else f"{c['test_loss_pp']:.2f} pp"
                lines.append(f"within {key} ({rule}): saving {c['energy_saving_pct']:.1f} %, validation loss "
                             f"{c['validation_loss_pp']:.2f} pp{_interval(c, 'validation')}, test loss "
                             f"{test}{_interval(c, 'test')}  {c['genome']}")
    if note:
        lines.append(f"intervals: {note}")
    return "\n".join(lines)


def _interval(chosen: dict, split: str) -> str:
    bound = chosen.get(f"{split}_loss_interval_pp")
    return "" if bound is None else f" [{bound[0]:.2f}, {bound[1]:.2f}]"
