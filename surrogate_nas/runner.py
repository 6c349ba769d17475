"""One search run end to end: set up evaluator and cache, search, write the run folder,
re-score the front on the test set."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

from surrogate_nas.errors import UserError
from surrogate_nas.search import SearchConfig, TrueEvaluations, hypervolume, run_full

RUN_FILES = ("config.json", "evaluations.csv", "front.csv", "front.png", "hv.png", "report.txt")


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    front: list
    evaluations: list
    hv_history: list[tuple[int, float]]
    rescored: dict  # genome -> (validation accuracy, test accuracy)
    exact_genome: tuple[int, ...]
    seconds: float
    cache_hits: int
    computed: int
    generations: int
    surrogate_log: list
    floor: float = 0.70  # the accuracy floor of the run
    stopped: int = 0  # evaluations stopped early below the floor
    rescore_seconds: float = 0.0

    @property
    def hv_reference(self) -> tuple[float, float]:
        from surrogate_nas.search import hv_reference

        return hv_reference(self.floor)

    @property
    def test_scores(self) -> dict:
        return {g: t for g, (_, t) in self.rescored.items()}

    @property
    def exact_test_accuracy(self) -> float | None:
        return self.rescored.get(self.exact_genome, (None, None))[1]


def new_run_id(config: SearchConfig) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{config.mode}-b{config.budget}-p{config.pop_size}-s{config.seed}-{stamp}"


RETIRED_SETTINGS = ("rescore_floor_pp",)  # replaced by the accuracy floor


def known_settings(saved: dict) -> dict:
    """A saved search configuration without the settings this version no longer has."""
    return {k: v for k, v in saved.items() if k not in RETIRED_SETTINGS}


def load_run_config(run_dir: Path) -> SearchConfig:
    path = run_dir / "config.json"
    if not path.is_file():
        raise UserError(f"--resume: {path} not found (no such run)")
    try:
        saved = json.loads(path.read_text())["search"]
        return SearchConfig(**known_settings(saved))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"--resume: {path} is not a run configuration ({exc})") from None


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


def check_saved_run(run_dir: Path, ctx: "Context", config: SearchConfig, flag: str) -> None:
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
    now = json.loads(json.dumps(ctx.evaluator.description))
    if saved_evaluator != now:
        raise UserError(f"{flag}: {run_dir} was run with another evaluator; changed: "
                        f"{describe_changes(saved_evaluator, now)}; start a new run instead")


def check_image_counts(data, search_images: int, test_images: int | None) -> None:
    """--search-images and --test-images against what the data holds, before any search."""
    from surrogate_nas.data import validation_size

    n_val, n_test = validation_size(len(data.y_train)), len(data.y_test)
    if not 1 <= search_images <= n_val:
        raise UserError(f"--search-images: must be between 1 and {n_val} (the validation split of "
                        f"{data.source}), got {search_images}")
    if test_images is not None and not 1 <= test_images <= n_test:
        raise UserError(f"--test-images: must be between 1 and {n_test} (the test split of {data.source}), "
                        f"got {test_images}")


class Context:
    """What a run needs loaded once: catalog, data, model, evaluators, cache."""

    def __init__(self, paths, search_images: int, test_images: int | None, seed: int = 0, quiet: bool = False,
                 compensation: str = "auto", approximate: str = "conv", workers: int = 1,
                 dask_scheduler: str | None = None):
        from surrogate_nas.cache import EvalCache, default_cache_file
        from surrogate_nas.session import ensure_card, ensure_model, load_catalog_from, load_data_from

        self.paths = paths
        self.quiet = quiet
        self.catalog = load_catalog_from(paths, compensation)
        self.model_path = ensure_model(paths)
        self.data = load_data_from(paths)
        check_image_counts(self.data, search_images, test_images)
        ensure_card(self.model_path, self.data)
        self.compensation = compensation
        self.approximate = approximate
        self.rule_store = Path(paths.cache)
        self.evaluator = self._evaluator("validation", search_images, seed)
        self._rescore_args = {"validation": (None, seed), "test": (test_images, seed)}
        self._rescore_evaluators: dict = {}
        self.cache = EvalCache(default_cache_file(Path(paths.cache)))
        self.cache.register_fingerprint(self.evaluator.fingerprint, self.evaluator.description)
        self.exact_index = self.catalog.index(self.catalog.exact.name)
        self.pool = self._pool(workers, dask_scheduler, seed)

    def _pool(self, workers: int, scheduler: str | None, seed: int):
        from surrogate_nas.parallel import EvaluatorSpec, InProcess, JoblibWorkers, threads_per_worker

        if workers < 1:
            raise UserError(f"--workers: must be >= 1, got {workers}")
        if workers == 1 and not scheduler:
            return InProcess(self.evaluator)
        ev = self.evaluator
        spec = EvaluatorSpec(self.paths, "validation", ev.n_images, seed, self.compensation, self.approximate,
                             ev.fingerprint, 0 if scheduler else threads_per_worker(workers))
        return JoblibWorkers(spec, workers, scheduler)

    def close(self) -> None:
        self.pool.close()

    def score_many(self, genomes, stop_floor: float | None) -> list:
        """Outcomes of `genomes` on the search set, on this context's workers, stopping each
        once it is shown below `stop_floor` (None: every image)."""
        from surrogate_nas.early_stop import StoppingRule, score_genomes
        from surrogate_nas.evaluate import CHUNK

        return score_genomes(genomes, self.pool, self.evaluator.n_images, StoppingRule(stop_floor), CHUNK)

    def truth(self, run_id: str, budget: int, floor: float, early_stop: bool = True, on_new=None) -> TrueEvaluations:
        """The budgeted true evaluations of one run on this context's search set."""
        stop_floor = floor if early_stop else None
        return TrueEvaluations(lambda genomes: self.score_many(genomes, stop_floor), self.evaluator.energy_model,
                               self.cache, self.evaluator.fingerprint, run_id, budget, self.evaluator.n_images,
                               on_new, floor=floor, stop_floor=stop_floor, group=self.pool.workers)

    def accuracy_floor(self, config: SearchConfig, run_id: str) -> tuple[float, str]:
        """The configured floor, or all-exact search-set accuracy minus 15 pp (and why)."""
        from surrogate_nas.early_stop import FLOOR_BELOW_EXACT

        if config.accuracy_floor is not None:
            return float(config.accuracy_floor), "--accuracy-floor"
        exact = (self.exact_index,) * len(self.evaluator.layers)
        fp = self.evaluator.fingerprint
        record = self.cache.get(fp, exact)
        if record is None or not record.answers(None):
            (o,) = self.score_many([exact], None)
            record = self.cache.put(fp, exact, o.accuracy, self.evaluator.energy(exact), o.n_images, o.seconds, run_id)
        accuracy = record.accuracy
        return max(0.0, accuracy - FLOOR_BELOW_EXACT), (f"all-exact search-set accuracy {accuracy:.4f} - "
                                                        f"{FLOOR_BELOW_EXACT * 100:g} pp")

    @classmethod
    def create(cls, model=None, data=None, catalog=None, cache=None, search_images: int = 2000,
               test_images: int | None = None, compensation: str = "auto", approximate: str = "conv",
               quiet: bool = True, seed: int = 0, workers: int = 1, dask_scheduler: str | None = None) -> "Context":
        """The Python API's entry point: what `run` loads, from paths given here (None: from
        the environment or surrogate_nas.toml, as the CLI does). A model without a card
        is calibrated first."""
        from surrogate_nas.compensation import check_method
        from surrogate_nas.config import resolve_paths
        from surrogate_nas.model import check_approximate

        check_method(compensation, "compensation")
        check_approximate(approximate, "approximate")
        paths = resolve_paths(multipliers=catalog, data=data, cache=cache, model=model)
        return cls(paths, search_images, test_images, seed=seed, quiet=quiet, compensation=compensation,
                   approximate=approximate, workers=workers, dask_scheduler=dask_scheduler)

    def search(self, budget: int = 300, mode: str = "surrogate", out="experiments/runs", run_id: str | None = None,
               **settings) -> "RunResult":
        """`run`: NSGA-II (surrogate-assisted by default) with this context's images,
        compensation and layers; `settings` are further `SearchConfig` fields (pop_size,
        seed, ...). Returns the RunResult (its `front`, `rescored`, `run_dir`)."""
        search_images, test_images = len(self.evaluator.image_set.labels), self._rescore_args["test"][0]
        config = SearchConfig(mode=mode, budget=budget, search_images=search_images, test_images=test_images,
                              compensation=self.compensation, approximate=self.approximate, **settings)
        return execute(self, config, Path(out), run_id=run_id)

    def _evaluator(self, split: str, n_images: int | None, seed: int):
        from surrogate_nas.evaluate import Evaluator

        return Evaluator.from_paths(self.model_path, self.catalog, self.data, split, n_images, seed,
                                    compensation=self.compensation, rule_store=self.rule_store, quiet=self.quiet,
                                    approximate=self.approximate)

    def rescore_evaluator(self, split: str):
        """Evaluator of the final re-scoring: all validation images, or the test set."""
        if split not in self._rescore_evaluators:
            ev = self._evaluator(split, *self._rescore_args[split])
            self.cache.register_fingerprint(ev.fingerprint, ev.description)
            self._rescore_evaluators[split] = ev
        return self._rescore_evaluators[split]

    @property
    def test_evaluator(self):
        return self.rescore_evaluator("test")

    def methods(self, genome) -> list[str]:
        return self.evaluator.design_labels(genome)

    def test_accuracy(self, genome, run_id: str) -> float:
        return self.rescored_accuracy("test", genome, run_id)

    def rescored_accuracy(self, split: str, genome, run_id: str) -> float:
        """Accuracy on the re-scoring images of `split`, through the same cache (own fingerprint)."""
        ev = self.rescore_evaluator(split)
        key = tuple(int(g) for g in genome)
        record = self.cache.get(ev.fingerprint, key)
        if record is not None:
            return record.accuracy
        s = ev.score(key)
        self.cache.put(ev.fingerprint, key, s.accuracy, s.energy, s.n_images, s.seconds, run_id)
        return s.accuracy


