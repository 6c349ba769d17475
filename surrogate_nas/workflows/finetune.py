"""Approximation-aware fine-tuning of chosen designs.

The approximate network of a design (its tables and compensation in the forward pass,
BatchNorm folded, calibrated input ranges kept) is trained for a few epochs on the
training split through the straight-through estimator of `AxConv2D`. Afterwards the
compensation is re-fitted to the new weights (same method per layer) when that lowers the loss on the
calibration images of the training split, and the network is re-scored on all validation images and the test set. Hardware is unchanged: the energy
of a design does not move, only its stored weights do.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from surrogate_nas.data.splits import training_subset

DEFAULT_EPOCHS = 2


DEFAULT_LR = 1e-4


DEFAULT_TRAIN_IMAGES = 20000


BATCH = 128


@dataclass
class FinetuneResult:
    genome: tuple[int, ...]
    compensation: list[str]
    energy: float
    validation_before: float
    test_before: float
    validation_after: float
    test_after: float
    epochs: int
    train_images: int
    seconds: float
    seconds_per_epoch: float
    compensation_refit: bool
    model_path: str | None = None
    kept: str = "retrained"  # with a recipe: 'untuned' when retraining did not beat the design on validation

    @classmethod
    def from_row(cls, r: dict) -> "FinetuneResult":
        """Back from `row` (a finetune.csv row, or the card saved beside a design)."""
        floats = ("energy", "validation_before", "test_before", "validation_after", "test_after", "seconds",
                  "seconds_per_epoch")
        return cls(genome=tuple(int(v) for v in str(r["genome_indices"]).split(",")),
                   compensation=r["compensation"].split(";"), **{k: float(r[k]) for k in floats},
                   epochs=int(r["epochs"]), train_images=int(r["train_images"]),
                   compensation_refit=r.get("compensation_refit") in (True, "True"),
                   model_path=r.get("model_path") or None, kept=r.get("kept") or "retrained")

    def row(self, names: list[str]) -> dict:
        out = asdict(self)
        out["genome"] = ";".join(names)
        out["genome_indices"] = ",".join(map(str, self.genome))
        out["compensation"] = ";".join(self.compensation)
        out["energy_saving_pct"] = 100 * (1 - self.energy)
        return out


def finetune_design(evaluator, genome, splits, calibration, epochs: int = DEFAULT_EPOCHS, lr: float = DEFAULT_LR,
                    train_images: int | None = DEFAULT_TRAIN_IMAGES, seed: int = 0, verbose: int = 1) -> tuple[float, float]:
    """Train `evaluator.model` in place with `genome`'s designs; returns (seconds,
    seconds per epoch, whether the compensation was re-fitted). The evaluator must be
    private to this design."""
    import keras
    import tensorflow as tf

    from surrogate_nas.network.training import augment_dataset
    from surrogate_nas.workflows.retrain import choose_refit

    methods = evaluator.design_labels(genome)
    evaluator.set_genome(genome)
    idx = training_subset(splits.y_train, train_images, seed)
    keras.utils.set_random_seed(seed)
    model = evaluator.model
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1))
    n_classes = int(model.output_shape[-1])
    ds = augment_dataset(splits.x_train[idx], splits.y_train[idx], min(BATCH, len(idx)), seed).map(lambda i, l: (i, tf.one_hot(l, n_classes)))
    start = time.time()
    model.fit(ds, epochs=epochs, verbose=verbose)
    seconds = time.time() - start
    refit = choose_refit(evaluator, genome, methods, calibration)
    return seconds, seconds / max(1, epochs), refit


def save_design(evaluator, path: Path, card: dict) -> Path:
    """The fine-tuned approximate network (tables and compensation inside) and its card."""
    import keras

    import surrogate_nas.emulation.layers  # noqa: F401  (AxConv2D must be registered to load)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.keras")
    evaluator.model.save(tmp)
    # saved once more uncompiled: the optimizer's state is not part of a design (3x smaller)
    keras.models.load_model(tmp, compile=False).save(tmp)
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return path


def _points_from_run(run_dir: Path, tolerances, band: tuple[float, float, float] | None = None,
                     max_points: int | None = None) -> tuple[list[tuple[int, ...]], dict]:
    """The designs to retrain: for each tolerance the validation-chosen front point, or with
    `band` = (lo, hi, width) the most accurate re-scored front point (validation) in each
    band of saving (the `max_points` highest-saving bands); a band the re-scored front
    misses takes the run's most accurate complete evaluation there (search-set accuracy),
    since a design poor before retraining can be the best after it."""
    from surrogate_nas.results.run_folder import RunFolder
    from surrogate_nas.results.summary import band_candidates, choose_within, read_rescored, summarize

    exact = summarize(run_dir)["all_exact"]
    rows = read_rescored(run_dir)
    front = [r for r in rows if r["role"] == "front"]
    genomes = []
    if band is not None:
        lo, hi, width = band[:3]
        picked = band_candidates(front, lo, hi, width)
        covered = {r["band"] for r in picked}
        complete = [{"genome_indices": tuple(int(v) for v in e["genome_indices"].split(",")), "energy": e["energy"],
                     "accuracy": e["accuracy"]} for e in RunFolder(run_dir).evaluations()
                    if not (e.get("below_floor") or e.get("dominated_by"))]
        picked += [r for r in band_candidates(complete, lo, hi, width, accuracy="accuracy") if r["band"] not in covered]
        picked = sorted(picked, key=lambda r: r["band"])
        if max_points is not None:
            picked = picked[max(0, len(picked) - max_points):] if max_points else []
        genomes = [tuple(r["genome_indices"]) for r in picked]
    for t in tolerances:
        chosen = choose_within(front, exact, t)
        if chosen is not None and chosen["genome_indices"] not in genomes:
            genomes.append(chosen["genome_indices"])
    before = {r["genome_indices"]: (r["validation_accuracy"], r["test_accuracy"]) for r in rows}
    return list(dict.fromkeys(genomes)), {"exact": exact, "before": before, "front": front}


def quiet_points(ctx, band, max_points: int | None = None) -> list[tuple[int, ...]]:
    """`band` kind 'quiet': at each saving band.lo, lo + width, ..., hi (percent), the genome
    whose circuits add the least output noise power (`evaluation.quiet`; no labels used),
    at most the `max_points` highest savings."""
    from surrogate_nas.evaluation.quiet import layer_energy, least_noise_designs

    ev = ctx.evaluator
    stats = ev.layer_statistics()
    noise = ev.designs.residual_noise(stats["taps"], stats["output_std"])[:, :, 1]
    energy = layer_energy([i.macs for i in ev.infos], ctx.catalog.powers, ctx.catalog.exact.power_mw)
    targets = [band.lo + k * band.width for k in range(int((band.hi - band.lo) // band.width + 1e-9) + 1)]
    genomes = list(dict.fromkeys(tuple(d["genome_indices"]) for d in least_noise_designs(energy, noise ** 2, targets)
                                 if d is not None))
    if max_points is not None:
        genomes = genomes[max(0, len(genomes) - max_points):] if max_points else []
    return genomes


def _finished_design(path: Path, genome, settings: dict) -> FinetuneResult | None:
    """The result of a design retrained by an earlier, interrupted call with the same
    settings, else None. The card is written after the model: a design without a readable
    card is retrained again."""
    card_path = path.with_suffix(".json")
    if not (path.is_file() and card_path.is_file()):
        return None
    try:
        card = json.loads(card_path.read_text())
        same = card["genome_indices"] == ",".join(map(str, genome)) and all(card.get(k) == v
                                                                            for k, v in settings.items())
        return FinetuneResult.from_row(card) if same else None
    except (ValueError, KeyError, TypeError):
        return None


def finetune_run(paths, run_dir: Path, out: Path, tolerances=(0.5, 1.0, 2.0, 5.0), genome=None, compensation=None,
                 epochs: int = DEFAULT_EPOCHS, train_images: int | None = DEFAULT_TRAIN_IMAGES, lr: float = DEFAULT_LR,
                 seed: int = 0, test_images: int | None = None, quiet: bool = False, ctx=None,
                 band: tuple[float, float, float] | None = None, max_points: int | None = None, recipe=None):
    """Fine-tune the chosen designs of a finished run (`max_points`: at most this many bands);
    with a `recipe` (network.retraining.Recipe) each design is retrained by `workflows.retrain`
    instead: checkpointed after every epoch, best epoch on the run's search set, kept only
    when more accurate than the un-tuned design on all validation images; writes finetune.csv/.json/.png
    and one `.keras` (+ card) per design into `out`. The model, data, catalog and
    compensation are the run's (its `ctx` when given) unless flags in `paths` say otherwise."""
    from surrogate_nas.config import portable, project_root
    from surrogate_nas.data.splits import make_splits
    from surrogate_nas.errors import UserError
    from surrogate_nas.evaluation.images import calibration_set, select_images
    from surrogate_nas.genome import genome_names, parse_genome
    from surrogate_nas.multipliers.compensation import check_method
    from surrogate_nas.workflows.context import Context
    from surrogate_nas.workflows.run_folder import read_run_record

    run_dir = Path(run_dir)
    record = read_run_record(run_dir)
    run_method = record["search"].get("compensation", "none")
    method = check_method(compensation or run_method)
    if ctx is None:
        ctx, _ = Context.from_run(run_dir, paths, quiet=quiet, compensation=method)
    if ctx.catalog.fingerprint != record["evaluator"]["catalog"] and method == run_method:
        raise UserError(f"--catalog {ctx.catalog.path}: not the catalog run {run_dir.name} searched with")
    card = ctx.evaluator.card
    splits = make_splits(ctx.data, seed=0)
    calibration = calibration_set(splits, ctx.data.source_hash, int(card.get("seed", 0)))
    test = select_images(splits, ctx.data.source_hash, "test", test_images)

    quiet_band = band is not None and band.kind == "quiet"
    genomes, context = _points_from_run(run_dir, tolerances, None if quiet_band else band, max_points)
    if quiet_band:
        genomes = quiet_points(ctx, band, max_points)
        context["candidates"] = (f"the least output noise power at each saving from {band.lo:g} to {band.hi:g} % "
                                 f"in steps of {band.width:g} (evaluation.quiet)")
    elif band is not None:
        context["candidates"] = (f"the most accurate front point in each {band.width:g} % band of saving from "
                                 f"{band.lo:g} to {band.hi:g} %")
    choosing = None
    if recipe is not None:  # the recipe's numbers are the ones used and recorded
        from surrogate_nas.workflows.retrain import retrain

        epochs, lr, train_images = recipe.epochs, recipe.lr, recipe.train_images
        choosing = select_images(splits, ctx.data.source_hash, "validation", None)
        context["recipe"] = recipe.to_dict()
    if genome is not None:
        genomes = [parse_genome(genome, ctx.catalog, len(ctx.evaluator.layers))]
    if not genomes:
        where = f"in the saving band {band[0]:g}-{band[1]:g} %" if band else \
            f"within {', '.join(map(str, tolerances))} pp on validation"
        raise UserError(f"{run_dir}: no front point {where}")
    out.mkdir(parents=True, exist_ok=True)
    root = project_root(ctx.paths)
    results = []
    n_train = len(training_subset(splits.y_train, train_images, seed))
    settings = {"source_run": portable(run_dir, root), "model": portable(ctx.model_path, root),
                "weights_sha256": card.get("weights_sha256"), "lr": lr, "seed": seed, "epochs": epochs,
                "train_images": n_train, "test_images": len(test.labels), "compensation_method": method,
                "recipe": None if recipe is None else recipe.to_dict()}
    for k, g in enumerate(genomes, start=1):
        path = out / f"design-{k}.keras"
        done = _finished_design(path, g, settings)
        if done is not None:  # a rerun after an interruption: this design is finished
            results.append(done)
            if not quiet:
                print(f"design {k}: {';'.join(genome_names(g, ctx.catalog))}: already retrained ({path.name}), "
                      "reused", flush=True)
            continue
        # private: its model is trained in place (with a recipe: scoring the run's search set, the tuning images)
        ev = ctx.build_evaluator("validation", None if recipe is None else record["search"]["search_images"])
        before = context["before"].get(g)
        if before is None or method != run_method or ctx.evaluator.fingerprint != record.get("fingerprint"):
            # not scored as the run scored it (another compensation, model or calibration)
            ev.set_genome(g)
            before = (ev.accuracy(g) if recipe is None else None, None)  # a recipe's retrain measures it
        if before[1] is None:  # a point the run scored on validation only
            ev.set_genome(g)
            before = (before[0], ev.top1(test.images, test.labels))
        kept, extra = "retrained", {}
        if recipe is None:
            seconds, per_epoch, refit = finetune_design(ev, g, splits, calibration, epochs, lr, train_images, seed,
                                                        verbose=0 if quiet else 2)
            validation_after = ev.accuracy(g)
        else:
            done = retrain(ev, g, splits, recipe, out / f"design-{k}.work", calibration=calibration, choosing=choosing,
                           teacher_cache=ctx.rule_store, seed=seed, verbose=0 if quiet else 2, quiet=quiet)
            seconds, refit, kept = done.seconds, bool(done.compensation_refit), done.kept
            extra = {"history": done.history}  # tuning-image accuracy after each epoch, in the card
            per_epoch = sum(h["seconds"] for h in done.history[1:]) / max(1, len(done.history) - 1)
            validation_after = max(done.choosing_before, done.choosing_after)  # the kept network's
            if before[0] is not None and abs(done.choosing_before - before[0]) > 1e-9 and not quiet:
                print(f"design {k}: the un-tuned design scores {done.choosing_before:.4f} on validation here, "
                      f"{before[0]:.4f} in the run's records; reporting the one measured here", flush=True)
            before = (done.choosing_before, before[1])  # 'kept' was decided on this measurement
        after = (validation_after, ev.top1(test.images, test.labels))
        result = FinetuneResult(g, ev.design_labels(g), ev.energy(g), before[0], before[1], after[0], after[1], epochs,
                                n_train, seconds, per_epoch, refit, kept=kept)
        result.model_path = path.name  # next to finetune.csv
        save_design(ev, path, {**settings, **result.row(genome_names(g, ctx.catalog)), **extra})
        results.append(result)
        if not quiet:
            print(f"design {k}: {';'.join(genome_names(g, ctx.catalog))}: validation {before[0]:.4f} -> {after[0]:.4f}, "
                  f"test {before[1]:.4f} -> {after[1]:.4f} ({seconds:.0f} s)", flush=True)
    summary = write_results(out, results, ctx.catalog, context)
    return results, summary


