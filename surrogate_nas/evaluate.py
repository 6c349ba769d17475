"""True evaluation of a genome: top-1 accuracy of the approximate network."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from surrogate_nas.cache import fingerprint
from surrogate_nas.errors import UserError

EVAL_BATCH = 500
# Images per scoring chunk: a true evaluation scores its images in this fixed random order,
# chunk by chunk (one predict call each), so that early stopping and workers can split
# the work without changing a single prediction.
CHUNK = 250
ORDER_SEED = 0  # seed of that order
# Bump when the emulation's arithmetic changes: it invalidates cached accuracies.
EMULATION_VERSION = "axconv-2"
CALIBRATION_IMAGES = 2000  # training images behind the compensation statistics


def top1(predict, images: np.ndarray, labels: np.ndarray, batch_size: int = EVAL_BATCH) -> float:
    """Top-1 accuracy; `predict` maps a float32 batch to logits."""
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = predict(tf.constant(images[start : start + batch_size], tf.float32))
        correct += int(np.sum(np.argmax(np.asarray(logits), axis=1) == labels[start : start + batch_size]))
    return correct / max(1, len(images))


SCORED_SPLITS = ("validation", "test")  # what a genome is scored on (the data's folders: data.SOURCE_SPLITS)
SPLITS = SCORED_SPLITS  # the former name


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class ImageSet:
    """The images a genome is scored on, and what identifies them for the cache."""

    images: np.ndarray
    labels: np.ndarray
    split: str
    indices: np.ndarray  # into the split
    data_sha256: str

    @property
    def description(self) -> dict:
        return {
            "split": self.split,
            "n_images": int(len(self.labels)),
            "indices_sha256": hashlib.sha256(self.indices.astype(np.int64).tobytes()).hexdigest(),
            "data_sha256": self.data_sha256,
            "images_sha256": _digest(self.images, self.labels),
        }


def select_images(splits, data_sha256: str, split: str = "validation", n_images: int | None = 2000, seed: int = 0) -> ImageSet:
    """The search set (a stratified validation subset) or a test subset/the full test set."""
    from surrogate_nas.data import search_subset

    if split not in SCORED_SPLITS:
        raise UserError(f"--split: expected one of {', '.join(SCORED_SPLITS)}, got {split!r}")
    x, y = (splits.x_val, splits.y_val) if split == "validation" else (splits.x_test, splits.y_test)
    if n_images is None or n_images == len(y):
        idx = np.arange(len(y))
    else:
        if not 1 <= n_images <= len(y):
            raise UserError(f"--images: must be between 1 and {len(y)} for the {split} split, got {n_images}")
        idx = search_subset(y, size=n_images, seed=seed)
    return ImageSet(x[idx], np.asarray(y[idx]), split, idx, data_sha256)


def calibration_set(splits, data_sha256: str, seed: int = 0) -> ImageSet:
    """The training images behind calibration: the same ones `train` measured the
    input ranges on (seeded, so the card's `calibration_indices_sha256` matches)."""
    from surrogate_nas.training_job import calibration_indices

    idx = calibration_indices(len(splits.y_train), seed)
    return ImageSet(splits.x_train[idx], np.asarray(splits.y_train[idx]), "train", idx, data_sha256)


def _cross_entropy(logits, labels: np.ndarray) -> float:
    logits = np.asarray(logits, np.float64)
    logits = logits - logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-np.mean(log_p[np.arange(len(labels)), labels]))


def exact_float32() -> None:
    """Keep the emulation exact on every device. It sums integer table values in float32,
    so TF32 (on by default on Ampere and newer GPUs: ~1e-3 relative error in every conv)
    must be off; on a GPU the ops it uses must also be deterministic, or the same genome
    could flip an argmax between two evaluations."""
    tf.config.experimental.enable_tensor_float_32_execution(False)
    if tf.config.list_physical_devices("GPU"):
        tf.config.experimental.enable_op_determinism()


def _device() -> str:
    gpus = tf.config.list_logical_devices("GPU")
    return "GPU" if gpus else "CPU"


def check_model_data(float_model, model_path: Path, data) -> None:
    """The model must take the data's images and give one score per class."""
    shape_in, shape_out = tuple(float_model.input_shape[1:]), tuple(float_model.output_shape[1:])
    shape_data = tuple(int(d) for d in data.x_train.shape[1:])
    classes = len(getattr(data, "classes", None) or ()) or int(max(data.y_train.max(), data.y_test.max())) + 1
    if shape_in != shape_data:
        raise UserError(f"--model {model_path}: takes images of shape {shape_in}; the data ({data.source}) "
                        f"has {shape_data}")
    if shape_out != (classes,):
        raise UserError(f"--model {model_path}: gives outputs of shape {shape_out}; the data ({data.source}) "
                        f"has {classes} classes")


