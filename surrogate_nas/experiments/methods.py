"""The methods `compare` runs: surrogate and full NSGA-II, full NSGA-II from the
surrogate's seed set, random search and Optuna, all through the same cache and budget."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from surrogate_nas.errors import UserError
from surrogate_nas.search.config import SearchConfig
from surrogate_nas.search.pareto import HVHistory, hv_reference
from surrogate_nas.search.truth import BudgetExhausted, TrueEvaluations

# "full-seeded": full mode started from surrogate mode's seed set (the seeding ablation);
# "optuna": Optuna's TPESampler; "optuna-gp": its GPSampler (Gaussian process, log EHVI)
METHODS = ("surrogate", "full", "full-seeded", "random", "optuna", "optuna-gp")


@dataclass
class MethodRun:
    method: str
    seed: int
    budget: int
    hv_history: list  # (evaluations, hv)
    front: list
    seconds: float
    cache_hits: int
    computed: int
    savings: dict | None = None  # "0.5pp" -> the validation-chosen point (summary.choose_within), re-scored runs only
    timing: str = "wall"  # what `seconds` is: "wall" (this call's) or "eval" (recorded evaluation seconds, summed)


PROGRESS_EVERY = 10  # a baseline's evaluations.csv is rewritten after this many evaluations


def run_name(tag: str, method: str, seed: int, budget: int) -> str:
    """The folder (and cache run id) of one run of a comparison, under `<out>/runs`."""
    return f"{tag}-{method}-b{budget}-s{seed}"


def _baseline_truth(ctx, method: str, seed: int, budget: int, tag: str, base: SearchConfig,
                    floor: float, out_dir: Path) -> tuple[TrueEvaluations, list, str]:
    """The true evaluations of a baseline run, with its HV history, as the NSGA-II modes
    have; its folder is kept as theirs is (`_baseline_folder`)."""
    run_id = run_name(tag, method, seed, budget)
    history = HVHistory(hv_reference(floor))
    write = _baseline_folder(ctx, out_dir / "runs" / run_id, run_id, replace(base, seed=seed, budget=budget), floor)

    def on_new(evaluation):
        history.add(evaluation.objectives, truth.used)
        if truth.used % PROGRESS_EVERY == 0:
            write(truth)

    truth = ctx.truth(run_id, base, floor, on_new, budget=budget)
    return truth, history.values, run_id


def _baseline_folder(ctx, run_dir: Path, run_id: str, config: SearchConfig, floor: float):
    """A baseline's folder as a run's: config.json first (a folder made with other settings or
    another evaluator is refused, not overwritten), its recorded evaluations put back into
    the cache (a lost or moved cache costs nothing), and a writer of its evaluations.csv."""
    from surrogate_nas.results.run_folder import RunFolder
    from surrogate_nas.results.tables import write_evaluations_csv
    from surrogate_nas.workflows.run_folder import check_saved_run, evaluations_of

    recorded = 0
    if (run_dir / RunFolder.CONFIG).is_file():
        check_saved_run(run_dir, ctx, config, f"compare: run {run_id}")
        if (run_dir / RunFolder.EVALUATIONS).is_file():
            rows = evaluations_of(run_dir)[2]
            ctx.cache.merge(rows)
            recorded = len(rows)
    RunFolder(run_dir).write_record({"run_id": run_id, "search": config.as_dict(), "fingerprint": ctx.evaluator.fingerprint,
                                     "evaluator": ctx.evaluator.description,
                                     "accuracy_floor": {"value": floor, "from": "compare: one floor for every run"}})

    def write(truth, final: bool = False):
        """Progress only once past what the folder holds: replaying a finished run through
        the cache (and a kill during it) leaves its record whole."""
        if final or truth.used > recorded:
            write_evaluations_csv(run_dir / RunFolder.EVALUATIONS, list(truth.archive.values()), ctx.catalog,
                                  ctx.methods, ctx.evaluator.infos)

    return write


def _finish_baseline(ctx, method: str, seed: int, budget: int, truth, history, run_id: str, out_dir: Path,
                     seconds: float, base: SearchConfig, floor: float) -> MethodRun:
    """Write the baseline's evaluations.csv in the NSGA-II modes' format and, unless
    --no-test, re-score its front as a default run does (rescored.csv, rescored_bits.csv)."""
    from surrogate_nas.results.run_folder import RunFolder
    from surrogate_nas.results.tables import write_evaluations_csv, write_rescored_csv
    from surrogate_nas.workflows.run import rescore

    run_dir = out_dir / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    write_evaluations_csv(run_dir / "evaluations.csv", list(truth.archive.values()), ctx.catalog, ctx.methods,
                          ctx.evaluator.infos)
    front = truth.front()
    if base.evaluate_test:
        exact = (ctx.exact_index,) * len(ctx.evaluator.layers)
        rescored, bits, lost = rescore(ctx, run_id, front, exact, floor, base)
        write_rescored_csv(run_dir / "rescored.csv", rescored, [e.genome for e in front], exact, ctx.catalog,
                           ctx.evaluator.energy, ctx.methods, ctx.evaluator.infos, lost)
        RunFolder(run_dir).write_rescored_bits([(g, split, n, b) for (g, split), (n, b) in bits.items()])
    return MethodRun(method, seed, budget, history, front, seconds, truth.cache_hits, truth.computed,
                     rescored_choices(run_dir) if base.evaluate_test else None)


def rescored_choices(run_dir: Path) -> dict:
    """Per tolerance of summary.TOLERANCES_PP ("0.5pp", ...): the point `summarize` chooses
    on validation from the run folder's rescored.csv (None: no point within it)."""
    from surrogate_nas.results.run_folder import RunFolder
    from surrogate_nas.results.summary import TOLERANCES_PP, choose_within

    rows = RunFolder(run_dir).rescored()
    exact = next(r for r in rows if r["role"] == "all-exact")
    front = [r for r in rows if r["role"] == "front"]
    return {f"{t:g}pp": choose_within(front, exact, t) for t in TOLERANCES_PP}


