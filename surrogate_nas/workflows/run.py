"""One search run end to end: set up evaluator and cache, search, write the run folder,
re-score the front on the test set."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from surrogate_nas.errors import UserError
from surrogate_nas.genome import genome_from_key
from surrogate_nas.results.run_folder import RunFolder
from surrogate_nas.results.tables import write_surrogate_log
from surrogate_nas.search.config import SearchConfig
from surrogate_nas.search.distinct import CircuitLimit
from surrogate_nas.search.nsga2 import run_full
from surrogate_nas.search.pareto import HVHistory, hv_reference
from surrogate_nas.workflows.context import Context, build_features
from surrogate_nas.workflows.run_folder import (
    _write_config,
    _write_progress,
    check_saved_run,
    evaluations_of,
    new_run_id,
    write_pending_record,
)


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    front: list
    evaluations: list
    hv_history: list[tuple[int, float]]
    rescored: dict  # genome -> (validation accuracy, test accuracy or None where test was not scored)
    exact_genome: tuple[int, ...]
    seconds: float
    cache_hits: int
    computed: int
    generations: int
    surrogate_log: list
    floor: float = 0.70  # the accuracy floor of the run
    stopped: int = 0  # evaluations stopped early below the floor or by racing
    rescore_seconds: float = 0.0
    rescored_bits: dict = field(default_factory=dict)  # (genome, split) -> (n_images, packed per-image bits)
    raced: dict = field(default_factory=dict)  # genome -> the cheaper front point it lost to on validation

    @property
    def hv_reference(self) -> tuple[float, float]:
        from surrogate_nas.search.pareto import hv_reference

        return hv_reference(self.floor)

    def chosen(self, tolerance_pp: float) -> dict | None:
        """The cheapest re-scored front point within `tolerance_pp` of all-exact on
        validation, with its test loss (the rule of `summarize`); None without re-scoring."""
        from surrogate_nas.results.summary import choose_within

        if self.exact_genome not in self.rescored:
            return None
        points = [{"genome": e.genome, "energy": e.energy, "validation_accuracy": self.rescored[e.genome][0],
                   "test_accuracy": self.rescored[e.genome][1]} for e in self.front if e.genome in self.rescored]
        val, test = self.rescored[self.exact_genome]
        return choose_within(points, {"validation_accuracy": val, "test_accuracy": test}, tolerance_pp)

    @property
    def exact_test_accuracy(self) -> float | None:
        return self.rescored.get(self.exact_genome, (None, None))[1]


def execute(ctx: Context, config: SearchConfig, out_dir: Path, run_id: str | None = None, resume: bool = False,
            resume_flag: str | None = None) -> RunResult:
    """`resume`: continue the run folder if it exists, provided its saved settings and
    evaluator equal these (`resume_flag` names the flag or command in the refusal)."""
    config.validate()
    check_max_distinct(ctx, config)
    if config.approximate != getattr(ctx, "approximate", "conv"):
        raise ValueError(f"config.approximate {config.approximate!r} but the context approximates {ctx.approximate!r}")
    run_id = run_id or new_run_id(config)
    run_dir = out_dir / run_id
    if run_dir.exists() and not resume and (run_dir / "config.json").exists():
        raise UserError(f"--run-id {run_id}: {run_dir} already exists (use --resume {run_id} to continue it)")
    if resume and (run_dir / "config.json").exists():
        check_saved_run(run_dir, ctx, config, resume_flag or f"--resume {run_id}")
        if (run_dir / "evaluations.csv").exists():  # the folder is the record: a lost or moved cache costs nothing
            fp, _, records = evaluations_of(run_dir)
            if fp == ctx.evaluator.fingerprint:
                ctx.cache.merge(records)
    else:
        write_pending_record(run_dir, config, run_id, ctx.paths, ctx.model_path)
    floor, floor_source = ctx.accuracy_floor(config, run_id)
    _write_config(run_dir, ctx, config, run_id, floor, floor_source)

    energy = ctx.evaluator.energy_model
    limit = CircuitLimit.of(config.max_distinct, ctx.catalog, [i.macs for i in ctx.evaluator.infos])  # checked above
    history = HVHistory(hv_reference(floor))
    hv_history = history.values
    bar = tqdm(total=config.budget, desc=f"{config.mode} {run_id}", unit="eval", disable=ctx.quiet or None, dynamic_ncols=True)

    def on_new(evaluation):
        hv = history.add(evaluation.objectives, truth.used)
        bar.update(1)
        bar.set_postfix(hits=truth.cache_hits, hv=f"{hv:.4f}", gen=evaluation.generation)

    truth = ctx.truth(run_id, config, floor, on_new)
    start = time.time()
    surrogate_log: list = []

    done = {"generations": 0}

    def on_generation(generation: int, log: list | None = None):
        done["generations"] = generation
        _write_progress(run_dir, ctx, truth, generation)
        if log:
            write_surrogate_log(run_dir, log)

    try:
        if config.mode == "full":
            generations = run_full(config, truth, len(ctx.catalog), ctx.exact_index, energy.batch, on_generation,
                                   n_layers=len(ctx.evaluator.layers), powers=ctx.catalog.powers, limit=limit)
        else:
            from surrogate_nas.search.surrogate_nsga2 import run_surrogate

            generations = run_surrogate(config, truth, build_features(ctx, energy), ctx.catalog.powers, ctx.exact_index,
                                        energy, surrogate_log, on_generation,
                                        on_choice=(run_dir / "surrogate_choice.txt").write_text, limit=limit)
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
    bits: dict = {}
    lost: dict = {}
    rescore_start = time.time()
    if config.evaluate_test:
        rescored, bits, lost = rescore(ctx, run_id, front, exact, floor, config)
    result = RunResult(run_id, run_dir, front, list(truth.archive.values()), hv_history, rescored, exact,
                       seconds, truth.cache_hits, truth.computed, generations, surrogate_log, floor,
                       sum(e.stopped for e in truth.archive.values()), time.time() - rescore_start, bits, lost)
    write_outputs(result, ctx, config)
    if limit is not None:
        report_limit(run_dir, limit.k)
    if config.finetune_top and rescored:
        finetune_best(ctx, run_dir, config)
    return result


def check_max_distinct(ctx: Context, config: SearchConfig) -> None:
    """`--max-distinct K` against the model, before any search work: K from 1 to the
    number of approximable layers (more could never bind; a model load, not the evaluator)."""
    k = config.max_distinct
    if k is None:
        return
    from surrogate_nas.network.card import load_model
    from surrogate_nas.network.layers import approximable_layers

    n = len(approximable_layers(load_model(ctx.model_path), config.approximate))
    if not 1 <= k <= n:
        raise UserError(f"--max-distinct: must be between 1 and {n} (the approximable layers of "
                        f"{Path(ctx.model_path).name}), got {k}")


def distinct_limit(ctx: Context, config: SearchConfig):
    """The run's `CircuitLimit` (None without `--max-distinct`), checked against the model."""
    check_max_distinct(ctx, config)
    return CircuitLimit.of(config.max_distinct, ctx.catalog, [i.macs for i in ctx.evaluator.infos])


