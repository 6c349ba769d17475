"""`report.html`: one page a person opens in a browser to see what a run found.

It is one self-contained file (figures embedded as base64 PNG, inline CSS, no scripts),
so it can be mailed or committed alone. Everything on it is read back from the run
folder's own records (config.json, front.csv, rescored.csv, rescored_bits.csv,
evaluations.csv, summary.json, report.txt, progress.json), so `run`, `summarize` and
`design` all render the same page, and a folder made by older code renders with what it
has ("-" where a record is missing). This module gathers the data and draws the figures;
`templates/report.html.j2` lays them out.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from surrogate_nas.errors import UserError
from surrogate_nas.results.report_figures import front_figure, hv_figure
from surrogate_nas.results.run_folder import RunFolder

REPORT = "report.html"
TEMPLATES = Path(__file__).with_name("templates")
TOLERANCE_KEYS = ("0.5", "1", "2")  # design.json's keys; summary.json's are "0.5pp", ...
RULES = (("chosen", "point estimate"), ("chosen_upper_bound", "upper bound"))
DESIGN_RULES = (("chosen", "point estimate"), ("chosen_upper", "upper bound (conservative)"))


def write_run_report(run_dir: Path, design: dict | None = None) -> Path:
    """Write `run_dir/report.html` from the folder's records and return its path.
    `design`: the dict of a `design.json` (the `design` command's), shown as "After
    retraining"; None reads `run_dir/design.json` when it is one (export's file of the same
    name describes one design and is not)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    if design is None:
        design = _design_of(run_dir / "design.json")
    page = gather(run_dir, design)
    html = _template().render(**page)
    path = run_dir / REPORT
    tmp = path.with_name(REPORT + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)  # whole or not at all, like the folder's other records
    return path


def gather(run_dir: Path, design: dict | None = None) -> dict:
    """Everything the template shows, as plain values ("-" is the template's business)."""
    folder = RunFolder(run_dir)
    config = _json(run_dir / RunFolder.CONFIG)
    summary = _json(run_dir / RunFolder.SUMMARY)
    notes: list[str] = []
    front = _front(folder, config)
    exact = _attach_rescored(folder, front, notes)
    layers = _layer_names(front, config)
    evaluations = _rows(folder, RunFolder.EVALUATIONS)
    chosen = _chosen(summary, front)
    for point in front:
        point["chosen_as"] = [f"{c['tolerance']} pp ({'upper' if c['rule'] == 'upper bound' else 'point'})"
                              for rule in chosen for c in rule["rows"] if c["genome_indices"] == point["genome_indices"]]
    figures = {"front": front_figure(front, exact, evaluations, chosen, config)}
    hv = _hv_history(evaluations, config)
    if hv:
        figures["hv"] = hv_figure(hv, config, run_dir.name)
    return {
        "run": config.get("run_id") or run_dir.name,
        "head": _head(config, summary, exact),
        "layers": layers,
        "front": front,
        "exact": exact,
        "chosen": chosen,
        "rules_text": summary.get("rules") or {},
        "interval_method": (summary.get("intervals") or {}).get("method"),
        "notes": notes + ([summary["intervals"]["note"]] if (summary.get("intervals") or {}).get("note") else []),
        "summarized": bool(summary),
        "hv_at": summary.get("hv") or {},
        "figures": figures,
        "cost": _cost(run_dir, evaluations),
        "settings": sorted((config.get("search") or {}).items()),
        "record": _record(config),
        "design": _design(design, config, layers) if design else None,
        "files": sorted(p.name for p in run_dir.iterdir() if p.is_file() and p.name != REPORT),
    }


# ---------------------------------------------------------------------------- records


def _json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _design_of(path: Path) -> dict | None:
    doc = _json(path)
    return doc if isinstance(doc.get("chosen"), dict) or isinstance(doc.get("chosen_upper"), dict) else None


def _rows(folder: RunFolder, name: str) -> list[dict]:
    path = folder / name
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _float(value) -> float | None:
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _front(folder: RunFolder, config: dict) -> list[dict]:
    names = config.get("catalog_names") or []
    out = []
    for r in _rows(folder, RunFolder.FRONT):
        indices = tuple(int(v) for v in r["genome_indices"].split(","))
        circuits = r["genome"].split(";") if r.get("genome") else [_name(i, names) for i in indices]
        methods = r["compensation"].split(";") if r.get("compensation") else ["none"] * len(circuits)
        energy = float(r["energy"])
        out.append({"genome_indices": indices, "circuits": circuits, "methods": methods,
                    "layers": r["layers"].split(";") if r.get("layers") else None, "energy": energy,
                    "saving": 100 * (1 - energy), "search": _float(r.get("search_accuracy")),
                    "validation": _float(r.get("validation_accuracy")), "test": _float(r.get("test_accuracy")),
                    "validation_loss": None, "test_loss": None, "intervals": {"validation": None, "test": None}})
    return sorted(out, key=lambda p: p["energy"])


