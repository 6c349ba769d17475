"""Loading what every command needs (catalog, data, model) from flags and config,
so commands stay thin and all report missing inputs the same way."""

from __future__ import annotations

from pathlib import Path

from surrogate_nas.config import Paths, require
from surrogate_nas.errors import UserError


def load_catalog_from(paths: Paths, compensation: str | None = None):
    """The configured catalog; with `compensation="search"` its (circuit, method) designs."""
    from surrogate_nas.multipliers.catalog import load_catalog

    catalog = load_catalog(require(paths.multipliers, "multipliers", "multiplier catalog"))
    if catalog.exact is None:
        raise UserError(f"--catalog {catalog.path}: no exact multiplier (table equal to a*b); energy needs one")
    if not catalog.exact.power_mw > 0:
        raise UserError(f"--catalog {catalog.path}: the exact multiplier {catalog.exact.name} has power "
                        f"{catalog.exact.power_mw} mW; relative energy divides by it, so it must be positive")
    if compensation == "search":
        from surrogate_nas.multipliers.compensation import design_catalog

        catalog = design_catalog(catalog)
    return catalog


def load_data_from(paths: Paths):
    """The configured CIFAR-10 copy; when the config file names one that is not there
    (a fresh clone without the shared copy), the official Keras download, saying so."""
    from surrogate_nas.data.datasets import load_cifar10

    data = paths.data
    if data is not None and not data.exists() and "data" in paths.from_config_file:
        print(f"data {data} (from {paths.config_file}) not found: using the official CIFAR-10 download "
              "(pass --data to use a local copy)")
        data = None
    elif data is not None:
        require(data, "data", "CIFAR-10 data")
    return load_cifar10(data, cache_dir=Path(paths.cache))


def ensure_model(paths: Paths) -> Path:
    """The configured model, which must exist: training (tens of minutes) happens only
    when asked for with `train`, never because a path was mistyped."""
    if paths.model is None:
        raise UserError("no model configured: pass --model, set SURROGATE_NAS_MODEL or add 'model' to [paths]")
    model_path = Path(paths.model)
    if not model_path.exists():
        where = f" (from {paths.config_file})" if "model" in paths.from_config_file else ""
        raise UserError(f"--model {model_path}{where}: model not found; train one with "
                        f"`python -m surrogate_nas train --model {model_path}`")
    if not model_path.is_file():
        raise UserError(f"--model {model_path}: not a file (expected a .keras model)")
    return model_path


def ensure_card(model_path: Path, data, stream=None) -> None:
    """A model without a card is calibrated first (seconds to minutes, unlike training),
    saying so in one line."""
    import sys

    from surrogate_nas.network.card import card_path

    card = card_path(model_path)
    if card.is_file():
        return
    print(f"{model_path}: no model card; calibrating the model first (writes {card})", file=stream or sys.stdout,
          flush=True)
    from surrogate_nas.network.calibrate import calibrate_model

    calibrate_model(model_path, data)
