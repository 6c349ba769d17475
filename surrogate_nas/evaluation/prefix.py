"""Reuse of the activations that genomes share: NSGA-II offspring often keep their
parents' first genes, and then the network up to the first changed layer computes
exactly what it computed before.

The twin is cut at the inputs of its approximable layers where one tensor carries the
whole state (every path from input to output runs through it: each cut of a chain, the
block boundaries of a ResNet). A stage's output on a scoring batch is kept, keyed by a
digest of the weights of every layer before the cut (kernels, tables, compensation
offsets and ranges are all layer weights), so a retrained layer or another design can
never be served stale values. The staged network is the same ops on the same values as
the whole one; `tests/test_prefix.py` checks the logits bit for bit.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

ENV = "SURROGATE_NAS_ACTIVATION_CACHE_MB"
DEFAULT_MB = 2048


def budget_bytes() -> int:
    """The memory the kept activations may take: $SURROGATE_NAS_ACTIVATION_CACHE_MB (0: off)."""
    raw = os.environ.get(ENV, str(DEFAULT_MB))
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if not mb >= 0:
        from surrogate_nas.errors import UserError

        raise UserError(f"${ENV}: expected megabytes >= 0, got {raw!r}")
    return int(mb * 2**20)


@dataclass
class Stage:
    run: object  # tf.function: input tensor -> output tensor
    layers: list  # the layers whose weights the stage uses


def model_stages(model: keras.Model, layers) -> list[Stage]:
    """`model` as a chain of stages cut before each of `layers` (its approximable layers,
    in model order) where that is possible; none when no cut is (nothing to reuse)."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        return []
    cuts = []
    for layer in layers[1:]:
        tensor = layer.input
        if not isinstance(tensor, keras.KerasTensor) or any(tensor is c for c in cuts):
            continue
        try:
            keras.Model(tensor, model.outputs[0])
        except ValueError:  # another path bypasses it (a residual branch)
            continue
        cuts.append(tensor)
    if not cuts:
        return []
    bounds = [model.inputs[0], *cuts, model.outputs[0]]
    stages = []
    for a, b in zip(bounds, bounds[1:]):
        sub = keras.Model(a, b)
        spec = tf.TensorSpec([None, *a.shape[1:]], tf.float32)
        stages.append(Stage(tf.function(lambda x, sub=sub: sub(x, training=False), input_signature=[spec],
                                        autograph=False), [layer for layer in sub.layers if layer.weights]))
    return stages


_PROCESS_BYTES = [0]  # kept by every ActivationCache of this process: `max_bytes` caps the sum


class ActivationCache:
    """Logits of scoring batches through the stages, starting from the deepest kept
    activation whose preceding weights are the current ones (least recently used
    activations go first when this process's caches together exceed `max_bytes`)."""

    def __init__(self, stages: list[Stage], max_bytes: int):
        self.stages = stages
        self.max_bytes = max_bytes
        self._kept: OrderedDict = OrderedDict()
        self._bytes = 0
        self.stages_run = 0
        self.stages_reused = 0

    def digests(self) -> tuple[bytes, ...]:
        """Per stage, a digest of its layers' weights (the state its output depends on)."""
        out = []
        for stage in self.stages:
            h = hashlib.blake2b(digest_size=16)
            for layer in stage.layers:
                for w in layer.get_weights():
                    h.update(np.ascontiguousarray(w).tobytes())
            out.append(h.digest())
        return tuple(out)

    def logits(self, images: np.ndarray, key, digests: tuple[bytes, ...]) -> tf.Tensor:
        """`images` (the batch `key` names, e.g. its position in the scoring order) through
        the network whose stage digests are `digests`."""
        n = len(self.stages)
        start, x = 0, None
        for j in range(n - 1, 0, -1):
            found = self._kept.get((digests[:j], key))
            if found is not None:
                self._kept.move_to_end((digests[:j], key))
                start, x = j, found
                break
        if x is None:
            x = tf.constant(images)
        self.stages_reused += start
        for j in range(start, n):
            x = self.stages[j].run(x)
            self.stages_run += 1
            if j + 1 < n:
                self._keep((digests[:j + 1], key), x)
        return x

    def _keep(self, key, tensor: tf.Tensor) -> None:
        size = _size(tensor)
        while self._kept and _PROCESS_BYTES[0] + size > self.max_bytes:
            self._drop(next(iter(self._kept)))
        if _PROCESS_BYTES[0] + size > self.max_bytes:  # the other caches hold the memory
            return
        self._kept[key] = tensor
        self._bytes += size
        _PROCESS_BYTES[0] += size

    def _drop(self, key) -> None:
        size = _size(self._kept.pop(key))
        self._bytes -= size
        _PROCESS_BYTES[0] -= size

    def clear(self) -> None:
        while self._kept:
            self._drop(next(iter(self._kept)))

    def __del__(self):  # an evaluator dropped with activations kept gives their budget back
        _PROCESS_BYTES[0] -= self._bytes


def _size(tensor: tf.Tensor) -> int:
    return int(np.prod(tensor.shape)) * tensor.dtype.size
