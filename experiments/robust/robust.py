"""A retraining-robust starting model (issue 16): measure, then decide.

The shipped AlexNet is trained on for a few epochs with Gaussian noise added after every
conv layer's BatchNorm (where the folded, emulated conv writes its output), scaled per
batch to that layer's spread. The noise level of layer l is drawn per batch from
U[0, scale * r_l], where r_l is the largest relative residual noise std (after the shipped
auto rule's compensation, `LayerDesigns.residual_noise`) among the circuits that the three
band designs of `experiments/finetune/recipes/` use in that layer. BatchNorm stays frozen
(inference mode), so the folded twin keeps the statistics of noise-free inputs.

Which images do what:
- training split (45,000): trains the robust model;
- search set (the headline run's 2,000 validation images): picks the noise scale;
- all 5,000 validation images: compare plain and robust on the same designs (the
  choosing images);
- test: only reported.
The energy of a design does not depend on the model's weights.

Stages (each skips what is on disk):

  python experiments/robust/robust.py noise               # r_l per layer -> noise.json
  python experiments/robust/robust.py train --scale 1.0   # cache/robust/alexnet-robust-s1.0.keras + card
  python experiments/robust/robust.py score --scale 1.0   # designs on both models -> scores.csv
  python experiments/robust/robust.py report              # table + plot
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = Path("experiments/robust")
DESIGNS = Path("experiments/finetune/recipes/designs.json")
FRONT_RUN = Path("experiments/headline/seeds/surrogate-b300-s0")


def paths_and_data():
    from surrogate_nas.config import resolve_paths
    from surrogate_nas.data.splits import make_splits
    from surrogate_nas.evaluation.inputs import load_catalog_from, load_data_from

    paths = resolve_paths()
    data = load_data_from(paths)
    return paths, load_catalog_from(paths), data, make_splits(data, seed=0)


def model_path(scale: float) -> Path:
    return Path("cache/robust") / f"alexnet-robust-s{scale:g}.keras"


# ------------------------------------------------------------------ noise levels


def stage_noise(args) -> dict:
    """r[l][c]: relative residual noise std of circuit c in layer l, with the compensation
    the plain model's shipped auto rule gives it; r_l: the largest among the band designs."""
    path = OUT / "noise.json"
    if path.is_file():
        return json.loads(path.read_text())
    from surrogate_nas.evaluation.evaluator import Evaluator

    paths, catalog, data, _ = paths_and_data()
    ev = Evaluator.from_paths(Path(paths.model), catalog, data, n_images=500, compensation="auto",
                              rule_store=Path(paths.cache), quiet=True)
    stats = ev.layer_statistics()
    noise = ev.designs.residual_noise(stats["taps"], stats["output_std"])[:, :, 1]
    designs = json.loads(DESIGNS.read_text())
    r_max = [max(float(noise[layer, g]) for d in designs for g in [d["genome_indices"][layer]])
             for layer in range(noise.shape[0])]
    doc = {"layers": ev.layer_names, "r_max": r_max,
           "designs": {d["name"]: [float(noise[layer, g]) for layer, g in enumerate(d["genome_indices"])]
                       for d in designs},
           "circuits": catalog.names,
           "relative_noise_std": noise.round(5).tolist()}
    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print("r_max per layer:", ", ".join(f"{n} {r:.3f}" for n, r in zip(doc["layers"], r_max)))
    return doc


# ------------------------------------------------------------------ training


def noisy_network(model, levels: list[float], seed: int):
    """The same layer objects (trained in place) with a noise layer after each conv's BN."""
    import keras
    import tensorflow as tf

    class ScaledNoise(keras.layers.Layer):
        def __init__(self, level, seed, **kw):
            super().__init__(**kw)
            self.level = float(level)
            self.gen = keras.random.SeedGenerator(seed)

        def call(self, x, training=None):
            if not training or self.level == 0:
                return x
            r = keras.random.uniform((), 0.0, self.level, seed=self.gen)
            spread = tf.stop_gradient(tf.math.reduce_std(x))
            return x + r * spread * keras.random.normal(tf.shape(x), seed=self.gen)

    x = inputs = keras.Input(model.input_shape[1:])
    k = 0
    for layer in model.layers[1:]:
        x = layer(x)
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # frozen: inference-mode statistics, as folded in the twin
            x = ScaledNoise(levels[k], seed + k, name=f"noise{k + 1}")(x)
            k += 1
    assert k == len(levels), (k, levels)
    return keras.Model(inputs, x)


