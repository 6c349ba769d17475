"""Retraining recipes for approximate designs (issue 16): distillation from the
all-exact 8-bit twin, warm-up + cosine schedules, per-epoch evaluation and checkpoints
(a killed retraining resumes at its last finished epoch), keep-the-better, and choosing
candidates across the band of energy saving.

What each image set does (keep it that way when using this module):
- training images (the training split, or a stratified subset) train the weights; the
  teacher's logits are computed on them;
- the *tuning* images (the 2,000-image search set) pick the best epoch after every epoch;
- the *choosing* images (all 5,000 validation images) decide between the retrained and
  the un-tuned design (`keep_better`), and between designs;
- test images only report.

Retraining never changes a design's hardware: its energy is the same before and after,
only the stored weights (and the compensation re-fitted to them) move.

The recipe, schedule and loss are in `network.retraining`.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from surrogate_nas.network.retraining import (  # noqa: F401
    RECIPES,
    ClipRange,
    DistillationLoss,
    FeatureMatch,
    Recipe,
    WarmupCosine,
    WeightAverage,
    make_optimizer,
)

TEACHER_VERSION = "teacher-1"  # bump when how the teacher's logits are computed changes


# ------------------------------------------------------------------ teacher


def _weights_digest(variables) -> str:
    h = hashlib.sha256()
    for v in variables:
        a = np.ascontiguousarray(np.asarray(v))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _exact_genome(evaluator) -> tuple[int, ...]:
    exact = evaluator.catalog.index(evaluator.catalog.exact.name)
    return (exact,) * len(evaluator.layers)


def set_all_exact(evaluator) -> None:
    """The all-exact 8-bit twin, no compensation (the network the search calls all-exact)."""
    evaluator.set_genome(_exact_genome(evaluator), None)


def teacher_key(evaluator, images: np.ndarray) -> str:
    """What the teacher's logits depend on: the network's current weights, its input
    ranges, the catalog and compensation fingerprints, the emulation and the images."""
    from surrogate_nas.evaluation.cache import fingerprint
    from surrogate_nas.evaluation.images import _digest

    desc = evaluator.description
    return fingerprint({
        "version": TEACHER_VERSION,
        "weights": _weights_digest(evaluator.model.trainable_variables),
        "input_ranges": desc["input_ranges"],
        "catalog": desc["catalog"],
        "compensation": desc["compensation"],
        "emulation": desc["emulation"],
        "images": _digest(images),
    })


def _all_exact_logits(evaluator, images: np.ndarray, batch: int = 500) -> np.ndarray:
    current = list(evaluator._current)
    set_all_exact(evaluator)
    try:
        return np.concatenate([np.asarray(evaluator._predict(tf.constant(images[i:i + batch].astype(np.float32))))
                               for i in range(0, len(images), batch)]).astype(np.float32)
    finally:
        # back to the design (with its compensation)
        evaluator._current = [None] * len(evaluator.layers)
        if all(g is not None for g in current):
            evaluator.set_genome(current)


def teacher_logits(evaluator, images: np.ndarray, cache_dir: Path | None, quiet: bool = True) -> np.ndarray:
    """Logits of the all-exact 8-bit twin of `evaluator.model` (its current weights) on
    `images`, computed once and kept in `cache_dir/teacher-<key>.npy`: reused by every
    design and run of the same model, catalog, compensation and images."""
    key = teacher_key(evaluator, images)
    path = None if cache_dir is None else Path(cache_dir) / f"teacher-{key[:24]}.npy"
    if path is not None and path.is_file():
        logits = np.load(path)
        if logits.shape == (len(images), int(evaluator.model.output_shape[-1])):
            return logits
    start = time.time()
    logits = _all_exact_logits(evaluator, images)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        import os

        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, logits)
        tmp.replace(path)
    if not quiet:
        print(f"teacher logits of {len(images)} images: {time.time() - start:.0f} s"
              + (f" (cached in {path.name})" if path else ""), flush=True)
    return logits


def online_teacher(evaluator):
    """A frozen all-exact 8-bit copy of the evaluator's network (same weights), for
    distillation on augmented batches."""
    from surrogate_nas.emulation.layers import AxConv2D

    teacher = keras.models.clone_model(evaluator.model)
    teacher.name = f"{evaluator.model.name}_teacher"  # the training model holds both; Keras wants unique names
    teacher.set_weights(evaluator.model.get_weights())
    for layer in teacher.layers:
        if isinstance(layer, AxConv2D):
            layer.set_multiplier(None)
    teacher.trainable = False
    return teacher


# ------------------------------------------------------------------ training


@dataclass
class RetrainResult:
    recipe: dict
    history: list[dict]  # epoch 0 = before retraining
    best_epoch: int  # by accuracy on the tuning images; 0 = none beat the un-tuned design
    kept: str  # 'retrained' or 'untuned' (decided on the choosing images)
    compensation_refit: bool | None
    choosing_before: float | None = None
    choosing_after: float | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def _save_npz(path: Path, **arrays) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def _write_json(path: Path, doc) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


def _get(variables) -> dict:
    return {f"v{i}": np.asarray(v.numpy() if hasattr(v, "numpy") else v) for i, v in enumerate(variables)}


def _set(variables, arrays) -> None:
    if len(arrays) != len(variables):
        raise ValueError(f"checkpoint holds {len(arrays)} arrays for {len(variables)} variables")
    for i, v in enumerate(variables):
        v.assign(arrays[f"v{i}"])


def _rng_variables(model) -> list:
    """The states of the model's random generators (Dropout): part of a checkpoint, so
    that a resumed epoch draws the same masks as an uninterrupted one."""
    return [v for v in model.variables if "seed_generator" in v.path]


def _epoch_dataset(x, y, idx, teacher, recipe: Recipe, n_classes: int, seed: int, epoch: int):
    """The epoch's batches: a permutation fixed by (seed, epoch), so that a resumed run
    sees the same batches as an uninterrupted one. Without augmentation: ((x, t), y) with
    the cached teacher's logits t; with it, `_augmented` (stateless crop/flip)."""
    b = min(recipe.batch_size, len(idx))
    perm = idx[np.random.default_rng([seed, epoch]).permutation(len(idx))]
    n = (len(perm) // b) * b
    if recipe.augment:
        return _augmented(x[perm[:n]], tf.one_hot(y[perm[:n]].astype(np.int32), n_classes), b, seed, epoch)
    xs = tf.data.Dataset.from_tensor_slices(x[perm[:n]]).map(lambda i: tf.cast(i, tf.float32))
    ys = tf.data.Dataset.from_tensor_slices(tf.one_hot(y[perm[:n]].astype(np.int32), n_classes))
    if teacher is not None:
        xs = tf.data.Dataset.zip((xs, tf.data.Dataset.from_tensor_slices(teacher[perm[:n]])))
    return tf.data.Dataset.zip((xs, ys)).batch(b).prefetch(2)


def _augmented(x, y, b, seed: int, epoch: int):
    """`train.augment_dataset`'s crop/flip (reflect-pad-4 random crops, horizontal flips),
    drawn with stateless ops seeded by (seed, epoch, image position): a resumed epoch
    draws the same crops and flips as an uninterrupted one."""
    shape = [int(d) for d in x.shape[1:]]
    pad = max(0, min(4, shape[0] - 1, shape[1] - 1))
    base = seed * 100003 + epoch

    def aug(img, label, i):
        img = tf.pad(tf.cast(img, tf.float32), [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
        s = tf.stack([tf.constant(base, tf.int64), tf.cast(i, tf.int64)])
        img = tf.image.stateless_random_crop(img, shape, seed=s)
        img = tf.image.stateless_random_flip_left_right(img, seed=s + 1)
        return img, label

    ds = tf.data.Dataset.from_tensor_slices((x, y, tf.range(len(x), dtype=tf.int64)))
    return ds.map(aug, num_parallel_calls=tf.data.AUTOTUNE).batch(b).prefetch(2)


def _training_model(student, recipe: Recipe, teacher_net, layers=()):
    """What `fit` trains: the student alone (cross-entropy), the student next to cached
    teacher logits (an input), or the student next to a frozen online teacher; with a
    feature weight, `FeatureMatch` also compares the outputs of `layers` (the student's
    approximate layers) with the teacher's layers of the same names."""
    if not recipe.distills and not recipe.feature_weight:
        return student
    c = int(student.output_shape[-1])
    x = keras.Input(student.input_shape[1:])

    def taps(net, names):
        return keras.Model(net.inputs, [net.outputs[0], *[net.get_layer(n).output for n in names]],
                           name=f"{net.name}_taps")(x, training=False if net is teacher_net else None)

    if not recipe.online_teacher:
        t = keras.Input((c,))
        out = student(x)
        return keras.Model([x, t], keras.layers.Concatenate()([out[0] if isinstance(out, (list, tuple)) else out, t]))
    names = [layer.name for layer in layers] if recipe.feature_weight else []
    s_out, *s_taps = taps(student, names)
    t_out, *t_taps = taps(teacher_net, names)
    out = keras.layers.Concatenate()([s_out, t_out]) if recipe.distills else s_out
    if names:
        out = FeatureMatch(recipe.feature_weight)([out, *[a for pair in zip(s_taps, t_taps) for a in pair]])
    return keras.Model(x, out)


def retrain(evaluator, genome, splits, recipe: Recipe, workdir: Path, *, calibration=None, choosing=None,
            teacher_cache: Path | None = None, seed: int = 0, verbose: int = 1, callbacks=(), refit: bool = True,
            quiet: bool = False, until: int | None = None) -> RetrainResult:
    """Retrain `evaluator.model` in place with `genome`'s designs following `recipe`.

    After every epoch: accuracy on the evaluator's images (the tuning images: the search
    set) and a checkpoint in `workdir` (weights, optimizer state with its step, history,
    best weights so far); a retraining killed mid-way resumes at its last finished epoch
    and ends with the same history as an uninterrupted one. At the end the best epoch's
    weights (tuning images) are restored, the compensation is re-fitted when that lowers
    the cross-entropy on the calibration images (training split; `choose_refit`),
    and, with `choosing` (an ImageSet: all validation images), the un-tuned design is kept
    unless the retrained one is more accurate on those images (`keep_better`).
    The evaluator must be private to this design. `until`: stop after this epoch (a later
    call resumes there); the result then holds the best epoch so far (`extra["finished"]`
    says whether all of the recipe's epochs ran)."""
    from surrogate_nas.data.splits import training_subset

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    began = time.time()
    genome = tuple(int(g) for g in genome)
    evaluator._current = [None] * len(evaluator.layers)
    evaluator.set_genome(genome)
    model = evaluator.model
    methods = evaluator.design_labels(genome)
    n_classes = int(model.output_shape[-1])
    idx = training_subset(splits.y_train, recipe.train_images, seed)
    b = min(recipe.batch_size, len(idx))
    steps = len(idx) // b

    untuned = _get(model.trainable_variables)
    ranges = [ClipRange.around(layer.kernel.numpy(), recipe.weight_clip) for layer in evaluator.layers] \
        if recipe.weight_clip else []
    teacher = teacher_net = None
    if recipe.online_teacher:
        teacher_net = online_teacher(evaluator)
    elif recipe.distills:
        teacher = np.zeros((len(splits.y_train), n_classes), np.float32)
        teacher[idx] = teacher_logits(evaluator, splits.x_train, teacher_cache, quiet)[idx] if teacher_cache is not None \
            else _all_exact_logits(evaluator, splits.x_train[idx])

    for layer in evaluator.layers:
        layer.set_table_gradient(recipe.gradient_rank or None, recipe.gradient_halfwidth)
    keras.utils.set_random_seed(seed)
    train_model = _training_model(model, recipe, teacher_net, evaluator.layers)
    optimizer = make_optimizer(recipe, steps)
    train_model.compile(optimizer=optimizer, loss=DistillationLoss(n_classes, recipe.alpha, recipe.temperature,
                                                                   recipe.label_smoothing))
    optimizer.build(train_model.trainable_variables)
    average = WeightAverage(model.trainable_variables, recipe.ema) if recipe.ema else None
    averaged = [] if average is None else average.state

    state_path, best_path, hist_path = workdir / "state.npz", workdir / "best.npz", workdir / "history.json"
    doc = json.loads(hist_path.read_text()) if hist_path.is_file() else None
    if doc is not None and doc.get("recipe") != recipe.to_dict():
        raise ValueError(f"{workdir}: checkpoint of another recipe ({doc.get('recipe', {}).get('name')})")
    if doc is not None and state_path.is_file():
        with np.load(state_path) as z:
            _set(model.trainable_variables, {k[2:]: z[k] for k in z.files if k.startswith("w_")})
            _set(optimizer.variables, {k[2:]: z[k] for k in z.files if k.startswith("o_")})
            _set(_rng_variables(train_model), {k[2:]: z[k] for k in z.files if k.startswith("r_")})
            _set(averaged, {k[2:]: z[k] for k in z.files if k.startswith("a_")})
        history = doc["history"]
        if not quiet:
            print(f"resuming {workdir.name} after epoch {history[-1]['epoch']}", flush=True)
    else:
        history = [{"epoch": 0, "tune_accuracy": evaluator.accuracy(genome), "loss": None, "seconds": 0.0, "lr_end": None}]
        _save_npz(best_path, **{f"w_{k}": v for k, v in untuned.items()})
        _write_json(hist_path, {"recipe": recipe.to_dict(), "genome": list(genome), "history": history})

    for i, layer in enumerate(evaluator.layers):  # after epoch 0: that is the design as searched
        layer.kernel.constraint = ranges[i] if ranges else None  # None also clears one a killed call left
        if ranges:
            layer.kernel.assign(ranges[i](layer.kernel))

    last = recipe.epochs if until is None else min(recipe.epochs, until)
    for epoch in range(len(history), last + 1):
        ds = _epoch_dataset(splits.x_train, splits.y_train, idx, teacher, recipe, n_classes, seed, epoch)
        start = time.time()
        fit = train_model.fit(ds, initial_epoch=epoch - 1, epochs=epoch, verbose=verbose,
                              callbacks=[*callbacks, *([average] if average else [])], shuffle=False)
        seconds = time.time() - start
        with average.swapped_in() if average else nullcontext():  # scored and kept: the average, when there is one
            accuracy = evaluator.accuracy(genome)
            lr = optimizer.learning_rate
            history.append({"epoch": epoch, "tune_accuracy": accuracy, "loss": float(fit.history["loss"][-1]),
                            "seconds": seconds, "lr_end": float(np.asarray(lr))})
            best = max(history, key=lambda h: (h["tune_accuracy"], -h["epoch"]))
            if best["epoch"] == epoch:
                _save_npz(best_path, **{f"w_{k}": v for k, v in _get(model.trainable_variables).items()})
        _save_npz(state_path, **{f"w_{k}": v for k, v in _get(model.trainable_variables).items()},
                  **{f"o_{k}": v for k, v in _get(optimizer.variables).items()},
                  **{f"r_{k}": v for k, v in _get(_rng_variables(train_model)).items()},
                  **{f"a_{k}": v for k, v in _get(averaged).items()})
        _write_json(hist_path, {"recipe": recipe.to_dict(), "genome": list(genome), "history": history})
        if not quiet:
            print(f"{workdir.name} epoch {epoch}/{recipe.epochs}: tuning accuracy {accuracy:.4f} ({seconds:.0f} s)",
                  flush=True)

    for layer in evaluator.layers:
        layer.kernel.constraint = None
    # best epoch on the tuning images (epoch 0, the un-tuned design, when no epoch beats it)
    best = max(history, key=lambda h: (h["tune_accuracy"], -h["epoch"]))
    with np.load(best_path) as z:
        _set(model.trainable_variables, {k[2:]: z[k] for k in z.files if k.startswith("w_")})
    refitted = None
    if refit and calibration is not None and best["epoch"] > 0:
        refitted = choose_refit(evaluator, genome, methods, calibration)
    result = RetrainResult(recipe.to_dict(), history, best["epoch"], "retrained" if best["epoch"] > 0 else "untuned",
                           refitted, seconds=time.time() - began,
                           extra={"finished": history[-1]["epoch"] >= recipe.epochs})
    if choosing is not None:
        result.choosing_before, result.choosing_after, kept = keep_better(evaluator, genome, untuned, choosing)
        result.kept = kept
    return result


def refit_compensation(evaluator, genome, methods: list[str], calibration) -> None:
    """Compensation for the new weights: histograms and kernel codes measured again,
    each layer keeping its method."""
    from surrogate_nas.evaluation.designs import LayerDesigns
    from surrogate_nas.network.measure import channel_code_histograms

    exact = evaluator.catalog.exact_index
    evaluator.set_genome((exact,) * len(evaluator.layers), None)
    hists = channel_code_histograms(evaluator.model, evaluator.layers, calibration.images)
    designs = LayerDesigns(evaluator.layers, evaluator.catalog, "none", hists)
    evaluator.set_designs(genome, [designs.compensation(i, index, method)
                                   for i, (index, method) in enumerate(zip(genome, methods))])


def choose_refit(evaluator, genome, methods: list[str], calibration) -> bool:
    """Re-fit the compensation to the trained weights, or keep the offsets it trained
    with: training also moved the biases to absorb the old offsets, so a re-fit can
    double-correct. Decided by cross-entropy on the calibration images (training split),
    never on validation or test. Returns whether the re-fit was kept."""
    from surrogate_nas.network.measure import cross_entropy

    def loss():
        return cross_entropy(evaluator.logits(calibration.images, 500), calibration.labels)

    kept = evaluator.compensations()
    before = loss()
    refit_compensation(evaluator, genome, methods, calibration)
    if loss() <= before:
        return True
    evaluator.set_designs(genome, kept)
    return False


def restore_untuned(evaluator, genome, untuned: dict) -> None:
    """The design as it was before retraining: its weights and its original compensation."""
    _set(evaluator.model.trainable_variables, untuned)
    evaluator._current = [None] * len(evaluator.layers)
    evaluator.set_genome(genome)


def image_accuracy(evaluator, image_set) -> float:
    from surrogate_nas.network.measure import top1

    return top1(evaluator._predict, image_set.images.astype(np.float32), np.asarray(image_set.labels))


def keep_better(evaluator, genome, untuned: dict, choosing) -> tuple[float, float, str]:
    """Keep the retrained network only when it is more accurate than the un-tuned design
    on the choosing images; otherwise restore the un-tuned one. Returns (accuracy before,
    accuracy after, 'retrained' | 'untuned'); the kept network is never worse there."""
    after = image_accuracy(evaluator, choosing)
    trained = _get(evaluator.model.trainable_variables)
    state = [(layer.bias_offset.numpy().copy(), layer.table.numpy().astype(np.uint16), layer.compensation)
             for layer in evaluator.layers]
    restore_untuned(evaluator, genome, untuned)
    before = image_accuracy(evaluator, choosing)
    if after > before:
        _set(evaluator.model.trainable_variables, trained)
        for layer, (offset, table, compensation) in zip(evaluator.layers, state):
            layer._set_table(table)
            layer.table.assign(table.astype(np.int32))
            layer.bias_offset.assign(offset)
            layer.compensation = compensation
        evaluator._current = list(genome)
        return before, after, "retrained"
    return before, after, "untuned"