def _name(index, names) -> str:
    return names[int(index)] if 0 <= int(index) < len(names) else str(index)


def _layer_names(front: list[dict], config: dict) -> list[str]:
    for point in front:
        if point["layers"]:
            return point["layers"]
    layers = [layer.get("name") for layer in config.get("layers") or [] if isinstance(layer, dict)]
    n = len(front[0]["circuits"]) if front else len(layers)
    return layers if layers and len(layers) == n else [f"layer {k}" for k in range(1, n + 1)]


def _attach_rescored(folder: RunFolder, front: list[dict], notes: list[str]) -> dict | None:
    """All-exact's re-scored accuracies, and each front point's losses with their paired
    intervals (`summary.paired_loss`) where per-image records exist."""
    from surrogate_nas.results.summary import paired_loss

    if not (folder / RunFolder.RESCORED).is_file():
        notes.append("the front was not re-scored (a run with --no-test, or one still running): "
                     "accuracies are on the search set only")
        return None
    rows = folder.rescored()
    exact = next((r for r in rows if r["role"] == "all-exact"), None)
    try:
        bits = folder.rescored_bits()
    except UserError as exc:
        notes.append(f"per-image records unreadable, no intervals: {exc}")
        bits = {}
    if exact is None:
        return None
    for point in front:
        for split in ("validation", "test"):
            e, p = bits.get((exact["genome_indices"], split)), bits.get((point["genome_indices"], split))
            if e is not None and p is not None and len(e) == len(p):
                point["intervals"][split] = paired_loss(e, p)
            if point[split] is not None and exact[f"{split}_accuracy"] is not None:
                point[f"{split}_loss"] = 100 * (exact[f"{split}_accuracy"] - point[split])
    return {"validation": exact["validation_accuracy"], "test": exact["test_accuracy"],
            "circuit": exact["genome"].split(";")[0], "has_bits": bool(bits)}


def _chosen(summary: dict, front: list[dict]) -> list[dict]:
    """summary.json's choices under both rules, each with its circuit per layer."""
    note = (summary.get("intervals") or {}).get("note")  # why the upper-bound rule chose nothing
    by_genome = {p["genome_indices"]: p for p in front}
    out = []
    for key, rule in RULES:
        choices = summary.get(key)
        if not isinstance(choices, dict):
            continue
        rows = []
        for tolerance, c in choices.items():
            row = {"tolerance": tolerance.removesuffix("pp"), "rule": rule, "genome_indices": None,
                   "why": (note if rule == "upper bound" and note else "no point qualifies")}
            if c:
                indices = tuple(c.get("genome_indices") or ())
                point = by_genome.get(indices, {})
                circuits = (c.get("genome") or "").split(";")
                methods = (c.get("compensation") or "").split(";")
                row.update(genome_indices=indices, saving=c.get("energy_saving_pct"),
                           validation_loss=c.get("validation_loss_pp"), test_loss=c.get("test_loss_pp"),
                           validation_ci=c.get("validation_loss_interval_pp"), test_ci=c.get("test_loss_interval_pp"),
                           cells=_cells(circuits, methods if len(methods) == len(circuits) else None),
                           validation=c.get("validation_accuracy"), energy=c.get("energy", point.get("energy")))
            rows.append(row)
        out.append({"rule": rule, "key": key, "rows": rows})
    return out


def _cells(circuits, methods) -> list[dict]:
    methods = methods or ["none"] * len(circuits)
    return [{"circuit": c, "method": "" if m in ("none", "") else m} for c, m in zip(circuits, methods)]


HEADER_PATTERNS = {
    "generations": r"generations (\d+)",
    "search_s": r"search (\d+) s|\), (\d+) s;",
    "rescore_s": r"re-scoring (\d+) s",
    "search_images": r"search set (\d+) validation images",
}


def _cost(run_dir: Path, evaluations: list[dict]) -> dict:
    """What the run spent: counts from evaluations.csv, seconds from report.txt's first
    line (the only record of the search's and re-scoring's wall time)."""
    cost = {"evaluations": len(evaluations) or None}
    if evaluations:
        computed = [e for e in evaluations if e.get("from_cache") != "1"]
        cost.update(computed=len(computed), from_cache=len(evaluations) - len(computed),
                    stopped_floor=sum(1 for e in evaluations if e.get("below_floor")),
                    stopped_race=sum(1 for e in evaluations if e.get("dominated_by")),
                    evaluation_s=sum(_float(e.get("seconds")) or 0.0 for e in computed))
    try:
        header = (run_dir / "report.txt").read_text().splitlines()[0]
    except (OSError, UnicodeDecodeError, IndexError):
        header = ""
    for key, pattern in HEADER_PATTERNS.items():
        m = re.search(pattern, header)
        cost[key] = None if m is None else int(next(g for g in m.groups() if g is not None))
    progress = _json(run_dir / RunFolder.PROGRESS)
    cost["budget"] = progress.get("budget")
    if cost["generations"] is None:
        cost["generations"] = progress.get("generations_done")
    return cost


