"""Calibrating a model: what its approximate twin needs, written to its card.

For any Keras CNN: the input range of every approximable layer (its `Conv2D` and `Dense`
layers) measured on the calibration images of the training split (the seeded 2,000 of
`calibration_indices`, the same ones the compensation statistics use), the histograms of
its 8-bit input and kernel codes, its MACs, the weights hash (sha256 of the .keras file),
and the float and 8-bit all-exact accuracies (conv layers 8-bit) on the validation and
test splits. Takes seconds to minutes: no training.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from surrogate_nas.data.splits import calibration_indices


def calibrate_model(model_path: Path, data, seed: int = 0, model=None, extra: dict | None = None,
                    input_percentile: float | list[float] = 100.0) -> dict:
    """Measure the card of `model_path` (or of `model`, already saved there) on `data` and
    write it next to the model; `extra` entries (how the model was trained) join it.
    `input_percentile` < 100 clips each layer's input range at that percentile
    (`calibrate_input_ranges`) instead of its min and max; a list gives one per conv layer
    (dense layers keep min..max)."""
    import keras
    import tensorflow as tf

    from surrogate_nas import __version__
    from surrogate_nas.data.splits import make_splits
    from surrogate_nas.network.card import load_model, weights_sha256, write_card
    from surrogate_nas.network.layers import approximable_layers, layer_info
    from surrogate_nas.network.measure import (
        calibrate_input_ranges,
        check_model_data,
        code_histograms,
        top1,
    )
    from surrogate_nas.network.twin import build_approx_model

    model_path = Path(model_path)
    start = time.time()
    float_model = load_model(model_path) if model is None else model
    check_model_data(float_model, model_path, data)
    layers = approximable_layers(float_model, "conv+dense", strict=False)
    infos = layer_info(float_model, layers=layers)
    splits = make_splits(data, seed=0)
    idx = calibration_indices(len(splits.y_train), seed)
    images = splits.x_train[idx].astype(np.float32)
    if isinstance(input_percentile, (list, tuple)):
        per_conv = iter(input_percentile)
        percentile = [100.0 if info.kind != "conv" else float(next(per_conv)) for info in infos]
    else:
        percentile = input_percentile
    ranges = calibrate_input_ranges(float_model, images, layers=layers, percentile=percentile)
    input_hists, kernel_hists = code_histograms(float_model, images, ranges, layers=layers)
    conv_ranges = [r for r, info in zip(ranges, infos) if info.kind == "conv"]
    twin = build_approx_model(float_model, conv_ranges)

    def accuracy(net, x, y):
        return top1(lambda batch: net(batch, training=False), x, y)

    classes = list(getattr(data, "classes", ()) or ())
    card = {
        "surrogate_nas_version": __version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "model_name": float_model.name,
        "data_source": data.source,
        "data_sha256": data.source_hash,
        "input_shape": [int(d) for d in float_model.input_shape[1:]],
        "n_classes": int(float_model.output_shape[-1]),
        "classes": classes,
        "seed": seed,
        "calibration_images": int(len(idx)),
        "calibration_indices_sha256": hashlib.sha256(idx.astype(np.int64).tobytes()).hexdigest(),
        "float_val_accuracy": accuracy(float_model, splits.x_val, splits.y_val),
        "float_test_accuracy": accuracy(float_model, splits.x_test, splits.y_test),
        "int8_exact_val_accuracy": accuracy(twin, splits.x_val, splits.y_val),
        "int8_exact_test_accuracy": accuracy(twin, splits.x_test, splits.y_test),
        # per approximable layer, in genome order (conv layers, then with conv+dense the
        # dense ones where they sit in the model): every list below follows layer_names
        "layer_names": [info.name for info in infos],
        "layers": [{"name": i.name, "kind": i.kind, "input_shape": list(i.input_shape),
                    "output_shape": list(i.output_shape), "kernel_size": list(i.kernel_size), "macs": i.macs}
                   for i in infos],
        "macs_per_layer": [info.macs for info in infos],
        "input_percentile": list(input_percentile) if isinstance(input_percentile, (list, tuple)) else input_percentile,
        "input_ranges": [list(r) for r in ranges],
        "input_code_histograms": [h.tolist() for h in input_hists],
        "kernel_code_histograms": [h.tolist() for h in kernel_hists],
        "weights_sha256": weights_sha256(model_path),
    }
    card.update(extra or {})
    card["calibration_seconds"] = round(time.time() - start, 1)
    write_card(model_path, card)
    return card


def format_card(model_path: Path, card: dict) -> str:
    """What `calibrate` prints: the layers, their MACs and the accuracies."""
    lines = [f"{model_path}: {len(card['layer_names'])} approximable layers, "
             f"{sum(card['macs_per_layer']):,} MACs per image"]
    for layer in card["layers"]:
        lines.append(f"  {layer['kind']:5s} {layer['name']:24s} {'x'.join(map(str, layer['input_shape']))} -> "
                     f"{'x'.join(map(str, layer['output_shape']))}  {layer['macs']:>12,} MACs")
    lines.append(f"float accuracy: validation {card['float_val_accuracy']:.4f}, test {card['float_test_accuracy']:.4f}; "
                 f"8-bit all-exact (conv layers): validation {card['int8_exact_val_accuracy']:.4f}, "
                 f"test {card['int8_exact_test_accuracy']:.4f}")
    return "\n".join(lines)
