"""A finished run's headline numbers, chosen honestly: on validation, reported on test.

"Best saving within X pp" takes, among the front points re-scored on the whole
validation split, the cheapest one whose validation accuracy is at most X pp below the
all-exact validation accuracy; its test loss is then read off, never used to choose.
"""

from __future__ import annotations

from pathlib import Path

from surrogate_nas.errors import UserError
from surrogate_nas.results.run_folder import RunFolder

TOLERANCES_PP = (0.5, 1.0, 2.0)


HV_CHECKPOINTS = (100, 200, 300)


def choose_within(points: list[dict], exact: dict, tolerance_pp: float) -> dict | None:
    """The largest-saving point within `tolerance_pp` of all-exact on validation."""
    ok = [p for p in points if 100 * (exact["validation_accuracy"] - p["validation_accuracy"]) <= tolerance_pp + 1e-9]
    if not ok:
        return None
    # energies come from CSVs with 6 decimals and from memory: compare them at that precision
    best = max(ok, key=lambda p: (round(1 - p["energy"], 6), p["validation_accuracy"]))
    return {
        "tolerance_pp": tolerance_pp,
        "genome": best["genome"],
        "genome_indices": best.get("genome_indices"),
        "compensation": best.get("compensation", ""),
        "energy": best["energy"],
        "energy_saving_pct": 100 * (1 - best["energy"]),
        "validation_loss_pp": 100 * (exact["validation_accuracy"] - best["validation_accuracy"]),
        "test_loss_pp": 100 * (exact["test_accuracy"] - best["test_accuracy"]),
        "validation_accuracy": best["validation_accuracy"],
        "test_accuracy": best["test_accuracy"],
    }


def hv_at(evaluations: list[dict], reference, checkpoints=HV_CHECKPOINTS) -> dict[str, float | None]:
    """Hypervolume of the search-set front after the first n true evaluations (early-stopped
    ones are below the floor and add nothing)."""
    from surrogate_nas.search.pareto import HVHistory

    history = HVHistory(reference)
    for e in evaluations:
        history.add([1 - e["accuracy"], e["energy"]] if not e.get("below_floor") else [1.0, 1.0])
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
    if exact is None:
        raise UserError(f"{run_dir / 'rescored.csv'}: no all-exact row (re-run without --no-test)")
    front = [r for r in rows if r["role"] == "front"]
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
        "hv": hv_at([{"accuracy": float(e["accuracy"]), "energy": float(e["energy"]),
                      "below_floor": e.get("below_floor")} for e in evaluations], run_reference(config)),
        "hv_reference_accuracy": 1.0 - run_reference(config)[0],
        "stopped_early": sum(1 for e in evaluations if e.get("below_floor")),
        "front_points_rescored": len(front),
        "rule": "chosen on validation accuracy (all validation images) against all-exact validation accuracy; "
                "losses reported on the test set",
    }
    folder.write_summary(summary)
    return summary


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
    for key, c in summary["chosen"].items():
        if c is None:
            lines.append(f"within {key}: no point")
        else:
            lines.append(f"within {key} (validation): saving {c['energy_saving_pct']:.1f} %, validation loss "
                         f"{c['validation_loss_pp']:.2f} pp, test loss {c['test_loss_pp']:.2f} pp  {c['genome']}")
    return "\n".join(lines)
