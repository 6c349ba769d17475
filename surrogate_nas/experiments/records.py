"""A `compare` table from the run folders alone: no model, no cache, no machine of the
kind that made the runs. Seeds of a comparison are made in different sessions, often on
different machine kinds (whose evaluations are separate cache entries), and a cache does
not travel with a clone; the folders do. HV curves, fronts and the validation-chosen
savings are rebuilt from `evaluations.csv` and `rescored.csv` exactly as a live run
builds them."""

from __future__ import annotations

from pathlib import Path

from surrogate_nas.errors import UserError
from surrogate_nas.experiments.methods import MethodRun, rescored_choices
from surrogate_nas.results.run_folder import RunFolder
from surrogate_nas.search.pareto import HVHistory, hv_reference
from surrogate_nas.search.truth import pareto_front


def recorded_run(run_dir: Path, method: str, seed: int, budget: int, floor: float, n_images: int | None,
                 rescored: bool) -> MethodRun:
    """One finished run of the plan as `compare` would tabulate it. `seconds` is the sum
    of its evaluations' recorded seconds (the table's `eval_s`), not a wall time."""
    evaluations = RunFolder(run_dir).true_evaluations(n_images)
    if len(evaluations) < budget:
        raise UserError(f"{run_dir}: {len(evaluations)} of {budget} evaluations recorded: the run is unfinished "
                        f"(finish it with `compare ... --only-seed {seed}`)")
    history = HVHistory(hv_reference(floor))
    for used, e in enumerate(evaluations, start=1):
        history.add(e.objectives, used)
    hits = sum(e.from_cache for e in evaluations)
    seconds = float(sum(e.seconds for e in evaluations))
    return MethodRun(method, seed, budget, history.values, pareto_front(evaluations), seconds, hits,
                     len(evaluations) - hits, rescored_choices(run_dir) if rescored else None, timing="eval")


def plan_floor(run_dirs: list[Path]) -> tuple[float, str, int | None]:
    """The HV reference of a recorded comparison: the accuracy floor, where it came from,
    and the search-set size, from the first NSGA-II run folder of the plan (baseline
    folders hold no config.json); other floors in the plan are named, not used."""
    records = [RunFolder(d).record("compare --from-records") for d in run_dirs if (d / RunFolder.CONFIG).is_file()]
    if not records:
        raise UserError("compare --from-records: the plan has no surrogate or full run folder with a config.json "
                        "to take the accuracy floor from")
    floor = float(records[0]["accuracy_floor"]["value"])
    source = f"as {records[0]['run_id']}/config.json records it"
    others = sorted({round(float(r["accuracy_floor"]["value"]), 6) for r in records} - {round(floor, 6)})
    if others:
        source += f"; the plan's other runs recorded {', '.join(map(str, others))}"
    return floor, source, (records[0]["evaluator"].get("images") or {}).get("n_images")
