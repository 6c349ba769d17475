"""`design`: one resumable command from a model to retrained designs chosen on images
nothing else used.

Phases, each recorded in `design-state.json` when it ends (a killed run continues with the
first unfinished one; inside a phase, work already saved is reused):
1. calibration: per conv layer the input-range percentile and kernel clip chosen by a rule
   on training images (`network.range_rule`), a copy of the model with those kernels and
   its card;
2. search: `run` on that model (surrogate NSGA-II), or a finished run (`--from`); it is not
   re-scored on validation, so the choosing images stay unread;
3. candidates: by a rule, from the search front and the least-noise designs
   (`workflows.design_retrain`);
4. retraining: raced within `--retrain-hours`, then more seeds;
5. soup: each candidate's retrainings averaged (greedy soup, tuning images);
6. choice: on the choosing images (validation minus the search set), test reported.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm import tqdm

from surrogate_nas.errors import UserError

STATE = "design-state.json"
PHASES = ("calibration", "search", "candidates", "retraining", "soup", "choice")


@dataclass(frozen=True)
class DesignSettings:
    model: str | None = None  # recorded relative to the project root
    budget: int = 300
    seed: int = 0
    retrain_hours: float | None = None  # a wall-clock cap on the retraining (None: none)
    retrain_epochs: int = 24  # the retraining's budget: epochs over all candidates and seeds
    from_run: str | None = None
    search_images: int = 2000
    recipe: str = "kd-clip3-adam1e-3-cos"
    epochs: int = 3
    train_images: int | None = 20000
    seeds: int = 3
    test_images: int | None = None
    max_candidates: int = 8
    max_distinct: int | None = None  # every design uses at most this many distinct circuits

    def validate(self) -> None:
        checks = [("--budget", self.budget >= 4, "must be at least 4"),
                  ("--retrain-hours", self.retrain_hours is None or 0 <= self.retrain_hours < 1000,
                   "must be >= 0 (0: no retraining)"),
                  ("--retrain-epochs", 0 <= self.retrain_epochs <= 10_000, "must be between 0 and 10000 (0: no retraining)"),
                  ("--seed", self.seed >= 0, "must be >= 0"), ("--epochs", self.epochs >= 1, "must be >= 1"),
                  ("--seeds", 1 <= self.seeds <= 10, "must be between 1 and 10"),
                  ("--train-images", self.train_images is None or self.train_images >= 1, "must be >= 1"),
                  ("--search-images", self.search_images >= 1, "must be >= 1"),
                  ("--max-candidates", self.max_candidates >= 1, "must be >= 1"),
                  ("--max-distinct", self.max_distinct is None or self.max_distinct >= 1,
                   "must be between 1 and the number of approximable layers")]
        for flag, ok, why in checks:
            if not ok:
                raise UserError(f"{flag}: {why}, got {getattr(self, flag[2:].replace('-', '_'))}")
        from surrogate_nas.network.retraining import RECIPES

        if self.recipe not in RECIPES:
            raise UserError(f"--recipe {self.recipe}: no such recipe (known: {', '.join(sorted(RECIPES))})")

    def same_run(self, other: dict) -> bool:
        """A folder continues only with the same settings (a larger or smaller retraining budget is allowed)."""
        defaults = asdict(DesignSettings())  # a setting added since the folder was made: its default
        budget = ("retrain_hours", "retrain_epochs")
        mine = {k: v for k, v in asdict(self).items() if k not in budget}
        return mine == {k: v for k, v in {**defaults, **other}.items() if k not in budget}


class DesignFolder:
    """The folder's state: settings and each finished phase's result and seconds."""

    def __init__(self, out: Path, settings: DesignSettings):
        self.out = Path(out)
        self.path = self.out / STATE
        self.state = {"settings": asdict(settings), "phases": {}, "seconds": {}}
        if self.path.is_file():
            try:
                saved = json.loads(self.path.read_text())
            except ValueError:
                raise UserError(f"{self.path}: unreadable state file (remove the folder to start again)") from None
            if not settings.same_run(saved.get("settings", {})):
                raise UserError(f"--out {self.out}: holds a design made with other settings "
                                f"({saved.get('settings')}); use another --out")
            saved["settings"] = asdict(settings)
            self.state = saved
        self.out.mkdir(parents=True, exist_ok=True)

    def done(self, phase: str):
        return self.state["phases"].get(phase)

    def add_seconds(self, phase: str, seconds: float) -> None:
        self.state["seconds"][phase] = self.state["seconds"].get(phase, 0.0) + seconds
        self.save()

    def finish(self, phase: str, result, seconds: float) -> None:
        self.state["phases"][phase] = result
        self.add_seconds(phase, seconds)

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.state, indent=2) + "\n")
        tmp.replace(self.path)


def _timed(folder: DesignFolder, phase: str, fn):
    """Run a phase unless finished; its seconds count even when it is interrupted."""
    if folder.done(phase) is not None:
        return folder.done(phase)
    began = time.time()
    try:
        result = fn()
    except BaseException:
        folder.add_seconds(phase, time.time() - began)
        raise
    folder.finish(phase, result, time.time() - began)
    return result


def _check_search_images(paths, settings: DesignSettings) -> None:
    """Before any work: the search set must leave validation images for the choice."""
    from surrogate_nas.data.splits import make_splits
    from surrogate_nas.evaluation.inputs import load_data_from

    n = len(make_splits(load_data_from(paths), seed=0).y_val)
    if settings.search_images >= n:
        raise UserError(f"--search-images {settings.search_images}: the search used every validation image "
                        f"({n}); none is left for choosing")


def calibrate(paths, out: Path, quiet: bool) -> dict:
    """Phase 1: the rule's choice, the model with clipped kernels and its card."""
    import keras

    from surrogate_nas.data.splits import make_splits
    from surrogate_nas.evaluation.images import calibration_set
    from surrogate_nas.evaluation.inputs import ensure_model, load_catalog_from, load_data_from
    from surrogate_nas.network.calibrate import calibrate_model
    from surrogate_nas.network.card import load_model
    from surrogate_nas.network.range_rule import CLIPS, PERCENTILES, RULE_IMAGES, choose_calibration, clipped_float_model

    source = ensure_model(paths)
    data, catalog = load_data_from(paths), load_catalog_from(paths, "auto")
    float_model = load_model(source)
    splits = make_splits(data, seed=0)
    guard = calibration_set(splits, data.source_hash, 0)
    images = guard.images[:RULE_IMAGES]
    n = len([layer for layer in float_model.layers if isinstance(layer, keras.layers.Conv2D)])
    with tqdm(total=n * len(PERCENTILES) * len(CLIPS), desc="calibration rule", unit="candidate",
              disable=quiet or None, dynamic_ncols=True) as bar:
        rule = choose_calibration(float_model, images, catalog, progress=bar.update,
                                  guard_images=guard.images, guard_labels=guard.labels)
    folder = out / "calibration"
    folder.mkdir(parents=True, exist_ok=True)
    model = clipped_float_model(float_model, [layer["kernel_clip_std"] for layer in rule["layers"]])
    tmp = folder / "model.tmp.keras"
    model.save(tmp)
    tmp.replace(folder / "model.keras")
    calibrate_model(folder / "model.keras", data, input_percentile=[layer["input_percentile"] for layer in rule["layers"]])
    (folder / "rule.json").write_text(json.dumps(rule, indent=2) + "\n")
    return {"layers": rule["layers"], "model": "calibration/model.keras"}


