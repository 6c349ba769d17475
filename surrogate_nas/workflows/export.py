"""Taking a design out of the tool: the approximate network as a loadable Keras model,
and a per-layer description for hardware people."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from surrogate_nas.errors import UserError
from surrogate_nas.results.run_folder import RunFolder


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
    folder = RunFolder(run_dir)
    genomes = folder.front_genomes()
    if not 1 <= point <= len(genomes):
        raise UserError(f"--point: expected 1..{len(genomes)} (rows of {folder / folder.FRONT}), got {point}")
    return genomes[point - 1]


def export_design(paths, run_dir: Path, out: Path, point: int | None = None, genome: str | None = None):
    """Write `out` (.keras) and `design.json` next to it; returns (model path, json path,
    accuracy of the re-loaded model on the run's search set, equal to the evaluator's).
    Model, data and catalog are the run's (config.json) unless flags in `paths` say otherwise."""
    import keras

    from surrogate_nas.config import portable, project_root
    from surrogate_nas.genome import parse_genome
    from surrogate_nas.network.measure import top1
    from surrogate_nas.workflows.context import Context
    from surrogate_nas.workflows.run_folder import read_run_record

    record = read_run_record(run_dir)
    if out.suffix != ".keras":
        raise UserError(f"--out {out}: the file name must end in .keras")
    ctx, _ = Context.from_run(run_dir, paths, quiet=True)
    evaluator = ctx.evaluator
    if evaluator.fingerprint != record["fingerprint"]:
        from surrogate_nas.workflows.run_folder import describe_changes

        changed = describe_changes(record["evaluator"], evaluator.description)
        raise UserError(f"{run_dir}: the evaluator differs from the run's ({changed}); "
                        "pass the run's --model/--data/--catalog")
    catalog, model_path = ctx.catalog, ctx.model_path
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
    root = project_root(ctx.paths)
    doc.update({"source_run": portable(run_dir, root), "model": portable(model_path, root), "search_set_accuracy": accuracy,
                "keras_file": out.name, "load_with": "import surrogate_nas.axconv; keras.models.load_model(path)"})
    json_path = out.with_name("design.json")
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    return out, json_path, accuracy