def execute(ctx: Context, config: SearchConfig, out_dir: Path, run_id: str | None = None, resume: bool = False,
            resume_flag: str | None = None) -> RunResult:
    """`resume`: continue the run folder if it exists, provided its saved settings and
    evaluator equal these (`resume_flag` names the flag or command in the refusal)."""
    config.validate()
    if config.approximate != getattr(ctx, "approximate", "conv"):
        raise ValueError(f"config.approximate {config.approximate!r} but the context approximates {ctx.approximate!r}")
    run_id = run_id or new_run_id(config)
    run_dir = out_dir / run_id
    if run_dir.exists() and not resume and (run_dir / "config.json").exists():
        raise UserError(f"--run-id {run_id}: {run_dir} already exists (use --resume {run_id} to continue it)")
    if resume and (run_dir / "config.json").exists():
        check_saved_run(run_dir, ctx, config, resume_flag or f"--resume {run_id}")
    run_dir.mkdir(parents=True, exist_ok=True)
    floor, floor_source = ctx.accuracy_floor(config, run_id)
    _write_config(run_dir, ctx, config, run_id, floor, floor_source)

    energy = ctx.evaluator.energy_model
    hv_history: list[tuple[int, float]] = []
    bar = tqdm(total=config.budget, desc=f"{config.mode} {run_id}", unit="eval", disable=ctx.quiet or None, dynamic_ncols=True)
    front_points: list[list[float]] = []

    def on_new(evaluation):
        front_points.append(evaluation.objectives)
        hv_history.append((truth.used, hypervolume(np.array(front_points), truth.reference)))
        bar.update(1)
        bar.set_postfix(hits=truth.cache_hits, hv=f"{hv_history[-1][1]:.4f}", gen=evaluation.generation)

    truth = ctx.truth(run_id, config.budget, floor, config.early_stop, on_new)
    start = time.time()
    surrogate_log: list = []

    done = {"generations": 0}

    def on_generation(generation: int):
        done["generations"] = generation
        _write_progress(run_dir, ctx, truth, generation)

    try:
        if config.mode == "full":
            generations = run_full(config, truth, len(ctx.catalog), ctx.exact_index, energy.batch, on_generation,
                                   n_layers=len(ctx.evaluator.layers), powers=ctx.catalog.powers)
        else:
            from surrogate_nas.surrogate_search import run_surrogate

            generations = run_surrogate(config, truth, ctx, energy, surrogate_log, on_generation, run_dir)
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted: {truth.used} evaluations are saved in the cache; continue with "
              f"`python -m surrogate_nas run --resume {run_id} --out {out_dir}`")
        raise
    finally:
        bar.close()
        _write_progress(run_dir, ctx, truth, done["generations"])
    seconds = time.time() - start

    front = truth.front()
    exact = (ctx.exact_index,) * len(ctx.evaluator.layers)
    rescored: dict = {}
    rescore_start = time.time()
    if config.evaluate_test:
        for genome in tqdm(rescore_genomes(front, exact, None if config.rescore == "all" else floor),
                           desc="re-scoring the front",
                           disable=ctx.quiet or None):
            rescored[genome] = (ctx.rescored_accuracy("validation", genome, run_id),
                                ctx.rescored_accuracy("test", genome, run_id))
    result = RunResult(run_id, run_dir, front, list(truth.archive.values()), hv_history, rescored, exact,
                       seconds, truth.cache_hits, truth.computed, generations, surrogate_log, floor,
                       sum(e.stopped for e in truth.archive.values()), time.time() - rescore_start)
    write_outputs(result, ctx, config)
    if config.finetune_top and rescored:
        finetune_best(ctx, run_dir, config.finetune_top)
    return result