def stage_train(args) -> Path:
    import keras
    import tensorflow as tf

    from surrogate_nas.network.calibrate import calibrate_model
    from surrogate_nas.network.card import load_model
    from surrogate_nas.network.retraining import Recipe, make_optimizer
    from surrogate_nas.network.training import augment_dataset

    out = model_path(args.scale)
    if out.is_file():
        print(f"{out}: exists, skipped")
        return out
    levels = [args.scale * r for r in stage_noise(args)["r_max"]]
    paths, _, data, splits = paths_and_data()
    model = load_model(Path(paths.model))
    keras.utils.set_random_seed(args.seed)
    net = noisy_network(model, levels, args.seed)
    steps = len(splits.x_train) // 128
    recipe = Recipe("robust", "adam", args.lr, epochs=args.epochs)
    net.compile(optimizer=make_optimizer(recipe, steps),
                loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
                metrics=["accuracy"])
    ds = augment_dataset(splits.x_train, splits.y_train, 128, args.seed).map(lambda i, l: (i, tf.one_hot(l, 10)))
    search = search_set(splits, data)
    start = time.time()
    history = net.fit(ds, epochs=args.epochs, verbose=2,
                      validation_data=(search.images.astype(np.float32), tf.one_hot(search.labels, 10)))
    seconds = time.time() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.keras")
    model.save(tmp)
    tmp.replace(out)
    card = calibrate_model(out, data, seed=0, model=model, extra={
        "robust_training": {"noise_levels": levels, "scale": args.scale, "epochs": args.epochs, "lr": args.lr,
                            "optimizer": "adam, warm-up 0.5 epoch + cosine", "seed": args.seed,
                            "seconds": round(seconds, 1),
                            "search_accuracy_by_epoch": [round(a, 4) for a in history.history["val_accuracy"]],
                            "from": "models/alexnet_cifar10.keras"}})
    print(f"{out}: float validation {card['float_val_accuracy']:.4f}, 8-bit exact validation "
          f"{card['int8_exact_val_accuracy']:.4f}, {seconds:.0f} s", flush=True)
    return out


def search_set(splits, data):
    from surrogate_nas.evaluation.images import select_images

    return select_images(splits, data.source_hash, "validation", 2000, 0)


# ------------------------------------------------------------------ scoring

FIELDS = ["model", "design", "genome", "energy", "saving_pct", "compensation", "search_accuracy",
          "validation_accuracy", "seconds", "validation_bits"]


