"""A run folder: its id, `config.json` (written before any expensive work, checked on
`--resume`) and `progress.json`."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from surrogate_nas.errors import UserError
from surrogate_nas.results.run_folder import RunFolder
from surrogate_nas.search.config import SearchConfig
from surrogate_nas.search.truth import TrueEvaluations

RUN_FILES = ("config.json", "evaluations.csv", "front.csv", "front.png", "hv.png", "report.txt")


def new_run_id(config: SearchConfig) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{config.mode}-b{config.budget}-p{config.pop_size}-s{config.seed}-{stamp}"


RETIRED_SETTINGS = ("rescore_floor_pp",)  # replaced by the accuracy floor


def known_settings(saved: dict) -> dict:
    """A saved search configuration without the settings this version no longer has."""
    return {k: v for k, v in saved.items() if k not in RETIRED_SETTINGS}


def load_run_config(run_dir: Path, flag: str = "--resume") -> SearchConfig:
    """The settings a run folder was made with (a newer setting takes its default)."""
    folder = RunFolder(run_dir)
    if not folder.exists():
        raise UserError(f"{flag}: {folder / folder.CONFIG} not found (no such run)")
    try:
        return SearchConfig(**known_settings(folder.record(flag)["search"]))
    except TypeError as exc:
        raise UserError(f"{flag}: {folder / folder.CONFIG} is not a run configuration ({exc})") from None


def read_run_record(run_dir: Path, flag: str | None = None) -> dict:
    """A run folder's config.json, or a one-line error naming what is wrong."""
    return RunFolder(run_dir).record(flag)


def recorded_paths(run_dir: Path) -> dict[str, str | None]:
    """Model, catalog and data paths as a run's config.json records them (relative to the
    project root; absolute in runs made before records became portable)."""
    doc = read_run_record(run_dir)
    data = doc.get("data_path")
    if data is None and " from " in str(doc.get("data", "")):  # older records: "<kind> from <path>"
        data = str(doc["data"]).rsplit(" from ", 1)[1]
    return {"model": doc.get("model"), "multipliers": doc.get("catalog"), "data": data}


# What each part of the evaluator description is, in the words of a refusal to resume.
DESCRIPTION_WORDS = {
    "model_weights_sha256": "model weights",
    "input_ranges": "model calibration (input ranges)",
    "images": "scored images",
    "catalog": "multiplier catalog",
    "emulation": "emulation",
    "compensation": "error compensation",
    "approximate": "approximated layers",
}


def _differences(saved, now, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves where two JSON-like values differ."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(saved) | set(now), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in saved or key not in now:
                out.append(path)
            else:
                out += _differences(saved[key], now[key], path)
        return out
    return [] if saved == now else [prefix or "(all)"]


def describe_changes(saved: dict, now: dict) -> str:
    """'model weights, scored images (data_sha256, images_sha256)' for two evaluator descriptions."""
    parts: dict[str, list[str]] = {}
    for path in _differences(saved, now):
        top, _, rest = path.partition(".")
        parts.setdefault(top, [])
        if rest:
            parts[top].append(rest)
    return ", ".join(DESCRIPTION_WORDS.get(top, top) + (f" ({', '.join(rest)})" if rest else "")
                     for top, rest in parts.items())


def evaluations_of(run_dir: Path) -> tuple[str, dict, list]:
    """A run folder's true evaluations as cache rows (fingerprint, evaluator description,
    records), so that a run whose cache was lost or left on another machine resumes without
    scoring them again. Early stops at the run's floor get the floor itself back (the file
    keeps 6 digits; a cached stop answers only floors at or above its own)."""
    from surrogate_nas.evaluation.cache import Record
    from surrogate_nas.genome import genome_key

    try:
        saved = json.loads((run_dir / "config.json").read_text())
        fp, description, run_id = saved["fingerprint"], saved["evaluator"], saved["run_id"]
        floor = (saved.get("accuracy_floor") or {}).get("value")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"{run_dir}: not a run folder with evaluations ({type(exc).__name__}: {exc})") from None
    if not fp or description is None:
        return fp, description, []  # killed before its evaluator was built
    everything = (description.get("images") or {}).get("n_images")  # what older records scored
    records = []
    for e in RunFolder(run_dir).true_evaluations(everything):
        stop = e.below_floor
        if stop is not None and floor is not None and abs(stop - floor) < 1e-6:
            stop = float(floor)
        # a hit of this run came from another run's row: it stays a hit when the run resumes
        records.append(Record(fp, e.genome, e.accuracy, e.energy, e.n_images, e.seconds, "",
                              None if e.from_cache else run_id, stop,
                              None if e.dominated_by is None else genome_key(e.dominated_by)))
    return fp, description, records


