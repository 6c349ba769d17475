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
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from surrogate_nas.errors import UserError
from surrogate_nas.evaluation.cache import fingerprint
from surrogate_nas.multipliers import compensation as comp
from surrogate_nas.multipliers import pruning

RULE_IMAGES = 512  # calibration images scored per candidate by the auto rule


RULE_VERSION = "auto-1"


class LayerDesigns:
    """Compensation of every (layer, circuit), computed on demand and memoised."""

    def __init__(self, layers, catalog, method: str, channel_hists: list[np.ndarray], prune_k: int | None = None):
        """`prune_k`: the auto rule tests, per layer, only circuits dominated in (power,
        residual error) by fewer than k others (0: all; None: multipliers.pruning's default)."""
        self.method = comp.check_method(method)
        self.prune_k = pruning.effective_k(prune_k, len(catalog))
        self.prune_report: dict | None = None  # what pruning kept and what the rule cost
        self.catalog = catalog
        self.channel_hists = channel_hists
        self.kernel_codes = [layer.kernel_codes() for layer in layers]
        self.scales = [layer.scales() for layer in layers]
        self.kernel_hists = [np.bincount(c.ravel(), minlength=256) for c in self.kernel_codes]
        self.exact_index = catalog.exact_index
        self.rule: list[list[str | None]] | None = None  # [layer][circuit] method, for "auto"
        self.partial = False  # some rule entries left unmeasured (None) on purpose
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
        method = self.rule[layer][int(circuit)]
        if method is None:
            raise RuntimeError(f"auto compensation: the rule entry of layer {layer}, circuit {int(circuit)} "
                               "was not measured (the evaluator was built for other genomes)")
        return method

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

    def prune(self, k: int) -> np.ndarray:
        """(n_layers, n_circuits) bool: the circuits the auto rule tests in each layer,
        those dominated in (power, residual output error after their best candidate
        compensation, under the layer's code histograms) by fewer than `k` others. The
        exact reference is always kept; k = 0 keeps all (see multipliers/pruning.py)."""
        keep = np.ones((self.n_layers, len(self.catalog)), dtype=bool)
        if not k:
            return keep
        powers = self.catalog.powers
        for layer in range(self.n_layers):
            act = np.asarray(self.channel_hists[layer]).sum(axis=0)
            taps = int(np.prod(np.shape(self.kernel_codes[layer])[:-1]))
            errors = [pruning.output_error(e.lut, act, self.kernel_hists[layer], taps)[0] for e in self.catalog]
            keep[layer] = pruning.keep_mask(powers, errors, k)
            keep[layer, self.exact_index] = True
        return keep


    def rule_key(self, model_digest: str, images_digest: str, layers: list[str] | None = None) -> str:
        """`layers`: the approximable layers when not the model's conv layers (conv+dense)."""
        parts = {"version": RULE_VERSION, "model": model_digest, "catalog": self.catalog.fingerprint,
                 "images": images_digest, "candidates": comp.AUTO_CANDIDATES}
        if self.prune_k:  # absent when off: rules measured before pruning existed keep their keys
            parts["prune_k"] = self.prune_k
            parts["pruned_method"] = pruning.PRUNED_METHOD
        if layers is not None:
            parts["layers"] = list(layers)
        return fingerprint(parts)

    def choose(self, loss_fn, set_layer, key: str, store: Path | None, quiet: bool = False,
               shipped: Path | None = None, only: set | None = None) -> None:
        """Fill the auto rule: `set_layer(layer, circuit, compensation)` puts one design in
        place (the other layers exact), `loss_fn()` scores the network on the rule images.

        A whole rule is read from `store` or, shipped with a model, from
        `<shipped>.compensation-rule-<key>.json`. Without one, `only` ({(layer, circuit)})
        limits the measuring to those entries: the others stay None, nothing but the
        progress checkpoint is written, and a later whole rule reuses what was measured."""
        name = f"compensation-rule-{key[:16]}.json"
        path = None if store is None else Path(store) / name
        candidates = [c for c in (path, None if shipped is None else Path(f"{shipped}.{name}")) if c is not None]
        for found in candidates:
            if found.is_file():
                try:
                    saved = json.loads(found.read_text())
                    if saved.get("key") == key:
                        self.rule = saved["rule"]
                        self.prune_report = saved.get("prune")
                        return
                except (ValueError, KeyError):
                    pass  # unreadable: measure again (and overwrite the stored one)
        rule = [["none"] * len(self.catalog) for _ in range(self.n_layers)]
        losses = {}
        started = time.perf_counter()
        keep = self.prune(self.prune_k)
        pruned_seconds = time.perf_counter() - started
        jobs = []
        for layer in range(self.n_layers):
            for m in range(len(self.catalog)):
                if m == self.exact_index:
                    continue
                if not keep[layer, m]:
                    rule[layer][m] = pruning.PRUNED_METHOD
                elif only is None or (layer, m) in only:
                    jobs.append((layer, m))
                else:
                    rule[layer][m] = None
        if self.prune_k and not quiet:
            print(f"auto compensation rule: pruning (k={self.prune_k}) keeps "
                  f"{'/'.join(str(int(n)) for n in keep.sum(axis=1))} of {len(self.catalog)} circuits per layer "
                  f"({pruned_seconds:.0f} s); {len(jobs)} designs x {len(comp.AUTO_CANDIDATES)} methods to measure",
                  file=sys.stderr)
        # progress is checkpointed, so a stopped run resumes a long rule where it was
        partial = None if path is None else path.with_name(path.stem + ".partial.json")
        before = _read_partial(partial, key)
        losses.update(before.get("losses", {}))
        seconds_before = float(before.get("seconds_rule", 0.0))
        started = last_save = time.perf_counter()
        for layer, m in tqdm(jobs, desc="auto compensation rule", unit="design", disable=quiet or None, dynamic_ncols=True):
            scores = losses.get(f"{layer},{m}")
            if scores is None:
                scores = {}
                for method in comp.AUTO_CANDIDATES:
                    set_layer(layer, m, self.compensation(layer, m, method))
                    scores[method] = float(loss_fn())
                losses[f"{layer},{m}"] = scores
                set_layer(layer, self.exact_index, None)
            rule[layer][m] = min(scores, key=scores.get)
            if partial is not None and time.perf_counter() - last_save > CHECKPOINT_SECONDS:
                last_save = time.perf_counter()
                _write_json(partial, {"key": key, "losses": losses,
                                      "seconds_rule": seconds_before + last_save - started})
                if not quiet:
                    print(f"auto compensation rule: {len(losses)} of {len(jobs)} designs measured "
                          f"({seconds_before + last_save - started:.0f} s)", file=sys.stderr, flush=True)
        self.rule = rule
        self.partial = any(method is None for row in rule for method in row)
        if self.partial:
            if partial is not None and len(losses) > len(before.get("losses", {})):
                _write_json(partial, {"key": key, "losses": losses,
                                      "seconds_rule": seconds_before + time.perf_counter() - started})
            return
        self.prune_report = {
            "k": self.prune_k, "pruned_method": pruning.PRUNED_METHOD, "circuits": len(self.catalog),
            "kept_per_layer": [int(n) for n in keep.sum(axis=1)],
            "kept": [[self.catalog[int(m)].name for m in np.flatnonzero(row)] for row in keep] if self.prune_k else None,
            "one_layer_tests": len(jobs) * len(comp.AUTO_CANDIDATES),
            "seconds_prune": round(pruned_seconds, 2),
            "seconds_rule": round(seconds_before + time.perf_counter() - started, 2),
        }
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps({"key": key, "rule": rule, "losses": losses, "prune": self.prune_report})
                               + "\n")
                os.replace(tmp, path)
                if partial is not None and partial.exists():
                    partial.unlink()
            except OSError as exc:
                raise UserError(f"{path}: cannot store the compensation rule ({exc.strerror or exc})") from None


CHECKPOINT_SECONDS = 60.0  # how often a rule being measured saves its progress


def _read_partial(path: Path | None, key: str) -> dict:
    """A rule's saved progress (losses measured so far) under `key`, or {}."""
    if path is None or not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text())
    except ValueError:
        return {}
    return saved if isinstance(saved, dict) and saved.get("key") == key else {}


def _write_json(path: Path, doc: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"{path}: cannot store the compensation rule's progress ({exc.strerror or exc})") from None