def designs_to_score() -> list[dict]:
    """All-exact, the three band designs, and the front points of the seed-0 headline run
    that it re-scored on validation."""
    out = [{"name": d["name"], "genome": d["genome"]} for d in json.loads(DESIGNS.read_text())]
    with open(FRONT_RUN / "rescored.csv", newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            if row.get("validation_accuracy") and row["role"] != "all-exact":
                out.append({"name": f"front{i}", "genome": row["genome"]})
    return out


def stage_score(args) -> None:
    import keras

    from surrogate_nas.evaluation.bits import pack_correct
    from surrogate_nas.evaluation.evaluator import Evaluator
    from surrogate_nas.evaluation.images import select_images
    from surrogate_nas.genome import parse_genome

    paths, catalog, data, splits = paths_and_data()
    csv_path = OUT / "scores.csv"
    done = {(r["model"], r["genome"]) for r in read_rows(csv_path)}
    designs = designs_to_score()
    exact = catalog[catalog.exact_index].name
    designs.insert(0, {"name": "all-exact", "genome": ";".join([exact] * 5)})
    models = {"plain": Path(paths.model), f"robust-s{args.scale:g}": model_path(args.scale)}
    validation = select_images(splits, data.source_hash, "validation", None)
    search = search_set(splits, data)
    for name, path in models.items():
        todo = [d for d in designs if (name, d["genome"]) not in done]
        if not todo:
            continue
        genomes = [tuple(parse_genome(d["genome"].split(";"), catalog)) for d in todo]
        ev = Evaluator.from_paths(path, catalog, data, split="validation", n_images=None, compensation="auto",
                                  rule_store=Path(paths.cache), quiet=False, rule_for=genomes)
        pos = {int(i): k for k, i in enumerate(validation.indices)}
        search_rows = np.array([pos[int(i)] for i in search.indices])
        for d, g in zip(todo, genomes):
            start = time.time()
            ev.set_genome(g)
            logits = ev.logits(validation.images)
            right = logits.argmax(1) == np.asarray(validation.labels)
            row = {"model": name, "design": d["name"], "genome": d["genome"], "energy": f"{ev.energy(g):.5f}",
                   "saving_pct": f"{100 * (1 - ev.energy(g)):.2f}", "compensation": ";".join(ev.design_labels(g)),
                   "search_accuracy": f"{right[search_rows].mean():.4f}", "validation_accuracy": f"{right.mean():.4f}",
                   "seconds": f"{time.time() - start:.1f}", "validation_bits": pack_correct(right).hex()}
            append_row(csv_path, row)
            print(f"{name} {d['name']}: saving {row['saving_pct']} %, search {row['search_accuracy']}, "
                  f"validation {row['validation_accuracy']} ({row['seconds']} s)", flush=True)
        keras.backend.clear_session()


def stage_report(args) -> None:
    """scores.md (paired table) and scores.png (validation accuracy against saving)."""
    from surrogate_nas.evaluation.bits import unpack_correct
    from surrogate_nas.results.plots import plt
    from surrogate_nas.results.summary import paired_loss

    rows = read_rows(OUT / "scores.csv")
    robust = f"robust-s{args.scale:g}"
    by = {(r["model"], r["design"]): r for r in rows}

    def right(r):
        return unpack_correct(bytes.fromhex(r["validation_bits"]), 5000)

    names = [r["design"] for r in rows if r["model"] == "plain" and (robust, r["design"]) in by]
    ex_p, ex_r = by[("plain", "all-exact")], by[(robust, "all-exact")]
    lines = [f"Plain (shipped) against robust ({robust}) AlexNet on the same designs, all 5,000 validation images;",
             "loss = all-exact of the same model minus the design; gain = robust minus plain, paired on the same",
             "images, with its 95 % interval. Energy does not depend on the weights.", "",
             "| design | saving % | plain validation % | robust validation % | plain loss pp | robust loss pp | gain pp [95 %] |",
             "|---|---|---|---|---|---|---|"]
    gains = []
    for name in sorted(names, key=lambda n: float(by[("plain", n)]["saving_pct"])):
        p, q = by[("plain", name)], by[(robust, name)]
        g = paired_loss(right(p), right(q))  # plain minus robust
        gains.append(-g["loss_pp"])
        lines.append(f"| {name} | {float(p['saving_pct']):.1f} | {100 * float(p['validation_accuracy']):.2f} | "
                     f"{100 * float(q['validation_accuracy']):.2f} | "
                     f"{100 * (float(ex_p['validation_accuracy']) - float(p['validation_accuracy'])):.2f} | "
                     f"{100 * (float(ex_r['validation_accuracy']) - float(q['validation_accuracy'])):.2f} | "
                     f"{-g['loss_pp']:+.2f} [{-g['upper_pp']:+.2f}, {-g['lower_pp']:+.2f}] |")
    approx = [x for n, x in zip(sorted(names, key=lambda n: float(by[("plain", n)]["saving_pct"])), gains) if n != "all-exact"]
    lines += ["", f"Approximate designs: median gain {np.median(approx):+.2f} pp, {sum(x > 0 for x in approx)} of "
              f"{len(approx)} higher on the robust model."]
    (OUT / "scores.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model, marker in (("plain", "o"), (robust, "s")):
        pts = sorted((float(r["saving_pct"]), 100 * float(r["validation_accuracy"])) for r in rows
                     if r["model"] == model and r["design"] != "all-exact")
        ax.scatter(*zip(*pts), marker=marker, label=f"{model}: designs", alpha=0.8)
        ax.axhline(100 * float(by[(model, "all-exact")]["validation_accuracy"]), ls=":", lw=1,
                   color="C0" if model == "plain" else "C1", label=f"{model}: all-exact")
    ax.set_xlabel("multiplier energy saving (%)")
    ax.set_ylabel("validation top-1 (%, 5,000 images)")
    ax.set_ylim(bottom=50)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "scores.png", dpi=120)


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def append_row(path: Path, row: dict) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        if new:
            w.writeheader()
        w.writerow(row)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["noise", "train", "score", "report"])
    p.add_argument("--scale", type=float, default=1.0, help="noise level as a multiple of r_l")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    {"noise": stage_noise, "train": stage_train, "score": stage_score, "report": stage_report}[args.stage](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
