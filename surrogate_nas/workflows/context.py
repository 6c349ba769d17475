"""The `Context`: the one builder of an evaluation (catalog, data, model, card, evaluator,
cache, workers) from paths, shared by run, evaluate, finetune, export and compare."""

from __future__ import annotations

import sys
from pathlib import Path

from surrogate_nas.errors import UserError
from surrogate_nas.search.config import SearchConfig
from surrogate_nas.search.surrogate import GenomeFeatures
from surrogate_nas.search.truth import TrueEvaluations


def build_features(ctx, energy) -> GenomeFeatures:
    stats = ctx.evaluator.layer_statistics()
    noise = ctx.evaluator.designs.residual_noise(stats["taps"], stats["output_std"])
    return GenomeFeatures(ctx.catalog, [i.macs for i in ctx.evaluator.infos], energy, noise)


def check_image_counts(data, search_images: int | None, test_images: int | None) -> None:
    """--search-images and --test-images against what the data holds, before any search
    (None: all of the split)."""
    from surrogate_nas.data.splits import validation_size

    n_val, n_test = validation_size(len(data.y_train)), len(data.y_test)
    if search_images is not None and not 1 <= search_images <= n_val:
        raise UserError(f"--search-images: must be between 1 and {n_val} (the validation split of "
                        f"{data.source}), got {search_images}")
    if test_images is not None and not 1 <= test_images <= n_test:
        raise UserError(f"--test-images: must be between 1 and {n_test} (the test split of {data.source}), "
                        f"got {test_images}")


def run_paths(run_dir: Path, paths):
    """`paths` with model, catalog and data taken from a run's record, except those a flag
    or environment variable gave (a config file's defaults do not override a record)."""
    from dataclasses import replace

    from surrogate_nas.config import from_record, project_root
    from surrogate_nas.workflows.run_folder import recorded_paths

    recorded = recorded_paths(run_dir)
    root = project_root(paths)
    chosen = {}
    for key in ("model", "multipliers", "data"):
        if (getattr(paths, key) is None or key in paths.from_config_file) and recorded.get(key) \
                and from_record(recorded[key], root).exists():
            chosen[key] = from_record(recorded[key], root)
    return replace(paths, **chosen, from_config_file=paths.from_config_file - set(chosen)) if chosen else paths


def run_catalog(run_dir: Path, paths):
    """A run's catalog as it searched it (its designs for `--compensation search`),
    without loading model or data."""
    from surrogate_nas.evaluation.inputs import load_catalog_from
    from surrogate_nas.workflows.run_folder import load_run_config

    return load_catalog_from(run_paths(run_dir, paths), load_run_config(run_dir, "RUN_DIR").compensation)


