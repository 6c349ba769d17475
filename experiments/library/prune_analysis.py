"""How many circuits per-layer pruning keeps, for several k, on the union catalog.

Uses the model card's pooled activation-code and kernel-code histograms (no TensorFlow,
no images); the run itself prunes with per-channel histograms of 512 calibration images
summed over channels, so its counts can differ slightly (see the run's rule file).

    python experiments/library/prune_analysis.py CATALOG [MODEL_CARD]   > prune_counts.md
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from surrogate_nas.multipliers import pruning
from surrogate_nas.multipliers.catalog import load_catalog


def main(catalog_dir: str, card_path: str = "models/alexnet_cifar10.json") -> None:
    catalog = load_catalog(catalog_dir)
    card = json.loads(Path(card_path).read_text())
    names = [layer["name"] for layer in card["conv_layers"]]
    powers = catalog.powers
    shipped = np.array([not m.name.startswith("mul8_") for m in catalog])
    ref = catalog.exact_index
    started = time.perf_counter()
    errors = []
    for layer, info in enumerate(card["conv_layers"]):
        out = info["output_shape"]
        taps = info["macs"] // (out[0] * out[1] * out[2])
        act = np.asarray(card["input_code_histograms"][layer], np.float64)
        ker = np.asarray(card["kernel_code_histograms"][layer], np.float64)
        errors.append([pruning.output_error(m.lut, act, ker, taps)[0] for m in catalog])
    seconds = time.perf_counter() - started
    print(f"catalog {catalog_dir}: {len(catalog)} circuits ({shipped.sum()} shipped mul8u_*, "
          f"{(~shipped).sum()} EvoApprox8b mul8_*); {catalog.reference_text()}")
    print(f"analytic errors of {len(catalog)} x {len(names)} (layer, circuit) pairs: {seconds:.0f} s\n")
    print("| k | " + " | ".join(names) + " | one-layer tests (4 methods x kept, less the reference) "
          "| of which shipped circuits |")
    print("|---|" + "---|" * len(names) + "---|---|")
    for k in (1, 2, 3, 5, 10):
        kept = [pruning.keep_mask(powers, e, k) for e in errors]
        counts = [int(m.sum()) for m in kept]
        ship = [int((m & shipped).sum()) for m in kept]
        tests = 4 * sum(int(m.sum()) - int(m[ref]) for m in kept)  # the reference is not tested
        print(f"| {k} | " + " | ".join(map(str, counts)) + f" | {tests} | {'/'.join(map(str, ship))} |")
    print("| 0 (off) | " + " | ".join(str(len(catalog)) for _ in names) + f" | {4 * len(names) * (len(catalog) - 1)} | |")


if __name__ == "__main__":
    main(*sys.argv[1:])