def _head(config: dict, summary: dict, exact: dict | None) -> dict:
    search = config.get("search") or {}
    floor = config.get("accuracy_floor") or {}
    return {"model": config.get("model"), "data": config.get("data"), "catalog": config.get("catalog"),
            "mode": search.get("mode") or summary.get("mode"), "budget": search.get("budget"),
            "compensation": search.get("compensation") or summary.get("compensation"),
            "floor": floor.get("value") if isinstance(floor, dict) else None,
            "floor_from": floor.get("from") if isinstance(floor, dict) else None,
            "exact_circuit": summary.get("exact_reference") or (exact or {}).get("circuit")}


def _record(config: dict) -> list[tuple[str, str]]:
    """The rest of config.json a reader may want: where things came from, versions."""
    out = []
    for key in ("model", "catalog", "data", "fingerprint"):
        if config.get(key):
            out.append((key, str(config[key])))
    for key in ("rescore", "early_stopping", "versions"):
        if isinstance(config.get(key), dict):
            out.append((key, ", ".join(f"{k} {_plain(v)}" for k, v in config[key].items())))
    return out


def _design(doc: dict, config: dict, layers: list[str]) -> dict:
    """design.json's two choices and its cost, with "-" for whatever is missing."""
    names = config.get("catalog_names") or []
    tables = []
    for key, rule in DESIGN_RULES:
        choices = doc.get(key) if isinstance(doc.get(key), dict) else {}
        rows = []
        for tolerance in list(dict.fromkeys([*TOLERANCE_KEYS, *choices])):
            c = choices.get(tolerance)
            c = c if isinstance(c, dict) else {}
            genome = c.get("genome") or []
            circuits = [_name(g, names) if isinstance(g, int) else str(g) for g in genome]
            rows.append({"tolerance": tolerance, "saving": c.get("energy_saving_pct"),
                         "choosing_loss": c.get("choosing_loss_pp"), "choosing_ci": c.get("choosing_loss_ci_pp"),
                         "test_loss": c.get("test_loss_pp"), "test_ci": c.get("test_loss_ci_pp"),
                         "retrained": c.get("retrained"), "design": c.get("design"), "cells": _cells(circuits, None)})
        tables.append({"rule": rule, "rows": rows})
    cost = doc.get("cost") if isinstance(doc.get("cost"), dict) else {}
    phases = cost.get("phases") if isinstance(cost.get("phases"), dict) else {}
    n = max((len(r["cells"]) for t in tables for r in t["rows"]), default=0)
    return {"tables": tables, "layers": layers if len(layers) == n else [f"layer {k}" for k in range(1, n + 1)],
            "reference": doc.get("reference") if isinstance(doc.get("reference"), dict) else {},
            "model": doc.get("model"), "seed": doc.get("seed"), "phases": list(phases.items()),
            "cost": [(k, cost.get(k)) for k in ("wall_s", "float_pass_s", "retrain_epoch_s", "float_train_epoch_s")],
            "split": (doc.get("images") or {}).get("split_of_choosing") if isinstance(doc.get("images"), dict) else None}


def _hv_history(evaluations: list[dict], config: dict) -> list[tuple[int, float]]:
    """Hypervolume after each true evaluation, as `summarize` counts it (early stops add nothing)."""
    from surrogate_nas.results.summary import run_reference
    from surrogate_nas.search.pareto import HVHistory

    history = HVHistory(run_reference(config))
    for e in evaluations:
        stopped = e.get("below_floor") or e.get("dominated_by")
        history.add([1.0, 1.0] if stopped else [1 - float(e["accuracy"]), float(e["energy"])])
    return history.values



# ---------------------------------------------------------------------------- template


def _template():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=_num, acc=lambda v: _num(v, 4), ci=_ci, seconds=_seconds, plain=_plain)
    return env.get_template("report.html.j2")


def _num(value, digits: int = 2) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-" if value in (None, "") else str(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _plain(value) -> str:
    """A setting as its record has it (floats to 6 significant digits, not rounded to 2)."""
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    return str(value)


def _ci(bound) -> str:
    """[lo, hi] of a loss in pp, from a list or a `paired_loss` dict; "-" without one."""
    if isinstance(bound, dict):
        bound = [bound.get("lower_pp"), bound.get("upper_pp")]
    if not isinstance(bound, (list, tuple)) or len(bound) != 2 or None in bound:
        return "-"
    return f"[{bound[0]:.2f}, {bound[1]:.2f}]"


def _seconds(value) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    return f"{value:.0f} s" if value < 600 else f"{value:.0f} s ({value / 3600:.2f} h)"
