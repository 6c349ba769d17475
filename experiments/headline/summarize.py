"""Headline table and plots from the run folders in this directory that have a
summary.json (written by `run`, or by `python -m surrogate_nas summarize RUN_DIR`).

Savings are chosen on validation (all 5,000 validation images, against all-exact) and
reported with their test loss (10,000 test images): never chosen on test.

    python experiments/headline/summarize.py [FOLDER [RUN_DIR ...]]

FOLDER (default: this folder) receives summary.md, hv.png and fronts.png; the runs are
its subfolders with a rescored.csv, or the RUN_DIRs given after it.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

from surrogate_nas.results.plots import finish_front_axes, plot_hv, plt
from surrogate_nas.results.run_folder import RunFolder
from surrogate_nas.results.summary import run_reference, summarize
from surrogate_nas.search.config import SearchConfig
from surrogate_nas.search.pareto import HVHistory
from surrogate_nas.workflows.run_folder import known_settings

HERE = Path(__file__).parent


def _cell(chosen: dict | None) -> str:
    if chosen is None:
        return "-"
    test = "-" if chosen["test_loss_pp"] is None else f"{chosen['test_loss_pp']:.2f}"
    return f"{chosen['energy_saving_pct']:.1f} % ({chosen['validation_loss_pp']:.2f} / {test})"


def _spread(values: list, digits: int) -> str:
    """median (min-max) of the values present; how many are missing (no point chosen)."""
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    text = f"{statistics.median(present):.{digits}f}"
    if len(present) > 1:
        text += f" ({min(present):.{digits}f} to {max(present):.{digits}f})"
    missing = len(values) - len(present)
    return text + (f", {missing} none" if missing else "")


def seed_table(runs: list[Path], summaries: list[dict]) -> list[str]:
    """Median and range over runs whose search settings differ only in the seed, with the
    count of seed genomes they all share: such seeds are not fully independent samples."""
    # a setting newer than a run's record had its default then (as `--resume` reads it)
    defaults = json.loads(json.dumps(SearchConfig().as_dict()))
    records = [{**defaults, **known_settings(RunFolder(r).record()["search"])} for r in runs]
    if len(runs) < 2 or any({**c, "seed": 0} != {**records[0], "seed": 0} for c in records):
        return []
    seed_sets = [{e["genome_indices"] for e in RunFolder(r).evaluations() if e["reason"] == "seed"} for r in runs]
    lines = ["", f"Over the {len(runs)} seeds ({', '.join(str(c['seed']) for c in records)}), median (min to max); "
             "chosen on validation, test only reported; each column's median is taken on its own:", "",
             "| | median (range) | validation loss (pp) | test loss (pp) |", "|---|---|---|---|"]
    lines += [f"| HV@{b} | {_spread([s['hv'][b] for s in summaries], 4)} | | |" for b in ("100", "200", "300")]
    # the upper-bound rule needs per-image records: runs made before them are left out, not counted as "none"
    bounded = [s for s in summaries if (s.get("intervals") or {}).get("method")]
    for rule, key, group in (("point estimate", "chosen", summaries), ("upper bound", "chosen_upper_bound", bounded)):
        for tol in ("0.5pp", "1pp", "2pp"):
            picks = [(s.get(key) or {}).get(tol) for s in group]
            column = lambda field: [None if c is None else c[field] for c in picks]  # noqa: E731
            lines.append(f"| saving within {tol[:-2]} pp, {rule} rule (%) | {_spread(column('energy_saving_pct'), 1)} | "
                         f"{_spread(column('validation_loss_pp'), 2)} | {_spread(column('test_loss_pp'), 2)} |")
    isas = [((RunFolder(r).record().get("evaluator") or {}).get("emulation") or {}).get("cpu_isa") for r in runs]
    if len(set(isas)) > 1:
        lines += ["", "The seeds ran on different machine kinds (" + ", ".join(
            f"seed {c['seed']}: {isa or 'not recorded'}" for c, isa in zip(records, isas)) + "). Between them "
            "TensorFlow's CPU kernels sum in another order and a near-tie of two logits can flip an image, so each "
            "seed is measured against its own all-exact on its own machine kind."]
    if len(bounded) < len(summaries):
        lines += ["", f"The upper-bound rows cover the {len(bounded)} seeds with per-image records "
                  f"({', '.join(str(c['seed']) for c, s in zip(records, summaries) if s in bounded)})."]
    lines += ["", f"The seed sets ({', '.join(str(len(s)) for s in seed_sets)} genomes) share "
              f"{len(set.intersection(*seed_sets))} genomes: all-exact and the one-circuit-everywhere genomes are the "
              "same in every seed, so the seeds are not fully independent samples."]
    return lines


def main(here: Path = HERE, runs: list[Path] | None = None) -> None:
    """Re-summarize every run folder in `here` (or `runs`) with today's `summarize`
    (summary.json is regenerated from the CSVs), then write the table and figures."""
    runs = runs or sorted(p.parent for p in here.glob("*/rescored.csv"))
    lines = ["| run | mode | compensation | HV@100 | HV@200 | HV@300 | <= 0.5 pp | <= 1 pp | <= 2 pp |",
             "|---|---|---|---|---|---|---|---|---|"]
    bounds = []  # the upper-bound rule's choices, where the run has per-image records
    series, fronts, references = {}, {}, set()
    summaries = []
    exacts = {}  # run -> its all-exact accuracies (they differ by an image between machine kinds)
    for run in runs:
        s = summarize(run)
        summaries.append(s)
        reference = run_reference(RunFolder(run).record())
        references.add(reference)
        hv = s["hv"]
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(f"| {run.name} | {s['mode']} | {s['compensation']} | {fmt(hv['100'])} | {fmt(hv['200'])} | "
                     f"{fmt(hv['300'])} | {_cell(s['chosen']['0.5pp'])} | {_cell(s['chosen']['1pp'])} | "
                     f"{_cell(s['chosen']['2pp'])} |")
        upper = s.get("chosen_upper_bound") or {}
        if any(upper.values()):
            bounds.append(f"| {run.name} | " + " | ".join(_cell(upper.get(k)) for k in ("0.5pp", "1pp", "2pp")) + " |")
        history = HVHistory(reference)
        for r in RunFolder(run).evaluations():
            stopped = r.get("below_floor") or r.get("dominated_by")  # below the floor, or lost a race
            history.add([1.0, 1.0] if stopped else [1 - float(r["accuracy"]), float(r["energy"])])
        series[run.name] = history.values
        fronts[run.name] = sorted((float(r["energy"]), float(r["validation_accuracy"]))
                                  for r in csv.DictReader(open(run / "front.csv")) if r["validation_accuracy"])
        exact = s["all_exact"]
        exacts[run.name] = f"validation {exact['validation_accuracy']:.4f}, test {exact['test_accuracy']:.4f}"
    same = len(set(exacts.values())) == 1
    lines += ["", "Cells: energy saving of the validation-chosen point (validation loss / test loss, pp) against "
              + (f"all-exact ({next(iter(exacts.values()))})." if same else
                 "the run's own all-exact (" + "; ".join(f"{k}: {v}" for k, v in exacts.items()) + ")."),
              "HV on the 2,000-image search set, reference point (accuracy, energy) "
              + ", ".join(f"({1 - a:.4f}, {e:.2f})" for a, e in sorted(references))
              + " as each run's config.json records it."]
    lines += seed_table(runs, summaries)
    if bounds:
        lines += ["", "Upper-bound rule (the cheapest point whose validation loss's upper 95 % bound, paired "
                  "against all-exact, is within X pp):", "", "| run | <= 0.5 pp | <= 1 pp | <= 2 pp |",
                  "|---|---|---|---|", *bounds]
    (here / "summary.md").write_text("\n".join(lines) + "\n")
    plot_hv(here / "hv.png", series, min(references), "budget 300, 2,000-image search set")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, pts) in enumerate(fronts.items()):
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", marker="o", ms=3, c=f"C{i}", label=name)
    ax.axhline(exact["validation_accuracy"], c="k", ls=":", lw=1, label="all-exact")
    ax.set_ylim(exact["validation_accuracy"] - 0.1, exact["validation_accuracy"] + 0.01)
    finish_front_axes(ax, fig, here / "fronts.png", "top-1 accuracy (all 5,000 validation images)",
                      "Fronts re-scored on validation (no retraining)")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE, [Path(a) for a in sys.argv[2:]] or None)