def report_limit(run_dir: Path, k: int) -> None:
    """Say the limit in report.txt's header and summary.json (`max_distinct`)."""
    report = run_dir / "report.txt"
    header, _, rest = report.read_text().partition("\n")
    report.write_text(f"{header}; every design uses at most {k} distinct circuit{'s' * (k > 1)} "
                      f"(--max-distinct {k})\n{rest}")
    folder = RunFolder(run_dir)
    if (run_dir / "summary.json").is_file():
        doc = folder.summary()
        doc["max_distinct"] = k
        folder.write_summary(doc)


def run_search(ctx: Context, budget: int = 300, mode: str = "surrogate", out="experiments/runs", run_id: str | None = None,
           **settings) -> RunResult:
    """`run` from Python: NSGA-II (surrogate-assisted by default) with the context's images,
    compensation and layers; `settings` are further `SearchConfig` fields (pop_size,
    seed, ...). Returns the RunResult (its `front`, `rescored`, `run_dir`)."""
    search_images, test_images = len(ctx.evaluator.image_set.labels), ctx.test_images
    config = SearchConfig(mode=mode, budget=budget, search_images=search_images, test_images=test_images,
                          compensation=ctx.compensation, approximate=ctx.approximate, **settings)
    return execute(ctx, config, Path(out), run_id=run_id)


def finetune_best(ctx: Context, run_dir: Path, config: SearchConfig) -> None:
    """`run --finetune-top K`: retrain the points `--finetune-points` names (the first K
    tolerances' validation choices, or the K highest-saving bands' most accurate points)
    and add the after-retraining choices to summary.json."""
    from surrogate_nas.network.retraining import RECIPES
    from surrogate_nas.search.config import parse_points
    from surrogate_nas.workflows.finetune import finetune_run, format_results

    tolerances, band = parse_points(config.finetune_points, "--finetune-points")
    recipe = None if config.finetune_recipe is None else RECIPES[config.finetune_recipe]
    results, summary = finetune_run(ctx.paths, run_dir, run_dir / "finetune", tolerances=tolerances[:config.finetune_top],
                                    quiet=ctx.quiet, test_images=ctx.test_images, ctx=ctx, band=band,
                                    max_points=config.finetune_top, recipe=recipe)
    folder = RunFolder(run_dir)
    doc = folder.summary()
    doc["after_finetuning"] = summary
    folder.write_summary(doc)
    if not ctx.quiet:
        print(format_results(results, summary))


VALIDATION_LOOKS = (0.2, 0.4, 0.6, 0.8)  # fractions of the validation images where re-scoring races