def run_random(ctx, seed: int, budget: int, tag: str, base: SearchConfig, floor: float, out_dir: Path) -> MethodRun:
    """Uniform random genomes (the all-exact genome first, as every method gets), each
    repaired to `--max-distinct` as NSGA-II's are, when it is given."""
    from surrogate_nas.workflows.run import distinct_limit

    limit = distinct_limit(ctx, base)
    truth, history, run_id = _baseline_truth(ctx, "random", seed, budget, tag, base, floor, out_dir)
    rng = np.random.default_rng(seed)
    start = time.time()
    n_layers = len(ctx.evaluator.layers)
    genomes = [(ctx.exact_index,) * n_layers] + [tuple(int(g) for g in rng.integers(0, len(ctx.catalog), n_layers))
                                                 for _ in range(50 * budget - 1)]
    if limit is not None:
        genomes = [limit.repair_one(g) for g in genomes]
    try:
        truth.evaluate(genomes, 0, "random")
    except BudgetExhausted:
        pass
    return _finish_baseline(ctx, "random", seed, budget, truth, history, run_id, out_dir, time.time() - start, base, floor)


def replay_recorded(truth, run_dir: Path, budget: int, reason: str) -> bool:
    """Feed a finished baseline run's genomes, in its recorded order, back through `truth`
    (from the cache) instead of asking its sampler again: Optuna's GPSampler spends minutes
    per hundred trials on its own model, every time a `compare` reads the run back. True
    when the folder's evaluations.csv holds the whole budget and every accuracy equals the
    cache's (so the sampler, seeing the same values, would have proposed the same genomes);
    False leaves `truth` partly filled, to be discarded."""
    import csv

    path = run_dir / "evaluations.csv"
    if not path.is_file():
        return False
    with open(path, newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: int(r["order"]))
    if len(rows) != budget:
        return False
    for row in rows:
        genome = tuple(int(v) for v in row["genome_indices"].split(","))
        if abs(truth.accuracy(genome, int(row["generation"]), reason) - float(row["accuracy"])) > 1e-6:
            return False
    return truth.used == budget


