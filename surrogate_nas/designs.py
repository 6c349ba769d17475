"""What a gene value means in a layer: a circuit plus its compensation.

The genome keeps one catalog index per approximable layer; the compensation of each
(layer, circuit) follows from the run's `--compensation` setting: one fixed method for
every layer, or `auto`, a rule measured once per model on calibration images of the
training split (never validation or test): for each layer and circuit, the candidate
method whose network -- that layer approximate, all others exact -- has the lowest
cross-entropy on those images. The rule is stored on disk next to the evaluation cache,
keyed by everything it depends on, so it is measured once per model and catalog.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from surrogate_nas import compensation as comp
from surrogate_nas.cache import fingerprint
from surrogate_nas.errors import UserError

RULE_IMAGES = 512  # calibration images scored per candidate by the auto rule
RULE_VERSION = "auto-1"


def channel_code_histograms(model, layers, images: np.ndarray, batch_size: int = 500) -> list[np.ndarray]:
    """Per approximate layer: (cin, 256) counts of its input codes per input channel,
    measured with the network as it is (call with all-exact tables)."""
    import keras
    import tensorflow as tf

    from surrogate_nas.axconv import nudge, quantize_codes

    taps = keras.Model(model.inputs, [layer.input for layer in layers])
    hists = [np.zeros((int(layer.input.shape[-1]), 256), np.int64) for layer in layers]
    params = [nudge(layer.input_range[0], layer.input_range[1]) for layer in layers]
    for start in range(0, len(images), batch_size):
        outs = taps(tf.constant(images[start : start + batch_size], tf.float32), training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for i, t in enumerate(outs):
            scale, inv, m, zp = params[i]
            codes = tf.cast(quantize_codes(t, inv, m, zp, scale), tf.int32).numpy().reshape(-1, t.shape[-1])
            cin = codes.shape[1]
            flat = codes + 256 * np.arange(cin)[None, :]
            hists[i] += np.bincount(flat.ravel(), minlength=256 * cin).reshape(cin, 256)
    return hists


def design_catalog(catalog):
    """For `--compensation search`: one entry per (circuit, candidate method), so that a
    gene picks both. Entries of one circuit are adjacent (SBX neighbours are related
    designs); the exact circuit appears once, uncompensated. Names: `mul8u_DM1+bias`."""
    from surrogate_nas.multipliers import Catalog, Multiplier

    entries, methods = [], []
    for e in catalog:
        for method in ("none",) if e.is_exact else comp.AUTO_CANDIDATES:
            name = e.name if method == "none" else f"{e.name}+{method}"
            entries.append(Multiplier(name, e.lut, e.power_mw, e.sha256, e.csv, e.metrics))
            methods.append(method)
    designs = Catalog(entries, catalog.path)
    designs.design_methods = methods
    return designs


class LayerDesigns:
    """Compensation of every (layer, circuit), computed on demand and memoised."""

    def __init__(self, layers, catalog, method: str, channel_hists: list[np.ndarray]):
        self.method = comp.check_method(method)
        self.catalog = catalog
        self.channel_hists = channel_hists
        self.kernel_codes = [layer.kernel_codes() for layer in layers]
        self.scales = [layer.scales() for layer in layers]
        self.kernel_hists = [np.bincount(c.ravel(), minlength=256) for c in self.kernel_codes]
        self.exact_index = catalog.index(catalog.exact.name)
        self.rule: list[list[str]] | None = None  # [layer][circuit] method, for "auto"
        self._memo: dict[tuple[int, int, str], comp.Compensation] = {}

    @property
    def n_layers(self) -> int:
        return len(self.kernel_codes)

    def method_for(self, layer: int, circuit: int) -> str:
        if int(circuit) == self.exact_index:
            return "none"
        if self.method == "search":
            return self.catalog.design_methods[int(circuit)]
        if self.method != "auto":
            return self.method
        if self.rule is None:
            raise RuntimeError("auto compensation: call choose() first")
        return self.rule[layer][int(circuit)]

    def compensation(self, layer: int, circuit: int, method: str | None = None) -> comp.Compensation | None:
        method = method or self.method_for(layer, circuit)
        if method == "none":
            return None
        key = (layer, int(circuit), method)
        if key not in self._memo:
            s_in, s_w = self.scales[layer]
            self._memo[key] = comp.fit(method, self.catalog[int(circuit)].lut, self.channel_hists[layer],
                                       self.kernel_codes[layer], s_in, s_w)
        return self._memo[key]

    def labels(self, genome) -> list[str]:
        return [self.method_for(layer, g) for layer, g in enumerate(genome)]

    def residual_noise(self, taps, output_std) -> np.ndarray:
        """(n_layers, n_circuits, 3): error bias, noise std and mean |error| that each
        compensated design adds to its layer's outputs, in units of their spread."""
        out = np.zeros((self.n_layers, len(self.catalog), 3))
        for layer in range(self.n_layers):
            s_in, s_w = self.scales[layer]
            unit = s_in * s_w / max(output_std[layer], 1e-12)
            act = self.channel_hists[layer].sum(axis=0)
            for m, entry in enumerate(self.catalog):
                c = self.compensation(layer, m) or comp.Compensation("none")
                bias, std, mae = comp.residual_statistics(c, entry.lut, act, self.kernel_hists[layer])
                k = taps[layer]
                out[layer, m] = (k * bias * unit, np.sqrt(k) * std * unit, k * mae * unit)
        return out

    # ------------------------------------------------------------------ the auto rule

    def rule_key(self, model_digest: str, images_digest: str, layers: list[str] | None = None) -> str:
        """`layers`: the approximable layers when not the model's conv layers (conv+dense)."""
        parts = {"version": RULE_VERSION, "model": model_digest, "catalog": self.catalog.fingerprint,
                 "images": images_digest, "candidates": comp.AUTO_CANDIDATES}
        if layers is not None:
            parts["layers"] = list(layers)
        return fingerprint(parts)

    def choose(self, loss_fn, set_layer, key: str, store: Path | None, quiet: bool = False) -> None:
        """Fill the auto rule: `set_layer(layer, circuit, compensation)` puts one design in
        place (the other layers exact), `loss_fn()` scores the network on the rule images."""
        path = None if store is None else Path(store) / f"compensation-rule-{key[:16]}.json"
        if path is not None and path.is_file():
            try:
                saved = json.loads(path.read_text())
                if saved.get("key") == key:
                    self.rule = saved["rule"]
                    return
            except (ValueError, KeyError):
                pass  # unreadable: measure again and overwrite
        rule = [["none"] * len(self.catalog) for _ in range(self.n_layers)]
        losses = {}
        jobs = [(layer, m) for layer in range(self.n_layers) for m in range(len(self.catalog)) if m != self.exact_index]
        for layer, m in tqdm(jobs, desc="auto compensation rule", unit="design", disable=quiet or None, dynamic_ncols=True):
            scores = {}
            for method in comp.AUTO_CANDIDATES:
                set_layer(layer, m, self.compensation(layer, m, method))
                scores[method] = float(loss_fn())
            rule[layer][m] = min(scores, key=scores.get)
            losses[f"{layer},{m}"] = scores
            set_layer(layer, self.exact_index, None)
        self.rule = rule
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps({"key": key, "rule": rule, "losses": losses}) + "\n")
                os.replace(tmp, path)
            except OSError as exc:
                raise UserError(f"{path}: cannot store the compensation rule ({exc.strerror or exc})") from None
