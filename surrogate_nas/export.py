"""Taking a design out of the tool: the approximate network as a loadable Keras model,
and a per-layer description for hardware people."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np

from surrogate_nas.errors import UserError


def describe_design(evaluator, genome) -> dict:
    """Per layer: circuit, table hashes, compensation (bias offsets, weight-code map), MACs."""
    from surrogate_nas.genome import genome_names

    evaluator.set_genome(genome)
    layers = []
    for layer, info, index in zip(evaluator.layers, evaluator.infos, genome):
        entry = evaluator.catalog[int(index)]
        comp = layer.compensation
        circuit = genome_names([index], evaluator.catalog)[0]
        table = layer.table.numpy().astype("<u2")
        layers.append({
            "layer": layer.name,
            "kind": info.kind,
            "circuit": circuit,
            "circuit_table_sha256": entry.sha256,
            "effective_table_sha256": hashlib.sha256(table.tobytes()).hexdigest(),
            "power_mw": entry.power_mw,
            "macs": info.macs,
            "compensation": "none" if comp is None else comp.method,
            "bias_offsets": [float(v) for v in layer.bias_offset.numpy()],
            "weight_code_map": None if comp is None or comp.weight_map is None else [int(v) for v in comp.weight_map],
            "input_range": [float(v) for v in layer.input_range.numpy()],
        })
    return {"genome": [int(g) for g in genome], "relative_energy": evaluator.energy(genome), "layers": layers}


def _front_genome(run_dir: Path, point: int) -> tuple[int, ...]:
    path = run_dir / "front.csv"
    if not path.is_file():
        raise UserError(f"{path}: not found (is {run_dir} a finished run?)")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not 1 <= point <= len(rows):
        raise UserError(f"--point: expected 1..{len(rows)} (rows of {path}), got {point}")
    return tuple(int(v) for v in rows[point - 1]["genome_indices"].split(","))


def export_design(paths, run_dir: Path, out: Path, point: int | None = None, genome: str | None = None):
    """Write `out` (.keras) and `design.json` next to it; returns (model path, json path,
    accuracy of the re-loaded model on the run's search set, equal to the evaluator's)."""
    import keras

    from surrogate_nas.evaluate import Evaluator, top1
    from surrogate_nas.genome import parse_genome
    from surrogate_nas.session import load_catalog_from, load_data_from

    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"{run_dir}: not a run folder (no config.json)")
    if out.suffix != ".keras":
        raise UserError(f"--out {out}: the file name must end in .keras")
    config = json.loads(config_path.read_text())
    search = config["search"]
    method = search.get("compensation", "none")
    catalog = load_catalog_from(paths, method)
    model_path = Path(paths.model) if paths.model else Path(config["model"])
    evaluator = Evaluator.from_paths(model_path, catalog, load_data_from(paths), "validation", search["search_images"],
                                     0, compensation=method, rule_store=Path(paths.cache), quiet=True,
                                     approximate=search.get("approximate", "conv"))
    if evaluator.fingerprint != config["fingerprint"]:
        raise UserError(f"{run_dir}: model, data, catalog or emulation differ from the run's; pass the run's --model/--data")
    g = _front_genome(run_dir, point) if genome is None else parse_genome(genome, catalog, len(evaluator.layers))
    doc = describe_design(evaluator, g)
    expected = evaluator.accuracy(g)
    out.parent.mkdir(parents=True, exist_ok=True)
    evaluator.model.save(out)
    loaded = keras.models.load_model(out, compile=False)
    accuracy = top1(lambda x: loaded(x, training=False), evaluator.image_set.images.astype(np.float32),
                    evaluator.image_set.labels)
    if accuracy != expected:
        raise RuntimeError(f"exported model scores {accuracy}, the evaluator {expected}: export is not exact")
    doc.update({"source_run": str(run_dir), "model": str(model_path), "search_set_accuracy": accuracy,
                "keras_file": out.name, "load_with": "import surrogate_nas.axconv; keras.models.load_model(path)"})
    json_path = out.with_name("design.json")
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    return out, json_path, accuracy