def report_only(run_dir: Path, out: Path, catalog) -> tuple[list[FinetuneResult], dict]:
    """Rewrite finetune.json/.png from an existing finetune.csv (no training)."""
    import csv

    from surrogate_nas.errors import UserError

    path = out / "finetune.csv"
    if not path.is_file():
        raise UserError(f"{path}: not found (run finetune first)")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    results = [FinetuneResult.from_row(r) for r in rows]
    _, context = _points_from_run(run_dir, ())
    return results, write_results(out, results, catalog, context)


def write_results(out: Path, results: list[FinetuneResult], catalog, context: dict) -> dict:
    import csv

    from surrogate_nas.genome import genome_names
    from surrogate_nas.results.summary import TOLERANCES_PP, choose_within

    rows = [r.row(genome_names(r.genome, catalog)) for r in results]
    with open(out / "finetune.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    exact = context["exact"]
    after = [{"genome": row["genome"], "genome_indices": r.genome, "compensation": row["compensation"], "energy": r.energy,
              "validation_accuracy": r.validation_after, "test_accuracy": r.test_after, "finetuned": True}
             for r, row in zip(results, rows)]
    # Fine-tuning is an option per design: the un-tuned front points stay candidates, and
    # the choice between them is made on validation like every other choice.
    candidates = after + [dict(p, finetuned=False) for p in context["front"]]
    chosen = {f"{t:g}pp": choose_within(candidates, exact, t) for t in TOLERANCES_PP}
    for key, c in chosen.items():
        if c is not None:
            c["finetuned"] = next(p["finetuned"] for p in candidates
                                  if tuple(p["genome_indices"]) == tuple(c["genome_indices"])
                                  and p["validation_accuracy"] == c["validation_accuracy"])
    summary = {
        "setting": "with fine-tuning (approximation-aware retraining through the emulation)",
        "all_exact": exact,
        "chosen_after_finetuning": chosen,
        "retrained": [{"genome": row["genome"], "energy_saving_pct": round(row["energy_saving_pct"], 2),
                       "validation_before": r.validation_before, "validation_after": r.validation_after,
                       "kept": r.kept} for r, row in zip(results, rows)],
        "recipe": context.get("recipe"),
        "candidates": context.get("candidates", "the validation-chosen front point of each tolerance"),
        "seconds_per_epoch": [r.seconds_per_epoch for r in results],
        "train_images": results[0].train_images,
        "epochs": results[0].epochs,
        "rule": "chosen on validation accuracy after fine-tuning (all validation images) against the all-exact "
                "network's; losses reported on the test set",
    }
    for chosen in summary["chosen_after_finetuning"].values():
        if chosen is not None:
            chosen["genome_indices"] = list(chosen["genome_indices"])
    (out / "finetune.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_before_after(out / "finetune.png", results, context)
    return summary


def plot_before_after(path: Path, results: list[FinetuneResult], context: dict) -> None:
    from surrogate_nas.results.plots import finish_front_axes, plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    front = sorted(context["front"], key=lambda r: r["energy"])
    ax.step([r["energy"] for r in front], [r["validation_accuracy"] for r in front], where="post", c="0.6", lw=1,
            label="front before (no retraining)")
    ax.scatter([r.energy for r in results], [r.validation_before for r in results], c="C0", s=25, label="chosen, before")
    ax.scatter([r.energy for r in results], [r.validation_after for r in results], c="C3", s=25, label="after fine-tuning")
    for r in results:
        ax.annotate("", (r.energy, r.validation_after), (r.energy, r.validation_before),
                    arrowprops={"arrowstyle": "->", "color": "0.4", "lw": 0.8})
    exact = context["exact"]["validation_accuracy"]
    ax.axhline(exact, c="k", ls=":", lw=1, label=f"all-exact {exact:.4f}")
    finish_front_axes(ax, fig, path, "top-1 accuracy (all validation images)", "Fine-tuning the chosen designs")


def format_results(results: list[FinetuneResult], summary: dict) -> str:
    lines = []
    for key, c in summary["chosen_after_finetuning"].items():
        lines.append(f"within {key} with fine-tuning (chosen on validation): " + (
            "no point" if c is None else f"saving {c['energy_saving_pct']:.1f} %, validation loss "
                                         f"{c['validation_loss_pp']:.2f} pp, test loss {c['test_loss_pp']:.2f} pp"
                                         f" ({'fine-tuned' if c['finetuned'] else 'not fine-tuned'})"))
    return "\n".join(lines)