def rescore(ctx: Context, run_id: str, front, exact, floor: float, config: SearchConfig) -> tuple[dict, dict, dict]:
    """Re-score the front as `config.rescore` says. "floor": all-exact and the front points
    at or above the floor on validation, cheapest first, each raced against the cheaper
    points already scored (paired sign test at `early_stop_confidence` over
    VALIDATION_LOOKS): one shown worse than a cheaper point cannot be what a summary
    chooses, so it is stopped; then test for all-exact and the points the summary's rules
    choose on validation. A test score of the others would be read by no one, and the test
    split is twice the validation split. "all": every front point on both, in full.
    Returns (genome -> (validation, test) accuracy, None where not scored),
    ((genome, split) -> (n_images, packed bits)) and (genome -> the cheaper point it lost to)."""
    from surrogate_nas.evaluation.early_stop import StoppingRule
    from surrogate_nas.results.summary import paired_loss, validation_choices

    test_all = config.rescore == "all"
    genomes = rescore_genomes(front, exact, None if test_all else floor)
    energy = ctx.evaluator.energy
    n_validation = ctx.rescore_evaluator("validation").n_images
    rule = StoppingRule(None, config.early_stop_confidence, tuple(int(f * n_validation) for f in VALIDATION_LOOKS),
                        race=True)
    validation, lost = {exact: ctx.cached_record("validation", exact, run_id)}, {}
    rights = {}  # genome -> per validation image right? (unpacked once)
    for g in tqdm(sorted(genomes[1:], key=energy), desc="re-scoring on validation", disable=ctx.quiet or None):
        if test_all:
            validation[g] = ctx.cached_record("validation", g, run_id)
            continue
        rivals = [(h, rights[h]) for h in validation if h != exact and energy(h) <= energy(g)]
        record = ctx.raced_record("validation", g, run_id, rivals, rule)
        if record.dominated_by is None:
            validation[g], rights[g] = record, record.correct()
        else:
            lost[g] = genome_from_key(record.dominated_by)
    tested = [g for g in genomes if g in validation]
    if not test_all:
        rights[exact] = validation[exact].correct()
        rights = {g: r for g, r in rights.items() if r is not None}

        def interval(g):
            return paired_loss(rights[exact], rights[g]) if exact in rights and g in rights else None

        points = [{"genome": g, "energy": energy(g), "validation_accuracy": validation[g].accuracy,
                   "intervals": {"validation": interval(g)}} for g in tested[1:]]
        tested = [exact] + [g for g in validation_choices(points, {"validation_accuracy": validation[exact].accuracy})
                            if g != exact]
    test = {g: ctx.cached_record("test", g, run_id)
            for g in tqdm(tested, desc="scoring the chosen points on test", disable=ctx.quiet or None)}
    rescored = {g: (validation[g].accuracy if g in validation else None, test[g].accuracy if g in test else None)
                for g in genomes}
    bits = {(g, split): (r.n_images, r.correct_bits) for split, records in (("validation", validation), ("test", test))
            for g, r in records.items() if r.correct_bits is not None}
    return rescored, bits, lost


def rescore_genomes(front, exact, floor: float | None) -> list[tuple[int, ...]]:
    """All-exact, then the front points at or above the accuracy floor on the search set
    (None: every front point). Points below are of no use to anyone, and re-scoring one
    costs ~7 search-set evaluations."""
    return [tuple(exact)] + [e.genome for e in front
                             if e.genome != tuple(exact) and (floor is None or e.accuracy >= floor)]


def write_outputs(result: RunResult, ctx: Context, config: SearchConfig) -> None:
    from surrogate_nas.results.plots import plot_front, plot_hv
    from surrogate_nas.results.report_html import write_run_report
    from surrogate_nas.results.summary import format_summary, summarize
    from surrogate_nas.results.tables import (
        write_evaluations_csv,
        write_front_csv,
        write_report,
        write_rescored_csv,
    )

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
        f"accuracy floor {result.floor:.4f} or by racing), search {result.seconds:.0f} s, re-scoring {result.rescore_seconds:.0f} s; "
        f"search set {len(ctx.evaluator.image_set.labels)} validation images"
    )
    if result.rescored:
        val, test = result.rescored[result.exact_genome]
        header += f"; all-exact validation accuracy {val:.4f}, test accuracy {test:.4f}"
    write_report(d / "report.txt", result.front, catalog, header, result.rescored, methods, layers, result.raced)
    plot_front(d / "front.png", result.evaluations, result.front, result.exact_genome,
               f"{config.mode} NSGA-II ({config.compensation} compensation), {result.run_id}")
    plot_hv(d / "hv.png", {config.mode: result.hv_history}, result.hv_reference, f"hypervolume, {result.run_id}")
    if result.surrogate_log:
        from surrogate_nas.results.plots import plot_predictions

        write_surrogate_log(d, result.surrogate_log)
        plot_predictions(d / "surrogate.png", result.surrogate_log)
    if result.rescored:
        write_rescored_csv(d / "rescored.csv", result.rescored, [e.genome for e in result.front], result.exact_genome,
                           catalog, ctx.evaluator.energy, methods, layers, result.raced)
        RunFolder(d).write_rescored_bits([(genome, split, n, bits) for (genome, split), (n, bits)
                                          in result.rescored_bits.items()])
        summary = summarize(d)
        if not ctx.quiet:
            print(format_summary(summary))
    report = write_run_report(d)  # after summary.json: the page shows its choices (without re-scoring: what exists)
    if not ctx.quiet:
        print(f"report: {report}")