def optuna_sampler(method: str, seed: int):
    """TPE, or the Gaussian-process sampler (multi-objective: log expected hypervolume
    improvement; needs torch and scipy, the `gp` extra). Accuracy is a deterministic
    function of the genome, so the GP fits no observation noise."""
    try:
        import optuna
    except ImportError:
        raise UserError(f"--methods {method}: optuna is not installed (pip install 'surrogate_nas[optuna]')") from None
    if method == "optuna":
        return optuna.samplers.TPESampler(seed=seed)
    try:
        import scipy  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        raise UserError(f"--methods {method}: GPSampler needs torch and scipy (pip install 'surrogate_nas[gp]'; "
                        "a CPU build of torch is enough)") from None
    if not hasattr(optuna.samplers, "GPSampler"):
        raise UserError(f"--methods {method}: this Optuna ({optuna.__version__}) has no GPSampler (needs >= 4.2)")
    return optuna.samplers.GPSampler(seed=seed, deterministic_objective=True)


def run_optuna(ctx, seed: int, budget: int, tag: str, base: SearchConfig, floor: float, out_dir: Path,
               method: str = "optuna") -> MethodRun:
    """An Optuna sampler (`optuna_sampler`) over one categorical choice per layer. With
    `--max-distinct`, a trial's genome is repaired as NSGA-II's are and the sampler is told
    the repaired genome's objectives (its objective is score(repair(genome)))."""
    import optuna

    from surrogate_nas.workflows.run import distinct_limit

    limit = distinct_limit(ctx, base)
    truth, history, run_id = _baseline_truth(ctx, method, seed, budget, tag, base, floor, out_dir)
    start = time.time()
    if replay_recorded(truth, out_dir / "runs" / run_id, budget, method):
        return _finish_baseline(ctx, method, seed, budget, truth, history, run_id, out_dir, time.time() - start, base,
                                floor)
    truth, history, run_id = _baseline_truth(ctx, method, seed, budget, tag, base, floor, out_dir)
    sampler = optuna_sampler(method, seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    choices = list(range(len(ctx.catalog)))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    n_layers = len(ctx.evaluator.layers)
    study.enqueue_trial({f"layer{i + 1}": ctx.exact_index for i in range(n_layers)})
    start = time.time()
    for _ in range(50 * budget):
        trial = study.ask()
        genome = tuple(trial.suggest_categorical(f"layer{i + 1}", choices) for i in range(n_layers))
        if limit is not None:
            genome = limit.repair_one(genome)
        try:
            accuracy = truth.accuracy(genome, trial.number, method)
        except BudgetExhausted:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            break
        study.tell(trial, [accuracy, ctx.evaluator.energy(genome)])
    return _finish_baseline(ctx, method, seed, budget, truth, history, run_id, out_dir, time.time() - start, base, floor)


def run_nsga(ctx, method: str, seed: int, budget: int, tag: str, base: SearchConfig, out_dir: Path,
             floor: float) -> MethodRun:
    from surrogate_nas.workflows.run import execute

    mode, initial = ("full", "seed-set") if method == "full-seeded" else (method, base.initial)
    config = replace(base, mode=mode, initial=initial, seed=seed, budget=budget, accuracy_floor=floor)
    if method == "full-seeded":  # exactly the surrogate's seed set: the same genomes, the same count
        config = replace(config, seed_set_size=replace(base, budget=budget).n_seed)
    run_id = run_name(tag, method, seed, budget)
    run_dir = out_dir / "runs" / run_id
    result = execute(ctx, config, out_dir / "runs", run_id=run_id, resume=run_dir.exists(),
                     resume_flag=f"compare: run {run_id}")
    return MethodRun(method, seed, budget, result.hv_history, result.front, result.seconds, result.cache_hits, result.computed,
                     rescored_choices(run_dir) if config.evaluate_test else None)