def finetune_best(ctx: Context, run_dir: Path, k: int) -> None:
    """`run --finetune-top K`: fine-tune the K tightest validation-chosen points (0.5, 1, 2,
    5 pp, ...) and add the after-fine-tuning choices to summary.json."""
    from surrogate_nas.finetune import finetune_run, format_results

    tolerances = [0.5, 1.0, 2.0, 5.0, 10.0][:k]
    results, summary = finetune_run(ctx.paths, run_dir, run_dir / "finetune", tolerances=tolerances, quiet=ctx.quiet,
                                    test_images=ctx._rescore_args["test"][0])
    doc = json.loads((run_dir / "summary.json").read_text())
    doc["after_finetuning"] = summary
    (run_dir / "summary.json").write_text(json.dumps(doc, indent=2) + "\n")
    if not ctx.quiet:
        print(format_results(results, summary))


def rescore_genomes(front, exact, floor: float | None) -> list[tuple[int, ...]]:
    """All-exact, then the front points at or above the accuracy floor on the search set
    (None: every front point). Points below are of no use to anyone, and re-scoring one
    costs ~7 search-set evaluations."""
    return [tuple(exact)] + [e.genome for e in front
                             if e.genome != tuple(exact) and (floor is None or e.accuracy >= floor)]


def early_stopping_description(enabled: bool, floor: float) -> dict | str:
    from surrogate_nas.early_stop import CONFIDENCE, LOOKS

    if not enabled:
        return "off"
    return {"floor": floor, "looks_after_images": list(LOOKS), "confidence": CONFIDENCE,
            "bound": "one-sided Clopper-Pearson, Bonferroni over the looks"}


