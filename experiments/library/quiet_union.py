"""Does a larger circuit library offer quieter designs to retrain? (issue 16)

After retraining, AlexNet's designs rank by the output noise their circuits add
(experiments/finetune/recipes, section e). This compares, at 45 / 50 / 55 % saving, the
least-noise genome of the shipped 36-circuit catalog with that of the 541-circuit union
(experiments/library, section 2). Noise of a (layer, circuit): the relative std of the
error it adds to the layer's outputs (`LayerDesigns.residual_noise`'s formula) after the
compensation among none / bias / tune / tune+bias that leaves the least of it; analytic, from
calibration code histograms of training images and the all-exact twin's output spread on 500
search-set images; no labels, no accuracy measured. The same formula for both catalogs, so
the two are compared alike (the shipped auto rule chooses compensation by measured loss
instead, which is why the shipped numbers here can differ from recipes' `quiet-designs.json`).

    python experiments/library/quiet_union.py multipliers/evoapprox8b cache/library/union
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from surrogate_nas.config import resolve_paths
from surrogate_nas.evaluation.evaluator import Evaluator
from surrogate_nas.evaluation.inputs import load_catalog_from, load_data_from
from surrogate_nas.evaluation.quiet import layer_energy, least_noise_designs
from surrogate_nas.multipliers import compensation as comp

METHODS = ("none", "bias", "tune", "tune+bias")
TARGETS = (45, 50, 55)


def least_noise(catalog_dir: str) -> dict:
    paths = resolve_paths(multipliers=catalog_dir)
    catalog, data = load_catalog_from(paths), load_data_from(paths)
    ev = Evaluator.from_paths(Path(paths.model), catalog, data, n_images=500, compensation="bias", quiet=True)
    stats, d = ev.layer_statistics(), ev.designs
    noise = np.zeros((d.n_layers, len(catalog)))
    method = np.empty((d.n_layers, len(catalog)), dtype=object)
    for layer in range(d.n_layers):
        s_in, s_w = d.scales[layer]
        unit = s_in * s_w / max(stats["output_std"][layer], 1e-12)
        act = d.channel_hists[layer].sum(axis=0)
        for m, entry in enumerate(catalog):
            best = None
            for name in METHODS:
                c = d.compensation(layer, m, name) or comp.Compensation("none")
                std = comp.residual_statistics(c, entry.lut, act, d.kernel_hists[layer])[1]
                value = np.sqrt(stats["taps"][layer]) * std * unit
                if best is None or value < best[0]:
                    best = (value, name)
            noise[layer, m], method[layer, m] = best
    energy = layer_energy(ev.energy_model.macs, catalog.powers, catalog.exact.power_mw)
    out = {"catalog": catalog_dir, "circuits": len(catalog), "designs": []}
    for found in least_noise_designs(energy, np.square(noise), TARGETS):
        g = found["genome_indices"]
        out["designs"].append({"target_pct": int(found["target_pct"]), "saving_pct": round(100 * (1 - ev.energy_model(g)), 2),
                               "noise_power": round(float(found["noise_power"]), 5),
                               "genome": ";".join(catalog[i].name for i in g),
                               "compensation": ";".join(method[layer, c] for layer, c in enumerate(g)),
                               "relative_noise_std": [round(float(noise[layer, c]), 5) for layer, c in enumerate(g)]})
    return out


def main(catalogs: list[str]) -> None:
    docs = [least_noise(c) for c in catalogs]
    here = Path(__file__).parent
    (here / "quiet_union.json").write_text(json.dumps(docs, indent=1) + "\n")
    lines = ["| catalog | target | saving | noise power | circuits (conv1..conv5) | compensation |", "|---|---|---|---|---|---|"]
    for doc in docs:
        for x in doc["designs"]:
            lines.append(f"| {doc['circuits']} circuits | {x['target_pct']} % | {x['saving_pct']:.1f} % | "
                         f"{x['noise_power']:.4f} | {x['genome'].replace(';', ', ')} | {x['compensation'].replace(';', ', ')} |")
    (here / "quiet_union.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:] or ["multipliers/evoapprox8b"])
