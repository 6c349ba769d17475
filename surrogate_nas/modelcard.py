"""The trained model's card: the JSON next to the `.keras` file.

It records where the model came from (data source and hash, epochs, seed, wall time),
what it scores (float and 8-bit accuracies), its per-layer MACs, and the calibration
the approximate twin needs (per-layer input ranges, code histograms).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from surrogate_nas.errors import UserError


def card_path(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".json")


def write_card(model_path: Path, card: dict) -> Path:
    path = card_path(model_path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_card(model_path: Path) -> dict:
    path = card_path(model_path)
    if not path.is_file():
        raise UserError(f"{path}: model card missing (train the model with `python -m surrogate_nas train`)")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: model card is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    for key in ("input_ranges", "calibration_indices_sha256"):
        if key not in card:
            raise UserError(f"{path}: model card lacks '{key}' (retrain the model)")
    return card