def search(paths, settings: DesignSettings, out: Path, model: Path, quiet: bool) -> str:
    """Phase 2: the search as `run` does it, without re-scoring (the choosing images are
    validation images); resumes an interrupted search."""
    from surrogate_nas.search.config import SearchConfig
    from surrogate_nas.workflows.context import Context
    from surrogate_nas.workflows.run import execute

    config = SearchConfig(mode="surrogate", budget=settings.budget, seed=settings.seed,
                          search_images=settings.search_images, evaluate_test=False,
                          max_distinct=settings.max_distinct)
    ctx = Context.for_search(replace(paths, model=model), config, quiet=quiet)
    try:
        execute(ctx, config, out, run_id="search", resume=True, resume_flag=f"design --out {out}")
    finally:
        ctx.close()
    return "search"


def design(paths, settings: DesignSettings, out: Path, quiet: bool = False) -> dict:
    """Run (or continue) every phase; returns design.json's document."""
    from surrogate_nas.config import from_record, project_root
    from surrogate_nas.workflows.design_phases import (
        choice_phase,
        choosing_images,
        cost_phase,
        design_splits,
        retraining_phase,
        soup_phase,
    )

    settings.validate()
    out = Path(out)
    folder = DesignFolder(out, settings)
    root = project_root(paths)
    if settings.from_run:
        run_dir = from_record(settings.from_run, root)
        if not (run_dir / "evaluations.csv").is_file():
            raise UserError(f"--from {run_dir}: not a run folder (no evaluations.csv)")
        folder.state["phases"].setdefault("calibration", {"from_run": settings.from_run})
        folder.state["phases"].setdefault("search", settings.from_run)
        folder.save()
    else:
        _check_search_images(paths, settings)
        calibration = _timed(folder, "calibration", lambda: calibrate(paths, out, quiet))
        model = out / calibration["model"]
        _timed(folder, "search", lambda: search(paths, settings, out, model, quiet))
        run_dir = out / "search"
    from surrogate_nas.workflows.context import Context

    ctx, config = Context.from_run(run_dir, replace(paths, model=None), quiet=True)  # the run's model
    if settings.from_run and settings.max_distinct is not None and config.max_distinct != settings.max_distinct:
        raise UserError(f"--max-distinct {settings.max_distinct}: run {run_dir.name} searched with "
                        f"max_distinct {config.max_distinct}")
    try:
        choosing_images(design_splits(ctx), ctx)  # a run that searched on every validation image: said now, not at the end
        began = time.time()
        cost = cost_phase(ctx, settings, folder)
        if "baselines" not in folder.state["seconds"]:
            folder.add_seconds("baselines", time.time() - began)
        candidates = _timed(folder, "candidates", lambda: candidates_phase(ctx, run_dir, settings, config))
        race = _timed(folder, "retraining", lambda: retraining_phase(ctx, settings, folder, candidates, quiet))
        soups = _timed(folder, "soup", lambda: soup_phase(ctx, settings, folder, candidates, race, quiet))
        doc = _timed(folder, "choice", lambda: choice_phase(ctx, settings, folder, run_dir, soups, cost, quiet))
    finally:
        ctx.close()
    if doc["cost"]["phases"] != folder.state["seconds"]:  # the choice's own seconds, known once it ended
        from surrogate_nas.results.design_choice import write_json, write_table

        doc["cost"].update(phases=dict(folder.state["seconds"]), wall_s=sum(folder.state["seconds"].values()))
        folder.state["phases"]["choice"] = doc
        folder.save()
        write_json(out / "design.json", doc)
        write_table(out / "design.md", doc)
    return doc