@dataclass(frozen=True)
class Score:
    genome: tuple[int, ...]
    accuracy: float
    energy: float
    n_images: int
    seconds: float


class Evaluator:
    """Scores genomes with one approximate model built once; swapping genomes only
    reassigns table variables (no rebuild, no retrace)."""

    def __init__(
        self,
        float_model,
        card: dict,
        catalog,
        image_set: ImageSet,
        batch_size: int = EVAL_BATCH,
        compensation: str = "none",
        calibration: ImageSet | None = None,
        rule_store: Path | None = None,
        quiet: bool = True,
        approximate: str = "conv",
        card_path: Path | None = None,
    ):
        from surrogate_nas.energy import EnergyModel
        from surrogate_nas.model import approx_layers, approximable_layers, build_approx_model, layer_info
        from surrogate_nas.modelcard import card_entries

        exact_float32()
        self.catalog = catalog
        self.image_set = image_set
        self.batch_size = batch_size
        self.card = card
        self.approximate = approximate
        float_layers = approximable_layers(float_model, approximate)
        self.layer_names = [layer.name for layer in float_layers]
        ranges = [tuple(r) for r in card_entries(card, "input_ranges", self.layer_names, card_path)]
        self.input_ranges = ranges
        self.model = build_approx_model(float_model, ranges, approximate=approximate)
        self.layers = approx_layers(self.model, self.layer_names)
        self.infos = layer_info(float_model, layers=float_layers)
        self.layer_kinds = [info.kind for info in self.infos]
        self.energy_model = EnergyModel.from_catalog([i.macs for i in self.infos], catalog)
        self._current: list[int | None] = [None] * len(self.layers)
        self._predict = tf.function(
            lambda x: self.model(x, training=False),
            input_signature=[tf.TensorSpec([None, *float_model.input_shape[1:]], tf.float32)],
            autograph=False,
        )
        self.order = np.random.default_rng(ORDER_SEED).permutation(len(image_set.labels))
        self._images = image_set.images[self.order].astype(np.float32)
        self._labels = np.asarray(image_set.labels)[self.order]
        weights = hashlib.sha256()
        for w in float_model.get_weights():
            weights.update(np.ascontiguousarray(w).tobytes())
        self.description = {
            "model_weights_sha256": weights.hexdigest(),
            "input_ranges": [list(map(float, r)) for r in ranges],
            "images": image_set.description,
            "catalog": catalog.fingerprint,
            "emulation": {"method": EMULATION_VERSION, "quantization": "calibrated", "bits": 8, "max_rank": None,
                          "tensorflow": tf.__version__, "device": _device()},
            "compensation": {"method": compensation},
        }
        if approximate != "conv":  # absent for conv-only twins: their fingerprints predate the option
            self.description["approximate"] = approximate
        self.designs = self._designs(compensation, calibration, rule_store, quiet)
        self.fingerprint = fingerprint(self.description)

    def _designs(self, method: str, calibration: ImageSet | None, rule_store, quiet: bool):
        from surrogate_nas.designs import RULE_IMAGES, LayerDesigns, channel_code_histograms

        if method != "none" and calibration is None:
            raise ValueError(f"compensation {method!r} needs calibration images")
        exact = self.catalog.index(self.catalog.exact.name)
        self.set_genome((exact,) * len(self.layers), None)
        if calibration is not None:
            hists = channel_code_histograms(self.model, self.layers, calibration.images)
        else:  # pooled over channels: enough for the surrogate's statistics of "none"
            from surrogate_nas.modelcard import card_entries

            hists = [np.asarray(h, np.int64)[None, :]
                     for h in card_entries(self.card, "input_code_histograms", self.layer_names)]
        designs = LayerDesigns(self.layers, self.catalog, method, hists)
        if method != "none":
            self.description["compensation"]["calibration_images_sha256"] = _digest(calibration.images, calibration.labels)
        if method == "auto":
            rule_x = calibration.images[:RULE_IMAGES].astype(np.float32)
            rule_y = calibration.labels[:RULE_IMAGES]
            loss = lambda: _cross_entropy(self._predict(tf.constant(rule_x)), rule_y)  # noqa: E731

            def set_layer(layer, circuit, compensation):
                entry = self.catalog[circuit]
                self.layers[layer].set_multiplier(None if entry.is_exact else entry.lut, compensation=compensation)

            key = designs.rule_key(self.description["model_weights_sha256"], _digest(rule_x, rule_y),
                                   None if self.approximate == "conv" else self.layer_names)
            designs.choose(loss, set_layer, key, rule_store, quiet)
            self.description["compensation"]["rule"] = fingerprint(designs.rule)
        self._current = [None] * len(self.layers)
        return designs

    @classmethod
    def from_paths(
        cls,
        model_path: Path,
        catalog,
        data,
        split: str = "validation",
        n_images: int | None = 2000,
        seed: int = 0,
        compensation: str = "auto",
        rule_store: Path | None = None,
        quiet: bool = False,
        approximate: str = "conv",
        float_model=None,
    ):
        """`float_model`: the model of `model_path`, when already loaded."""
        from surrogate_nas.data import make_splits
        from surrogate_nas.modelcard import card_path, check_card, load_model, read_card

        model_path = Path(model_path)
        card = read_card(model_path)
        float_model = load_model(model_path) if float_model is None else float_model
        check_card(model_path, card)
        check_model_data(float_model, model_path, data)
        splits = make_splits(data, seed=0)
        calibration = calibration_set(splits, data.source_hash, int(card.get("seed", 0)))
        return cls(float_model, card, catalog, select_images(splits, data.source_hash, split, n_images, seed),
                   compensation=compensation, calibration=calibration, rule_store=rule_store, quiet=quiet,
                   approximate=approximate, card_path=card_path(model_path))

    def set_genome(self, genome, designs=...) -> None:
        designs = self.designs if designs is ... else designs
        for i, (layer, index) in enumerate(zip(self.layers, genome)):
            if self._current[i] != int(index):
                entry = self.catalog[int(index)]
                compensation = None if designs is None else designs.compensation(i, int(index))
                layer.set_multiplier(None if entry.is_exact else entry.lut, compensation=compensation)
                self._current[i] = int(index)

    def design_labels(self, genome) -> list[str]:
        """Compensation method of each layer for this genome."""
        return self.designs.labels(genome)

    @property
    def n_images(self) -> int:
        return len(self._labels)

    def count(self, genome, start: int = 0, stop: int | None = None) -> tuple[int, float]:
        """Correct predictions on images [start, stop) of the scoring order, and seconds.
        Always the same CHUNK-aligned batches, so any split of the work adds up exactly."""
        began = time.perf_counter()
        self.set_genome(genome)
        stop = self.n_images if stop is None else min(stop, self.n_images)
        correct, lo = 0, start
        while lo < stop:
            hi = min(stop, (lo // CHUNK + 1) * CHUNK, lo + self.batch_size)
            logits = self._predict(tf.constant(self._images[lo:hi]))
            correct += int(np.sum(np.argmax(np.asarray(logits), axis=1) == self._labels[lo:hi]))
            lo = hi
        return correct, time.perf_counter() - began

    def accuracy(self, genome) -> float:
        return self.count(genome)[0] / max(1, self.n_images)

    def energy(self, genome) -> float:
        return self.energy_model(genome)

    def score(self, genome) -> Score:
        start = time.perf_counter()
        accuracy = self.accuracy(genome)
        return Score(tuple(int(g) for g in genome), accuracy, self.energy(genome), self.n_images, time.perf_counter() - start)

    def layer_statistics(self, n_images: int = 500) -> dict:
        """Per approximable layer of the all-exact twin: taps K, input/kernel scales, output std."""
        import keras

        exact = self.catalog.index(self.catalog.exact.name)
        self.set_genome((exact,) * len(self.layers))
        taps = keras.Model(self.model.inputs, [layer.output for layer in self.layers])
        outs = taps(tf.constant(self.image_set.images[:n_images].astype(np.float32)), training=False)
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        stats = {"taps": [], "scale_in": [], "scale_w": [], "output_std": []}
        for layer, out, (lo, hi) in zip(self.layers, outs, self.input_ranges):
            kernel = layer.kernel.numpy()
            stats["taps"].append(int(np.prod(kernel.shape[:3])))
            stats["scale_in"].append((hi - lo) / 255.0)
            stats["scale_w"].append(float(kernel.max() - kernel.min()) / 255.0)
            stats["output_std"].append(float(np.std(out.numpy())))
        return stats
