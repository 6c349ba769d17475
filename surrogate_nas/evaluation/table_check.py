"""`evaluate --check`: does each approximate table of a genome change its layers' outputs?

"Different multipliers give the same accuracy" is a common report from users of
tf-approximate; the usual cause is a table that never reaches the op. Here every layer
that uses a non-exact circuit is run twice on the same inputs (its input activations in
the genome's own network): once as the genome's design has it (the circuit's table,
remapped by a tuning compensation) and once with the exact table, the design's bias
offsets kept in both, so that a difference can only come from the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from surrogate_nas.errors import UserError

CHECK_IMAGES = 32  # images of `evaluate --check` unless --images says otherwise

COMPARED = ("each layer run on its inputs in this genome's network, once with the circuit's table as the design "
            "has it (compensation included) and once with the exact table, the design's bias offsets in both")


@dataclass(frozen=True)
class LayerCheck:
    circuit: str
    layer: str
    compensation: str  # the design's method label for this layer
    equal_to_exact: bool  # the circuit's table is the exact product: nothing to see
    n_outputs: int = 0
    n_differ: int = 0
    max_abs_difference: float = 0.0

    @property
    def share_differ(self) -> float:
        return self.n_differ / self.n_outputs if self.n_outputs else 0.0

    @property
    def unused(self) -> bool:
        """A non-exact table that changed no output: not in effect."""
        return not self.equal_to_exact and self.n_differ == 0

    def as_dict(self) -> dict:
        status = "equal to exact" if self.equal_to_exact else "unused" if self.unused else "changes outputs"
        return {"circuit": self.circuit, "layer": self.layer, "compensation": self.compensation, "status": status,
                "n_outputs": self.n_outputs, "n_differ": self.n_differ, "share_differ": self.share_differ,
                "max_abs_difference": self.max_abs_difference}


def compare_outputs(with_table: np.ndarray, with_exact: np.ndarray, unit: float) -> tuple[int, float]:
    """(outputs that differ, max |difference|). A table changes an output by whole product
    units (s_in * s_w per unit of the summed table entries), float rounding by far less:
    an output differs when it moved by at least half a unit."""
    diff = np.abs(np.asarray(with_table, np.float64) - np.asarray(with_exact, np.float64))
    return int(np.count_nonzero(diff >= 0.5 * unit)), float(diff.max(initial=0.0))


def _layer_inputs(evaluator, images: np.ndarray) -> list[np.ndarray]:
    """Every approximate layer's input on `images`, in the network as set now."""
    import keras
    import tensorflow as tf

    taps = keras.Model(evaluator.model.inputs, [layer.input for layer in evaluator.layers])
    outs = taps(tf.constant(images.astype(np.float32)), training=False)
    return [np.asarray(o) for o in (outs if isinstance(outs, (list, tuple)) else [outs])]


def check_tables(evaluator, genome, images: np.ndarray) -> list[LayerCheck]:
    """One `LayerCheck` per layer whose circuit is not the catalog's exact reference (a
    circuit whose table equals a*b is marked, not run). Leaves the evaluator's network as
    the genome's design."""
    import tensorflow as tf

    catalog = evaluator.catalog
    genome = [int(g) for g in genome]
    evaluator.set_genome(genome)
    labels = evaluator.design_labels(genome)
    compensations = evaluator.compensations()
    inputs = None
    checks = []
    try:
        for i, (layer, index) in enumerate(zip(evaluator.layers, genome)):
            entry = catalog[index]
            if index == catalog.exact_index:
                continue
            if entry.is_exact:
                checks.append(LayerCheck(entry.name, layer.name, labels[i], True))
                continue
            if inputs is None:
                inputs = _layer_inputs(evaluator, images)
            x = tf.constant(inputs[i])
            with_table = np.asarray(layer(x))
            offset = layer.bias_offset.numpy()
            layer.set_multiplier(None)
            layer.bias_offset.assign(offset)
            with_exact = np.asarray(layer(x))
            s_in, s_w = layer.scales()
            n_differ, max_diff = compare_outputs(with_table, with_exact, s_in * s_w)
            checks.append(LayerCheck(entry.name, layer.name, labels[i], False, int(with_table.size), n_differ,
                                     max_diff))
    finally:  # the design again
        evaluator.set_designs(genome, compensations)
    return checks


def format_check(checks: list[LayerCheck], n_images: int, split: str) -> str:
    if not checks:
        return f"Tables in effect ({n_images} {split} images): no approximate table in this genome"
    width = max(len(c.circuit) for c in checks)
    layer_width = max(len(c.layer) for c in checks)
    lines = [f"Tables in effect ({n_images} {split} images):", f"  compared: {COMPARED}"]
    for c in checks:
        head = f"  {c.circuit.ljust(width)}  {c.layer.ljust(layer_width)}  "
        if c.equal_to_exact:
            lines.append(head + "equal to exact: no change expected")
        elif c.unused:
            lines.append(head + f"UNUSED: no output of {c.n_outputs} differs [compensation: {c.compensation}]")
        else:
            lines.append(head + f"changes outputs: max |difference| {c.max_abs_difference:.4g}, "
                                f"{100 * c.share_differ:.1f}% of {c.n_outputs} outputs differ "
                                f"[compensation: {c.compensation}]")
    return "\n".join(lines)


def check_dict(checks: list[LayerCheck], n_images: int, split: str) -> dict:
    """The check as `evaluate --json` reports it."""
    return {"n_images": n_images, "split": split, "compared": COMPARED, "ok": not any(c.unused for c in checks),
            "layers": [c.as_dict() for c in checks]}


def unused_error(checks: list[LayerCheck], n_images: int, split: str) -> UserError | None:
    """The error for tables not in effect (None: every non-exact table changed outputs)."""
    unused = [c for c in checks if c.unused]
    if not unused:
        return None
    first = unused[0]
    more = f" (and {len(unused) - 1} more layer(s))" if len(unused) > 1 else ""
    return UserError(f"--check: circuit {first.circuit!r} changes no output of layer {first.layer} on {n_images} "
                     f"{split} images: its table is not in effect, or differs from exact only where this layer's "
                     f"codes never go{more}")
