"""True evaluation of a genome: top-1 accuracy of the approximate network."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from surrogate_nas.emulation.ops import _device, cpu_vector_isa, exact_float32
from surrogate_nas.evaluation.cache import fingerprint
from surrogate_nas.evaluation.images import (
    ImageSet,
    _digest,
    calibration_set,
    select_images,
)
from surrogate_nas.evaluation.prefix import ActivationCache, budget_bytes, model_stages
from surrogate_nas.network.measure import EVAL_BATCH, check_model_data, cross_entropy

# Images per scoring chunk: a true evaluation scores its images in this fixed random order,
# chunk by chunk (one predict call each), so that early stopping and workers can split
# the work without changing a single prediction.
CHUNK = 250


ORDER_SEED = 0  # seed of that order


# Bump when the emulation's arithmetic changes: it invalidates cached accuracies.
EMULATION_VERSION = "axconv-2"


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
        rule_images: int | None = None,
        prune_k: int | None = None,
        shipped_rules: Path | None = None,
        rule_for=None,
    ):
        """`shipped_rules`: where a model ships its auto rules (designs.LayerDesigns.choose);
        `rule_for`: genomes whose auto-rule entries alone are measured when no whole rule is
        stored (an `evaluate` of one genome needs at most one entry per layer)."""
        from surrogate_nas.evaluation.energy import EnergyModel
        from surrogate_nas.network.card import card_entries
        from surrogate_nas.network.layers import (
            approx_layers,
            approximable_layers,
            layer_info,
        )
        from surrogate_nas.network.twin import build_approx_model

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
        stages = model_stages(self.model, self.layers)
        max_bytes = budget_bytes()
        # scoring batches start from the activations a genome shares with one scored before
        self.activations = ActivationCache(stages, max_bytes) if max_bytes and len(stages) > 1 else None
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
        if self.description["emulation"]["device"] == "CPU":  # CPU kernels differ by vector ISA (float ties)
            self.description["emulation"]["cpu_isa"] = cpu_vector_isa()
        if approximate != "conv":  # absent for conv-only twins: their fingerprints predate the option
            self.description["approximate"] = approximate
        self.designs = self._designs(compensation, calibration, rule_store, quiet, rule_images, prune_k,
                                     shipped_rules, rule_for)
        self.fingerprint = fingerprint(self.description)

    def _designs(self, method: str, calibration: ImageSet | None, rule_store, quiet: bool, rule_images: int | None,
                 prune_k: int | None = None, shipped_rules: Path | None = None, rule_for=None):
        from surrogate_nas.evaluation.designs import RULE_IMAGES, LayerDesigns

        rule_images = rule_images or RULE_IMAGES
        from surrogate_nas.network.measure import channel_code_histograms

        if method != "none" and calibration is None:
            raise ValueError(f"compensation {method!r} needs calibration images")
        exact = self.catalog.exact_index
        self.set_genome((exact,) * len(self.layers), None)
        if calibration is not None:
            hists = channel_code_histograms(self.model, self.layers, calibration.images)
        else:  # pooled over channels: enough for the surrogate's statistics of "none"
            from surrogate_nas.network.card import card_entries

            hists = [np.asarray(h, np.int64)[None, :]
                     for h in card_entries(self.card, "input_code_histograms", self.layer_names)]
        designs = LayerDesigns(self.layers, self.catalog, method, hists, prune_k if method == "auto" else 0)
        if method != "none":
            self.description["compensation"]["calibration_images_sha256"] = _digest(calibration.images, calibration.labels)
        if method == "auto":
            rule_x = calibration.images[:rule_images].astype(np.float32)
            rule_y = calibration.labels[:rule_images]
            loss = lambda: cross_entropy(self._predict(tf.constant(rule_x)), rule_y)  # noqa: E731

            def set_layer(layer, circuit, compensation):
                entry = self.catalog[circuit]
                self.layers[layer].set_multiplier(None if entry.is_exact else entry.lut, compensation=compensation)

            key = designs.rule_key(self.description["model_weights_sha256"], _digest(rule_x, rule_y),
                                   None if self.approximate == "conv" else self.layer_names)
            only = None if rule_for is None else {(layer, int(g)) for genome in rule_for for layer, g in enumerate(genome)}
            designs.choose(loss, set_layer, key, rule_store, quiet, shipped=shipped_rules, only=only)
            self.description["compensation"]["rule"] = fingerprint(designs.rule)
            if designs.partial:  # some entries unknown: a fingerprint no whole-rule evaluator shares
                self.description["compensation"]["rule_entries"] = "partial"
            if designs.prune_k:  # absent when off, as before pruning existed
                self.description["compensation"]["prune_k"] = designs.prune_k
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
        rule_images: int | None = None,
        prune_k: int | None = None,
        rule_for=None,
    ):
        """`float_model`: the model of `model_path`, when already loaded; its auto rules may
        ship beside it (`<model>.compensation-rule-<key>.json`)."""
        from surrogate_nas.data.splits import make_splits
        from surrogate_nas.network.card import (
            card_path,
            check_card,
            load_model,
            read_card,
        )

        model_path = Path(model_path)
        card = read_card(model_path)
        float_model = load_model(model_path) if float_model is None else float_model
        check_card(model_path, card)
        check_model_data(float_model, model_path, data)
        splits = make_splits(data, seed=0)
        calibration = calibration_set(splits, data.source_hash, int(card.get("seed", 0)))
        return cls(float_model, card, catalog, select_images(splits, data.source_hash, split, n_images, seed),
                   compensation=compensation, calibration=calibration, rule_store=rule_store, quiet=quiet,
                   approximate=approximate, card_path=card_path(model_path), rule_images=rule_images,
                   prune_k=prune_k, shipped_rules=model_path.with_suffix(""), rule_for=rule_for)

    def set_genome(self, genome, designs=...) -> None:
        designs = self.designs if designs is ... else designs
        for i, (layer, index) in enumerate(zip(self.layers, genome)):
            if self._current[i] != int(index):
                entry = self.catalog[int(index)]
                compensation = None if designs is None else designs.compensation(i, int(index))
                layer.set_multiplier(None if entry.is_exact else entry.lut, compensation=compensation)
                self._current[i] = int(index)

    def set_designs(self, genome, compensations) -> None:
        """Each layer's circuit with an explicit compensation (None: uncompensated), e.g.
        one re-fitted to retrained weights; `set_genome` of the same genome keeps them."""
        for i, (layer, index, compensation) in enumerate(zip(self.layers, genome, compensations)):
            entry = self.catalog[int(index)]
            layer.set_multiplier(None if entry.is_exact else entry.lut, compensation=compensation)
            self._current[i] = int(index)

    def compensations(self) -> list:
        """The compensation each layer uses now (what `set_designs` restores)."""
        return [layer.compensation for layer in self.layers]

    def logits(self, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """The current network's logits on any images (float pixels, batched)."""
        batch_size = batch_size or self.batch_size
        return np.concatenate([np.asarray(self._predict(tf.constant(images[i:i + batch_size].astype(np.float32))))
                               for i in range(0, len(images), batch_size)])

    def top1(self, images: np.ndarray, labels: np.ndarray) -> float:
        """Top-1 accuracy of the current network on any labelled images."""
        return float(np.mean(np.argmax(self.logits(images), axis=1) == np.asarray(labels)))

    def design_labels(self, genome) -> list[str]:
        """Compensation method of each layer for this genome."""
        return self.designs.labels(genome)

    @property
    def n_images(self) -> int:
        return len(self._labels)

    def correct(self, genome, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, float]:
        """Per image of [start, stop) of the scoring order (`order`): predicted right? And
        seconds. Always the same CHUNK-aligned batches, so any split of the work gives the
        same predictions."""
        began = time.perf_counter()
        self.set_genome(genome)
        stop = self.n_images if stop is None else min(stop, self.n_images)
        parts, lo = [], start
        digests = None if self.activations is None else self.activations.digests()
        while lo < stop:
            hi = min(stop, (lo // CHUNK + 1) * CHUNK, lo + self.batch_size)
            if digests is None:
                logits = self._predict(tf.constant(self._images[lo:hi]))
            else:
                logits = self.activations.logits(self._images[lo:hi], (lo, hi), digests)
            parts.append(np.argmax(np.asarray(logits), axis=1) == self._labels[lo:hi])
            lo = hi
        right = np.concatenate(parts) if parts else np.zeros(0, bool)
        return right, time.perf_counter() - began

    def count(self, genome, start: int = 0, stop: int | None = None) -> tuple[int, float]:
        """Correct predictions on images [start, stop) of the scoring order, and seconds
        (the popcount of `correct`: any split of the work adds up exactly)."""
        right, seconds = self.correct(genome, start, stop)
        return int(right.sum()), seconds

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

        exact = self.catalog.exact_index
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