def _write_config(run_dir: Path, ctx: Context, config: SearchConfig, run_id: str, floor: float,
                  floor_source: str) -> None:
    import pymoo
    import sklearn
    import tensorflow as tf

    from surrogate_nas import __version__

    doc = {
        "run_id": run_id,
        "search": config.as_dict(),
        "fingerprint": ctx.evaluator.fingerprint,
        "evaluator": ctx.evaluator.description,
        "model": str(ctx.model_path),
        "layers": [{"name": i.name, "kind": i.kind, "macs": i.macs} for i in ctx.evaluator.infos],
        "catalog": str(ctx.catalog.path),
        "catalog_names": ctx.catalog.names,
        "data": ctx.data.source,
        "accuracy_floor": {"value": floor, "from": floor_source},
        "hv_reference": {"accuracy": floor, "energy": 1.0},
        "rescore": {"validation_images": "all", "test_images": config.test_images or "all",
                    "points": "all front points" if config.rescore == "all" else "front points at or above the floor"},
        "early_stopping": early_stopping_description(config.early_stop, floor),
        "versions": {
            "surrogate_nas": __version__,
            "tensorflow": tf.__version__,
            "pymoo": pymoo.__version__,
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    (run_dir / "config.json").write_text(json.dumps(doc, indent=2) + "\n")


def _write_progress(run_dir: Path, ctx: Context, truth: TrueEvaluations, generation: int | None) -> None:
    from surrogate_nas.report import write_evaluations_csv

    write_evaluations_csv(run_dir / "evaluations.csv", list(truth.archive.values()), ctx.catalog, ctx.methods,
                          ctx.evaluator.infos)
    state = {"generations_done": generation, "evaluations": truth.used, "budget": truth.budget,
             "computed": truth.computed, "cache_hits": truth.cache_hits}
    (run_dir / "progress.json").write_text(json.dumps(state) + "\n")


def write_outputs(result: RunResult, ctx: Context, config: SearchConfig) -> None:
    from surrogate_nas.report import (
        plot_front,
        plot_hv,
        write_evaluations_csv,
        write_front_csv,
        write_report,
        write_rescored_csv,
    )
    from surrogate_nas.summary import format_summary, summarize

    d = result.run_dir
    catalog = ctx.catalog
    methods = ctx.methods
    layers = ctx.evaluator.infos
    write_evaluations_csv(d / "evaluations.csv", result.evaluations, catalog, methods, layers)
    write_front_csv(d / "front.csv", result.front, catalog, result.rescored, result.exact_genome, methods, layers)
    header = (
        f"run {result.run_id}: mode {config.mode}, budget {config.budget}, pop {config.pop_size}, "
        f"generations {result.generations}, {len(result.evaluations)} true evaluations "
        f"({result.computed} computed, {result.cache_hits} from cache, {result.stopped} stopped early below the "
        f"accuracy floor {result.floor:.4f}), search {result.seconds:.0f} s, re-scoring {result.rescore_seconds:.0f} s; "
        f"search set {len(ctx.evaluator.image_set.labels)} validation images"
    )
    if result.rescored:
        val, test = result.rescored[result.exact_genome]
        header += f"; all-exact validation accuracy {val:.4f}, test accuracy {test:.4f}"
    write_report(d / "report.txt", result.front, catalog, header, result.rescored, methods, layers)
    plot_front(d / "front.png", result.evaluations, result.front, result.exact_genome,
               f"{config.mode} NSGA-II ({config.compensation} compensation), {result.run_id}")
    plot_hv(d / "hv.png", {config.mode: result.hv_history}, result.hv_reference, f"hypervolume, {result.run_id}")
    if result.surrogate_log:
        from surrogate_nas.surrogate_search import plot_predictions, write_surrogate_log

        write_surrogate_log(d, result.surrogate_log)
        plot_predictions(d / "surrogate.png", result.surrogate_log)
    if result.rescored:
        write_rescored_csv(d / "rescored.csv", result.rescored, [e.genome for e in result.front], result.exact_genome,
                           catalog, ctx.evaluator.energy, methods, layers)
        summary = summarize(d)
        if not ctx.quiet:
            print(format_summary(summary))