def check_saved_run(run_dir: Path, ctx, config: SearchConfig, flag: str) -> None:
    """A run folder is continued only with the settings and the evaluator it was started
    with: anything else would mix accuracies of different setups under one run id."""
    path = run_dir / "config.json"
    try:
        saved = json.loads(path.read_text())
        saved_search, saved_evaluator = saved["search"], saved["evaluator"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"{flag}: {path} is not a run configuration ({type(exc).__name__}: {exc})") from None
    wanted = json.loads(json.dumps(config.as_dict()))
    # a setting newer than the saved run had its default then (as load_run_config reads it)
    saved_search = {**json.loads(json.dumps(SearchConfig().as_dict())), **known_settings(saved_search)}
    changed = [k for k in sorted(set(saved_search) | set(wanted)) if saved_search.get(k) != wanted.get(k)]
    if changed:
        diffs = ", ".join(f"{k} {saved_search.get(k)!r} saved, {wanted.get(k)!r} now" for k in changed)
        raise UserError(f"{flag}: {run_dir} holds a run with other settings ({diffs}); "
                        "use another --out")
    if saved_evaluator is None:
        return  # killed before its evaluator was built: nothing was scored under this run id yet
    now = json.loads(json.dumps(ctx.evaluator.description))
    if saved_evaluator != now:
        raise UserError(f"{flag}: {run_dir} was run with another evaluator; changed: "
                        f"{describe_changes(saved_evaluator, now)}; start a new run instead")


def write_pending_record(run_dir: Path, config: SearchConfig, run_id: str, paths, model_path=None) -> None:
    """The record of a run before anything expensive (data, model card, the auto rule):
    its settings and paths, the evaluator still unknown. With it, a run killed in its
    first seconds is continued by `--resume` like any other."""
    from surrogate_nas.config import portable, project_root

    root = project_root(paths)
    model = model_path or paths.model

    def where(path):
        return None if path is None else portable(path, root)

    RunFolder(run_dir).write_record({
        "run_id": run_id, "status": "started: evaluator not built yet", "search": config.as_dict(),
        "evaluator": None, "fingerprint": None, "model": where(model), "catalog": where(paths.multipliers),
        "data_path": where(paths.data),
    })


def early_stopping_description(config: SearchConfig, floor: float) -> dict | str:
    if not config.early_stop:
        return "off"
    return {"floor": floor, "looks_after_images": list(config.early_stop_looks), "confidence": config.early_stop_confidence,
            "bound": "one-sided Clopper-Pearson, Bonferroni over the looks"}


def _write_config(run_dir: Path, ctx, config: SearchConfig, run_id: str, floor: float,
                  floor_source: str) -> None:
    import pymoo
    import sklearn
    import tensorflow as tf

    from surrogate_nas import __version__
    from surrogate_nas.config import portable, project_root

    root = project_root(ctx.paths)
    doc = {
        "run_id": run_id,
        "search": config.as_dict(),
        "fingerprint": ctx.evaluator.fingerprint,
        "evaluator": ctx.evaluator.description,
        "model": portable(ctx.model_path, root),
        "layers": [{"name": i.name, "kind": i.kind, "macs": i.macs} for i in ctx.evaluator.infos],
        "catalog": portable(ctx.catalog.path, root),
        "catalog_names": ctx.catalog.names,
        "data": ctx.data.source,
        "data_path": None if ctx.data.path is None else portable(ctx.data.path, root),  # None: the Keras download
        "accuracy_floor": {"value": floor, "from": floor_source},
        "hv_reference": {"accuracy": floor, "energy": 1.0},
        "rescore": {"validation_images": "all", "test_images": config.test_images or "all",
                    "points": "all front points" if config.rescore == "all" else "front points at or above the floor",
                    "test_points": ("all re-scored points" if config.rescore == "all"
                                    else "all-exact and the points chosen on validation")},
        "early_stopping": early_stopping_description(config, floor),
        "versions": {
            "surrogate_nas": __version__,
            "tensorflow": tf.__version__,
            "pymoo": pymoo.__version__,
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    RunFolder(run_dir).write_record(doc)


def _write_progress(run_dir: Path, ctx, truth: TrueEvaluations, generation: int | None) -> None:
    from surrogate_nas.results.tables import write_evaluations_csv

    write_evaluations_csv(run_dir / "evaluations.csv", list(truth.archive.values()), ctx.catalog, ctx.methods,
                          ctx.evaluator.infos)
    state = {"generations_done": generation, "evaluations": truth.used, "budget": truth.budget,
             "computed": truth.computed, "cache_hits": truth.cache_hits}
    RunFolder(run_dir).write_progress(state)
