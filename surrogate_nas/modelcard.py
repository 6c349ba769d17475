"""The trained model's card: the JSON next to the `.keras` file.

It records where the model came from (data source and hash, epochs, seed, wall time),
what it scores (float and 8-bit accuracies), its per-layer MACs, and the calibration
the approximate twin needs (per-layer input ranges, code histograms).
"""

from __future__ import annotations

import hashlib
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


def check_card(model_path: Path, card: dict) -> None:
    """The card must describe this very file: its recorded `weights_sha256` (sha256 of the
    .keras bytes) must match, or its calibration belongs to other weights."""
    path = card_path(model_path)
    try:
        digest = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()
    except OSError as exc:
        raise UserError(f"--model {model_path}: cannot read the model file ({exc.strerror or exc})") from None
    recorded = card.get("weights_sha256")
    if recorded is None:
        raise UserError(f"{path}: model card lacks 'weights_sha256' (retrain the model)")
    if recorded != digest:
        raise UserError(f"{path}: model card is stale: it was written for other weights than {model_path} "
                        f"(retrain with `python -m surrogate_nas train --model {model_path}`)")
