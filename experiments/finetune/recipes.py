"""Retraining recipes on three designs of the headline run (issue 16).

Which images do what:
- training split (45,000, or a stratified subset): trains; the teacher's logits are
  computed on it;
- search set (the run's 2,000 validation images): scores each epoch, picks the recipe
  and the best epoch (the tuning images);
- all 5,000 validation images: decide retrained vs un-tuned (keep-the-better) and are
  the reported "validation" accuracy of a chosen design (the choosing images);
- test (10,000): only reported.
The energy of a design does not change with retraining.

Stages (each resumable: finished (design, recipe) rows are skipped, an interrupted
retraining resumes at its last finished epoch from its checkpoint under the cache):

  python experiments/finetune/recipes.py compare   # recipes at equal cost on the ~55 % design
  python experiments/finetune/recipes.py band --recipe R --epochs E   # R on the three designs
  python experiments/finetune/recipes.py report    # plot + table from the CSVs
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RUN = Path("experiments/headline/surrogate-b300-auto")
OUT = Path("experiments/finetune/recipes")
TARGETS = (45, 55, 65)
FIELDS = ["design", "saving_pct", "recipe", "train_images", "epoch", "tune_accuracy", "loss", "seconds", "lr_end"]


def rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


class Setup:
    """Everything the stages share, loaded once per process."""

    def __init__(self, run: Path):
        import keras

        from surrogate_nas.config import resolve_paths
        from surrogate_nas.data.splits import make_splits
        from surrogate_nas.evaluation.images import calibration_set, select_images
        from surrogate_nas.evaluation.inputs import load_catalog_from, load_data_from
        from surrogate_nas.network.card import read_card

        self.run = run
        self.config = json.loads((run / "config.json").read_text())
        assert self.config["search"]["compensation"] == "auto"
        self.paths = resolve_paths()
        self.cache = Path(self.paths.cache)
        self.catalog = load_catalog_from(self.paths)
        assert self.catalog.fingerprint == self.config["evaluator"]["catalog"]
        self.model_path = Path(self.paths.model)
        self.card = read_card(self.model_path)
        self.float_model = keras.models.load_model(self.model_path, compile=False)
        self.data = load_data_from(self.paths)
        self.splits = make_splits(self.data, seed=0)
        self.calibration = calibration_set(self.splits, self.data.source_hash, int(self.card.get("seed", 0)))
        # the run's search set: 2,000 stratified validation images (seed 0), as `run` builds it
        self.search = select_images(self.splits, self.data.source_hash, "validation",
                                    self.config["search"]["search_images"], self.config["search"]["seed"])
        self.validation = select_images(self.splits, self.data.source_hash, "validation", None)
        self.test = select_images(self.splits, self.data.source_hash, "test", None)

    def evaluator(self):
        """A private evaluator on the search set, compensation 'auto' as finetune_run builds it."""
        from surrogate_nas.evaluation.evaluator import Evaluator

        ev = Evaluator(self.float_model, self.card, self.catalog, self.search, compensation="auto",
                       calibration=self.calibration, rule_store=self.cache, quiet=True,
                       approximate=self.config["search"].get("approximate", "conv"))
        if ev.fingerprint != self.config["fingerprint"]:
            print("note: evaluator fingerprint differs from the run's (TensorFlow version or device)", flush=True)
        return ev


def pick_designs(setup: Setup, out: Path) -> list[dict]:
    """The most accurate genome (search set) within 2.5 pp of 45 / 55 / 65 % saving among
    the run's evaluations. Early-stopped rows carry a partial accuracy, so the 5 best rows of
    each band are scored again on the whole search set first."""
    path = out / "designs.json"
    if path.is_file():
        return json.loads(path.read_text())
    with open(setup.run / "evaluations.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    ev = setup.evaluator()
    designs = []
    for target in TARGETS:
        band = [r for r in rows if abs(100 * (1 - float(r["energy"])) - target) <= 2.5]
        band.sort(key=lambda r: -float(r["accuracy"]))
        scored = []
        for r in band[:5]:
            g = tuple(int(v) for v in r["genome_indices"].split(","))
            scored.append((ev.accuracy(g), r, g))
        acc, r, g = max(scored, key=lambda s: (s[0], -float(s[1]["energy"])))
        designs.append({"name": f"d{target}", "target_pct": target, "genome_indices": list(g), "genome": r["genome"],
                        "compensation": ";".join(ev.design_labels(g)), "energy": float(r["energy"]),
                        "saving_pct": 100 * (1 - float(r["energy"])), "search_accuracy": acc,
                        "run_row_accuracy": float(r["accuracy"]),
                        "candidates": [{"genome_indices": list(gg), "search_accuracy": a} for a, _, gg in scored]})
        print(f"d{target}: {r['genome']} ({designs[-1]['saving_pct']:.1f} %) search {acc:.4f}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(designs, indent=2) + "\n")
    return designs


def quiet_designs(setup: Setup, out: Path, noise_path: Path, targets=(45, 50, 55)) -> list[dict]:
    """Designs chosen for retraining rather than for accuracy before it
    (`surrogate_nas.evaluation.quiet`): at each target saving, the genome with the least
    total output noise power, with the per-(layer, circuit) relative noise that
    `experiments/robust/robust.py noise` measured (training calibration images only)."""
    from surrogate_nas.evaluation.quiet import layer_energy, least_noise_designs

    path = out / "quiet-designs.json"
    if path.is_file():
        return json.loads(path.read_text())
    doc = json.loads(noise_path.read_text())
    ev = setup.evaluator()
    assert [ev.catalog[i].name for i in range(len(ev.catalog))] == doc["circuits"]
    energy = layer_energy(ev.energy_model.macs, ev.catalog.powers, ev.catalog.exact.power_mw)
    noise = np.asarray(doc["relative_noise_std"], float)
    designs = []
    for found in least_noise_designs(energy, np.square(noise), targets):
        g, t = found["genome_indices"], int(found["target_pct"])
        designs.append({"name": f"q{t}", "target_pct": t, "genome_indices": list(g),
                        "genome": ";".join(ev.catalog[i].name for i in g), "compensation": ";".join(ev.design_labels(g)),
                        "energy": ev.energy_model(g), "saving_pct": 100 * (1 - ev.energy_model(g)),
                        "noise_power": found["noise_power"], "relative_noise_std": [float(noise[l, c]) for l, c in enumerate(g)],
                        "search_accuracy": ev.accuracy(g)})
        print(f"q{t}: {designs[-1]['genome']} ({designs[-1]['saving_pct']:.1f} %), noise power {found['noise_power']:.4f}, "
              f"search {designs[-1]['search_accuracy']:.4f}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(designs, indent=2) + "\n")
    return designs


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def append_rows(path: Path, rows: list[dict]) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)


def train_one(setup: Setup, design: dict, recipe, out: Path, csv_path: Path, work: Path, choosing=None, verbose=2):
    from surrogate_nas.workflows.retrain import retrain

    tag = f"{design['name']}-{recipe.name}-{recipe.train_images or 'all'}-e{recipe.epochs}"
    done = [r for r in read_rows(csv_path) if (r["design"], r["recipe"], r["train_images"]) ==
            (design["name"], recipe.name, str(recipe.train_images or 45000))]
    if len({r["epoch"] for r in done}) == recipe.epochs + 1 and choosing is None:
        print(f"{tag}: done, skipped", flush=True)
        return None, None
    ev = setup.evaluator()
    g = tuple(design["genome_indices"])
    result = retrain(ev, g, setup.splits, recipe, work / tag, calibration=setup.calibration, choosing=choosing,
                     teacher_cache=setup.cache, verbose=verbose)
    if not done:
        append_rows(csv_path, [{"design": design["name"], "saving_pct": f"{design['saving_pct']:.2f}", "recipe": recipe.name,
                                "train_images": recipe.train_images or 45000, "epoch": h["epoch"],
                                "tune_accuracy": f"{h['tune_accuracy']:.4f}",
                                "loss": "" if h["loss"] is None else f"{h['loss']:.4f}",
                                "seconds": f"{h['seconds']:.1f}", "lr_end": "" if h["lr_end"] is None else f"{h['lr_end']:.3g}"}
                               for h in result.history])
    return ev, result


def float_epoch_seconds(setup: Setup, n_images: int | None, out: Path) -> dict:
    """One epoch of the float model (BatchNorm, Dropout, no emulation) on the same images,
    same batch size and loss, in this process: the denominator of the cost ratio."""
    import keras
    import tensorflow as tf

    from surrogate_nas.data.splits import training_subset
    from surrogate_nas.network.retraining import BATCH

    path = out / "timing.json"
    doc = json.loads(path.read_text()) if path.is_file() else {}
    key = f"float_epoch_{n_images or 45000}"
    if key in doc:
        return doc
    idx = training_subset(setup.splits.y_train, n_images, 0)
    model = keras.models.clone_model(setup.float_model)
    model.set_weights(setup.float_model.get_weights())
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    ds = tf.data.Dataset.from_tensor_slices((setup.splits.x_train[idx], tf.one_hot(setup.splits.y_train[idx], 10)))
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y)).batch(BATCH, drop_remainder=True).prefetch(2)
    model.fit(ds.take(2), epochs=1, verbose=0)  # trace outside the timing
    start = time.time()
    model.fit(ds, epochs=1, verbose=2)
    doc[key] = time.time() - start
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def exact_design(setup: Setup, n_layers: int) -> dict:
    """The all-exact 8-bit twin as a 'design': the control that says how much a recipe
    moves a network that has no approximation error to absorb."""
    exact = [setup.catalog.index(setup.catalog.exact.name)] * n_layers
    return {"name": "exact", "genome_indices": exact, "saving_pct": 0.0}


def stage_compare(args, setup: Setup):
    from surrogate_nas.workflows.retrain import RECIPES

    out = Path(args.out)
    designs = {d["name"]: d for d in pick_designs(setup, out)}
    n_layers = len(next(iter(designs.values()))["genome_indices"])
    design = exact_design(setup, n_layers) if args.design == "exact" else designs[args.design]
    csv_path = out / "compare.csv"
    float_epoch_seconds(setup, args.train_images, out)
    for name in args.recipes.split(","):
        recipe = replace(RECIPES[name], epochs=args.epochs, train_images=args.train_images)
        train_one(setup, design, recipe, out, csv_path, Path(args.work))


def stage_band(args, setup: Setup):
    from surrogate_nas.workflows.retrain import RECIPES, image_accuracy

    out = Path(args.out)
    designs = quiet_designs(setup, out, Path(args.noise)) if args.quiet else pick_designs(setup, out)
    csv_path = out / "band.csv"
    exact_path = out / "all-exact.json"
    final = {}
    if not exact_path.is_file():
        ev = setup.evaluator()
        exact = (ev.catalog.index(ev.catalog.exact.name),) * len(ev.layers)
        ev.set_genome(exact)
        final["all_exact"] = {"search_accuracy": ev.accuracy(exact), "validation_accuracy": image_accuracy(ev, setup.validation),
                              "test_accuracy": image_accuracy(ev, setup.test)}
        exact_path.write_text(json.dumps(final["all_exact"], indent=2) + "\n")
    recipe = replace(RECIPES[args.recipe], epochs=args.epochs, train_images=args.train_images)
    float_epoch_seconds(setup, args.train_images or None, out)  # the denominator of the cost ratio, this process
    for design in designs:
        if args.designs and design["name"] not in args.designs.split(","):
            continue
        key = f"{design['name']}-{recipe.name}-{recipe.train_images or 'all'}-e{recipe.epochs}"
        final_path = out / f"final-{key}.json"
        if final_path.is_file():
            print(f"{key}: done, skipped", flush=True)
            continue
        # the un-tuned design on the test images (reported only); keep_better measures it on validation
        ev0 = setup.evaluator()
        g = tuple(design["genome_indices"])
        ev0.set_genome(g)
        test_before = image_accuracy(ev0, setup.test)
        del ev0
        ev, result = train_one(setup, design, recipe, out, csv_path, Path(args.work), choosing=setup.validation)
        kept_retrained = result.kept == "retrained"
        final[key] = {"design": design["name"], "genome": design["genome"], "compensation": design["compensation"],
                      "saving_pct": design["saving_pct"], "energy": design["energy"], "recipe": recipe.to_dict(),
                      "best_epoch_on_search_set": result.best_epoch, "compensation_refit": result.compensation_refit,
                      "kept": result.kept,
                      "before": {"search_accuracy": result.history[0]["tune_accuracy"],
                                 "validation_accuracy": result.choosing_before, "test_accuracy": test_before},
                      "retrained_validation_accuracy": result.choosing_after,
                      "kept_network": {"search_accuracy": ev.accuracy(g),
                                       "validation_accuracy": result.choosing_after if kept_retrained else result.choosing_before,
                                       "test_accuracy": image_accuracy(ev, setup.test) if kept_retrained else test_before},
                      "seconds": result.seconds}
        final_path.write_text(json.dumps(final[key], indent=2) + "\n")
        print(json.dumps(final[key], indent=1), flush=True)


def read_final(out: Path) -> dict:
    final = {}
    if (out / "all-exact.json").is_file():
        final["all_exact"] = json.loads((out / "all-exact.json").read_text())
    for path in sorted(out.glob("final-*.json")):
        final[path.stem[len("final-"):]] = json.loads(path.read_text())
    return final


def harvest(out: Path, work: Path) -> None:
    """Epochs of retrainings that have not finished (stopped at the deadline), from their
    checkpoints' history.json, into partial.csv. Rows of retrainings whose checkpoints are
    not on this machine stay as they are (the checkpoints are not committed)."""
    done = {(r["design"], r["recipe"], r["train_images"]) for name in ("compare.csv", "band.csv")
            for r in read_rows(out / name)}
    designs = {d["name"]: d for name in ("designs.json", "quiet-designs.json") if (out / name).is_file()
               for d in json.loads((out / name).read_text())}
    rows, seen = [], set()
    for path in sorted(Path(work).glob("*/history.json")):
        doc = json.loads(path.read_text())
        name = path.parent.name.split("-")[0]
        recipe = doc["recipe"]
        n = str(recipe["train_images"] or 45000)
        if (name, recipe["name"], n) in done or name not in designs or len(doc["history"]) < 2:
            continue
        rows += [{"design": name, "saving_pct": f"{designs[name]['saving_pct']:.2f}", "recipe": recipe["name"] + f" (of {recipe['epochs']})",
                  "train_images": n, "epoch": h["epoch"], "tune_accuracy": f"{h['tune_accuracy']:.4f}",
                  "loss": "" if h["loss"] is None else f"{h['loss']:.4f}", "seconds": f"{h['seconds']:.1f}",
                  "lr_end": "" if h["lr_end"] is None else f"{h['lr_end']:.3g}"} for h in doc["history"]]
        seen.add((name, rows[-1]["recipe"], n))
    path = out / "partial.csv"
    rows = [r for r in read_rows(path) if (r["design"], r["recipe"], r["train_images"]) not in seen
            and (r["design"], r["recipe"].split(" (of ")[0], r["train_images"]) not in done] + rows
    path.unlink(missing_ok=True)
    if rows:
        append_rows(path, rows)


def stage_report(args, setup=None):
    from surrogate_nas.results.plots import plt

    out = Path(args.out)
    harvest(out, Path(args.work))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, names, title in ((axes[0], ("compare.csv",), "recipes on d55 and on the all-exact twin (control)"),
                             (axes[1], ("band.csv", "partial.csv"),
                              ("KD + cosine Adam 1e-3: d = most accurate, q = least noise"))):
        rows = [r for name in names for r in read_rows(out / name)]
        groups = {}
        for r in rows:
            groups.setdefault((r["design"], r["recipe"], r["train_images"]), []).append(r)
        for (d, rec, n), rs in groups.items():
            rs.sort(key=lambda r: int(r["epoch"]))
            ax.plot([int(r["epoch"]) for r in rs], [100 * float(r["tune_accuracy"]) for r in rs], marker="o",
                    label=f"{d} {rec} ({n} images)")
        final = read_final(out)
        if "all_exact" in final:
            ax.axhline(100 * final["all_exact"]["search_accuracy"], c="k", ls=":", lw=1, label="all-exact (search set)")
        ax.set_xlabel("epoch (0 = before retraining)")
        ax.set_ylabel("top-1 accuracy on the 2,000-image search set (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "accuracy_by_epoch.png", dpi=120)
    print(f"wrote {out / 'accuracy_by_epoch.png'}")
    print(markdown_tables(out))


def markdown_tables(out: Path) -> str:
    """The README's tables, from the CSVs and final.json."""
    lines = []
    for name in ("compare.csv", "band.csv", "partial.csv"):
        rows = read_rows(out / name)
        if not rows:
            continue
        groups = {}
        for r in rows:
            groups.setdefault((r["design"], r["saving_pct"], r["recipe"], r["train_images"]), []).append(r)
        epochs = sorted({int(r["epoch"]) for r in rows})
        lines += [f"{name}: search-set accuracy (%) after each epoch (epoch 0 = before), seconds of training per epoch", "",
                  "| design (saving) | recipe | images | " + " | ".join(f"ep {e}" for e in epochs) + " | s/epoch |",
                  "| --- | --- | --- | " + " | ".join("---" for _ in epochs) + " | --- |"]
        for (d, saving, rec, n), rs in groups.items():
            acc = {int(r["epoch"]): 100 * float(r["tune_accuracy"]) for r in rs}
            secs = [float(r["seconds"]) for r in rs if int(r["epoch"]) > 0]
            lines.append(f"| {d} ({float(saving):.1f} %) | {rec} | {n} | " + " | ".join(
                f"{acc[e]:.2f}" if e in acc else "" for e in epochs) + f" | {np.mean(secs):.0f} |")
        lines.append("")
    final = read_final(out)
    if final:
        ex = final.get("all_exact")
        lines += ["| design (saving, unchanged by retraining) | recipe | best epoch (search set) | kept | search before -> after | "
                  "validation before -> after | test before -> after |", "| --- | --- | --- | --- | --- | --- | --- |"]
        if ex:
            lines.append(f"| all-exact (0 %) | - | - | - | {100 * ex['search_accuracy']:.2f} | "
                         f"{100 * ex['validation_accuracy']:.2f} | {100 * ex['test_accuracy']:.2f} |")
        for key, f in final.items():
            if key == "all_exact":
                continue
            b, a = f["before"], f["kept_network"]
            lines.append(f"| {f['design']} ({f['saving_pct']:.1f} %) | {f['recipe']['name']} x{f['recipe']['epochs']} ep, "
                         f"{f['recipe']['train_images'] or 45000} img | {f['best_epoch_on_search_set']} | {f['kept']} | "
                         f"{100 * b['search_accuracy']:.2f} -> {100 * a['search_accuracy']:.2f} | "
                         f"{100 * b['validation_accuracy']:.2f} -> {100 * a['validation_accuracy']:.2f} "
                         f"(retrained: {100 * f['retrained_validation_accuracy']:.2f}) | "
                         f"{100 * b['test_accuracy']:.2f} -> {100 * a['test_accuracy']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=("compare", "band", "report"))
    p.add_argument("--run", default=str(RUN))
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--work", default="cache/retrain", help="checkpoints (not committed)")
    p.add_argument("--design", default="d55", help="compare: which design ('exact': the all-exact control)")
    p.add_argument("--designs", default="", help="band: only these designs (comma-separated names)")
    p.add_argument("--recipes", default="ce-adam1e-4,kd-adam1e-3-cos,kd-sgd2e-2-cos")
    p.add_argument("--recipe", default="kd-adam1e-3-cos", help="band: the recipe chosen on the search set")
    p.add_argument("--quiet", action="store_true",
                   help="band: the least-noise designs at 45/50/55 %% saving (quiet-designs.json) instead of designs.json")
    p.add_argument("--noise", default="experiments/robust/noise.json", help="--quiet: per-layer relative noise")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-images", type=int, default=20000, help="0 = all 45,000")
    args = p.parse_args(argv)
    args.train_images = args.train_images or None
    if args.stage == "report":
        return stage_report(args)
    setup = Setup(Path(args.run))
    {"compare": stage_compare, "band": stage_band}[args.stage](args, setup)


if __name__ == "__main__":
    sys.exit(main())