def candidates_phase(ctx, run_dir: Path, settings: DesignSettings, config) -> list[dict]:
    """Phase 3: the candidates (rule in `design_retrain.choose_candidates`)."""
    from surrogate_nas.evaluation.quiet import layer_energy, least_noise_designs
    from surrogate_nas.workflows.design_phases import search_front
    from surrogate_nas.workflows.design_retrain import SAVING_TARGETS, choose_candidates
    from surrogate_nas.workflows.run import distinct_limit

    ev = ctx.evaluator
    stats = ev.layer_statistics()
    noise = ev.designs.residual_noise(stats["taps"], stats["output_std"])[:, :, 1]
    energy = layer_energy([i.macs for i in ev.infos], ctx.catalog.powers, ctx.catalog.exact.power_mw)
    quiet = [tuple(d["genome_indices"]) for d in least_noise_designs(energy, noise ** 2, list(SAVING_TARGETS))
             if d is not None]
    limit = distinct_limit(ctx, config)  # the search's limit
    if limit is not None:  # the least-noise search knows no limit: such designs are left out
        quiet = [g for g in quiet if limit.feasible(g)]
    chosen = choose_candidates(search_front(run_dir), quiet, ev.energy, limit=settings.max_candidates)
    return [asdict(c) for c in chosen]