class Context:
    """What a run needs loaded once: catalog, data, model (with its card), evaluators,
    cache and workers. Everything that scores a genome (run, evaluate, finetune, export,
    compare, study) builds its evaluators here, so they agree on model, images,
    calibration and compensation. Evaluators and workers are built on first use."""

    def __init__(self, paths, search_images: int | None, test_images: int | None, seed: int = 0, quiet: bool = False,
                 compensation: str = "auto", approximate: str = "conv", workers: int = 1,
                 dask_scheduler: str | None = None, rule_images: int | None = None, prune_k: int | None = None):
        from surrogate_nas.evaluation.inputs import (
            ensure_card,
            ensure_model,
            load_catalog_from,
            load_data_from,
        )

        if workers < 1:
            raise UserError(f"--workers: must be >= 1, got {workers}")
        self.paths = paths
        self.quiet = quiet
        self.catalog = load_catalog_from(paths, compensation)
        self.model_path = ensure_model(paths)
        self.data = load_data_from(paths)
        check_image_counts(self.data, search_images, test_images)
        ensure_card(self.model_path, self.data, stream=sys.stderr if quiet else None)
        self.compensation = compensation
        self.approximate = approximate
        self.rule_store = Path(paths.cache)
        self.rule_images = rule_images
        self.prune_k = prune_k
        self.search_images, self.test_images, self.seed = search_images, test_images, seed
        self._rescore_args = {"validation": (None, seed), "test": (test_images, seed)}
        self._rescore_evaluators: dict = {}
        self._evaluator_cache = None
        self._workers = (workers, dask_scheduler)
        self._pool_cache = None
        self._cache = None
        self.exact_index = self.catalog.exact_index

    @property
    def cache(self):
        """The evaluation database (opened on first use: `evaluate` never touches it)."""
        from surrogate_nas.evaluation.cache import EvalCache, default_cache_file

        if self._cache is None:
            self._cache = EvalCache(default_cache_file(Path(self.paths.cache)))
        return self._cache

    @property
    def evaluator(self):
        """The search-set evaluator (built, and its auto rule run, on first use)."""
        if self._evaluator_cache is None:
            self._evaluator_cache = self.build_evaluator("validation", self.search_images, self.seed)
            self.cache.register_fingerprint(self._evaluator_cache.fingerprint, self._evaluator_cache.description)
        return self._evaluator_cache

    @property
    def pool(self):
        """Where search-set evaluations run: in this process, or on workers."""
        if self._pool_cache is None:
            self._pool_cache = self._pool(*self._workers, self.seed)
        return self._pool_cache

    def _pool(self, workers: int, scheduler: str | None, seed: int):
        from surrogate_nas.evaluation.workers import (
            EvaluatorSpec,
            InProcess,
            JoblibWorkers,
            threads_per_worker,
        )

        if workers == 1 and not scheduler:
            return InProcess(self.evaluator)
        ev = self.evaluator
        spec = EvaluatorSpec(self.paths, "validation", ev.n_images, seed, self.compensation, self.approximate,
                             ev.fingerprint, 0 if scheduler else threads_per_worker(workers), self.rule_images,
                             self.prune_k)
        return JoblibWorkers(spec, workers, scheduler)

    def raced_record(self, split: str, genome, run_id: str, rivals, rule):
        """`genome` on `split` scored in stages and stopped once shown worse than one of
        `rivals` ([(genome, per image right?)]) as `rule` (a racing `StoppingRule`) says.
        A cached racing stop is reused only against a rival that is still among `rivals`."""
        from surrogate_nas.evaluation.early_stop import score_genomes
        from surrogate_nas.evaluation.evaluator import CHUNK
        from surrogate_nas.genome import genome_from_key

        ev = self.rescore_evaluator(split)
        key = tuple(int(g) for g in genome)
        record = self.cache.get(ev.fingerprint, key)
        if record is not None and record.correct_bits is not None and record.below_floor is None and (
                record.dominated_by is None or genome_from_key(record.dominated_by) in {r for r, _ in rivals}):
            return record
        (o,) = score_genomes([key], lambda tasks: [ev.correct(g, lo, hi) for g, lo, hi in tasks], ev.n_images, rule,
                             CHUNK, rivals=lambda _: rivals)
        return self.cache.put(ev.fingerprint, key, o.accuracy, ev.energy(key), o.n_images, o.seconds, run_id,
                              correct_bits=o.bits, dominated_by=o.dominated_by)

    def close(self) -> None:
        if self._pool_cache is not None:
            self._pool_cache.close()

    def score_many(self, genomes, rule=None, rivals=None) -> list:
        """Outcomes of `genomes` on the search set, on this context's workers, stopping each
        as `rule` (a `StoppingRule`) says (None: every image); `rivals`: what it races."""
        from surrogate_nas.evaluation.early_stop import StoppingRule, score_genomes
        from surrogate_nas.evaluation.evaluator import CHUNK

        return score_genomes(genomes, self.pool, self.evaluator.n_images, rule or StoppingRule(None), CHUNK, rivals)

    def truth(self, run_id: str, config: SearchConfig, floor: float, on_new=None, budget: int | None = None
              ) -> TrueEvaluations:
        """The budgeted true evaluations of one run on this context's search set, stopped
        early below `floor` (and by racing) as `config` says."""
        from surrogate_nas.evaluation.early_stop import StoppingRule

        stop_floor = floor if config.early_stop else None
        rule = StoppingRule(stop_floor, config.early_stop_confidence, config.early_stop_looks, race=config.race)
        truth = TrueEvaluations(lambda genomes: self.score_many(genomes, rule, truth.rivals if config.race else None),
                                self.evaluator.energy_model, self.cache, self.evaluator.fingerprint, run_id,
                                config.budget if budget is None else budget, self.evaluator.n_images, on_new,
                                floor=floor, stop_floor=stop_floor, group=self.pool.workers, race=config.race)
        return truth

    def accuracy_floor(self, config: SearchConfig, run_id: str) -> tuple[float, str]:
        """The configured floor, or all-exact search-set accuracy minus `floor_below_exact` (and why)."""
        if config.accuracy_floor is not None:
            return float(config.accuracy_floor), "--accuracy-floor"
        accuracy = self.cached_accuracy("search", (self.exact_index,) * len(self.evaluator.layers), run_id)
        below = config.floor_below_exact
        return max(0.0, accuracy - below), f"all-exact search-set accuracy {accuracy:.4f} - {below * 100:g} pp"

    @classmethod
    def from_run(cls, run_dir: Path, paths, quiet: bool = False, compensation: str | None = None, **workers
                 ) -> tuple["Context", SearchConfig]:
        """The context a run folder was made with, and its settings: model, catalog and data
        from its config.json, unless a flag or environment variable in `paths` names them
        (the config file's defaults do not override a run's record)."""
        from dataclasses import replace

        from surrogate_nas.workflows.run_folder import load_run_config

        config = load_run_config(run_dir, "RUN_DIR")
        if compensation is not None:
            config = replace(config, compensation=compensation)
        return cls.for_search(run_paths(run_dir, paths), config, quiet=quiet, **workers), config

    @classmethod
    def for_search(cls, paths, config: SearchConfig, quiet: bool = False, **workers) -> "Context":
        """The context of a search run: images, compensation, layers and rule as `config` says."""
        return cls(paths, config.search_images, config.test_images, seed=0, quiet=quiet,
                   compensation=config.compensation, approximate=config.approximate, rule_images=config.rule_images,
                   prune_k=config.prune_k,
                   **workers)

    @classmethod
    def create(cls, model=None, data=None, catalog=None, cache=None, search_images: int = 2000,
               test_images: int | None = None, compensation: str = "auto", approximate: str = "conv",
               quiet: bool = True, seed: int = 0, workers: int = 1, dask_scheduler: str | None = None) -> "Context":
        """The Python API's entry point: what `run` loads, from paths given here (None: from
        the environment or surrogate_nas.toml, as the CLI does). A model without a card
        is calibrated first."""
        from surrogate_nas.config import resolve_paths
        from surrogate_nas.genome import check_approximate
        from surrogate_nas.multipliers.compensation import check_method

        check_method(compensation, "compensation")
        check_approximate(approximate, "approximate")
        paths = resolve_paths(multipliers=catalog, data=data, cache=cache, model=model)
        return cls(paths, search_images, test_images, seed=seed, quiet=quiet, compensation=compensation,
                   approximate=approximate, workers=workers, dask_scheduler=dask_scheduler)

    def build_evaluator(self, split: str = "validation", n_images: int | None = None, seed: int = 0, rule_for=None):
        """A new evaluator of this context's model, catalog and compensation on `split`
        (`n_images` of it; None: all). Private to the caller: one to fine-tune, say.
        `rule_for`: the only genomes it will score (an `auto` rule not yet stored is then
        measured for their entries alone)."""
        from surrogate_nas.evaluation.evaluator import Evaluator

        return Evaluator.from_paths(self.model_path, self.catalog, self.data, split, n_images, seed,
                                    compensation=self.compensation, rule_store=self.rule_store, quiet=self.quiet,
                                    approximate=self.approximate, rule_images=self.rule_images,
                                    prune_k=self.prune_k, rule_for=rule_for)

    def rescore_evaluator(self, split: str):
        """Evaluator of the final re-scoring: all validation images, or the test set."""
        if split not in self._rescore_evaluators:
            ev = self.build_evaluator(split, *self._rescore_args[split])
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
        """Accuracy on the re-scoring images of `split` (all validation images, or test)."""
        return self.cached_accuracy(split, genome, run_id)

    def cached_accuracy(self, split: str, genome, run_id: str) -> float:
        """Complete accuracy of `genome` on "search" (the search set, on the workers),
        "validation" or "test", through the cache: the one get-score-put outside a search."""
        return self.cached_record(split, genome, run_id).accuracy

    def cached_record(self, split: str, genome, run_id: str):
        """The cache row of `genome`'s complete evaluation on `split` (see `cached_accuracy`),
        with its per-image bits (`Record.correct()`, in the evaluator's scoring order). A
        row made before bits were recorded is scored again; its bits are added when the
        new evaluation agrees with it."""
        from surrogate_nas.evaluation.bits import pack_correct
        from surrogate_nas.evaluation.early_stop import Outcome

        ev = self.evaluator if split == "search" else self.rescore_evaluator(split)
        key = tuple(int(g) for g in genome)
        record = self.cache.get(ev.fingerprint, key)
        if record is None or not record.answers(None) or record.correct_bits is None:
            if split == "search":
                (o,) = self.score_many([key])
            else:
                right, seconds = ev.correct(key)
                o = Outcome(int(right.sum()), len(right), seconds, bits=pack_correct(right))
            record = self.cache.put(ev.fingerprint, key, o.accuracy, ev.energy(key), o.n_images, o.seconds, run_id,
                                    correct_bits=o.bits)
            if record.correct_bits is None:
                print(f"warning: {split} accuracy of {key} in the cache ({record.accuracy}) differs from a new "
                      f"evaluation ({o.accuracy}); kept the cached one, without per-image records", file=sys.stderr)
        return record
