"""The model's card: the JSON next to the `.keras` file.

It records where the model came from (data source and hash; for a model trained here its
epochs, seed, wall time), what it scores (float and 8-bit all-exact accuracies), the
weights it describes (sha256 of the .keras file), and, per approximable layer (named
by `layer_names`), its MACs and the calibration the approximate twin needs (input
ranges, code histograms). `python -m surrogate_nas calibrate` writes it for any model.
Cards written before `layer_names` existed describe the conv layers named in
`conv_layers`, in order.
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
        raise UserError(f"{path}: model card missing (write it with `python -m surrogate_nas calibrate --model "
                        f"{model_path}`)")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: model card is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    for key in ("input_ranges", "calibration_indices_sha256"):
        if key not in card:
            raise UserError(f"{path}: model card lacks '{key}' (re-calibrate the model with "
                            f"`python -m surrogate_nas calibrate --model {model_path}`)")
    return card


def card_layer_names(card: dict) -> list[str] | None:
    """The layers the card's per-layer lists describe, in their order (None: unnamed)."""
    if "layer_names" in card:
        return list(card["layer_names"])
    if "conv_layers" in card:
        return [layer["name"] for layer in card["conv_layers"]]
    return None


def card_entries(card: dict, key: str, names: list[str], path: Path | None = None) -> list:
    """`card[key]` (a per-layer list) for the layers `names`, in that order."""
    values = card[key]
    known = card_layer_names(card)
    where = f"{path}: " if path is not None else "model card: "
    if known is None:
        if len(values) != len(names):
            raise UserError(f"{where}has {len(values)} {key}, the model {len(names)} approximable layers "
                            "(re-calibrate it with `python -m surrogate_nas calibrate`)")
        return list(values)
    if len(known) != len(values):
        raise UserError(f"{where}{len(values)} {key} for {len(known)} layer names: the card is damaged")
    index = {name: i for i, name in enumerate(known)}
    missing = [name for name in names if name not in index]
    if missing:
        raise UserError(f"{where}no calibration for layer {missing[0]} (the card describes "
                        f"{', '.join(known) or 'no layer'}); re-calibrate with `python -m surrogate_nas calibrate`")
    return [values[index[name]] for name in names]


def load_model(model_path: Path):
    """The float model of a `.keras` file (a bad file is a one-line error)."""
    import keras

    try:
        return keras.models.load_model(model_path, compile=False)
    except Exception as exc:  # keras raises many types for a bad file
        raise UserError(f"--model {model_path}: cannot load the model ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:300]})") from None


def weights_sha256(model_path: Path) -> str:
    """What a card's `weights_sha256` records: the sha256 of the .keras file's bytes."""
    return hashlib.sha256(Path(model_path).read_bytes()).hexdigest()


def check_card(model_path: Path, card: dict) -> None:
    """The card must describe this very file: its recorded `weights_sha256` (sha256 of the
    .keras bytes) must match, or its calibration belongs to other weights."""
    path = card_path(model_path)
    try:
        digest = weights_sha256(model_path)
    except OSError as exc:
        raise UserError(f"--model {model_path}: cannot read the model file ({exc.strerror or exc})") from None
    recorded = card.get("weights_sha256")
    if recorded is None:
        raise UserError(f"{path}: model card lacks 'weights_sha256' (re-calibrate with "
                        f"`python -m surrogate_nas calibrate --model {model_path}`)")
    if recorded != digest:
        raise UserError(f"{path}: model card is stale: it was written for other weights than {model_path} "
                        f"(re-calibrate with `python -m surrogate_nas calibrate --model {model_path}`)")
