"""Error compensation of an approximate layer: what a designer can do for free in hardware.

An EvoApprox circuit's error is mostly one-signed, so over K = kh*kw*cin products the
mean error grows with K while the random part grows with sqrt(K). Two fixes change no
multiplier and cost no energy:

- **bias**: per output channel c subtract the expected error from the accumulator's
  bias, ``delta_c = s_in*s_w * SUM_taps SUM_a p_ci(a) * (T[a, w] - a*w)``, where ``p_ci``
  is the histogram of input channel ci's activation codes on calibration images of the
  training split and ``T`` the table the layer uses (the tuned one for tune+bias).
- **tune** (ALWANN's weight tuning): store weight code ``w' = argmin_w' SUM_a p(a) *
  |a*w - LUT[a, w']|`` instead of w, where p is the layer's activation-code histogram
  (``alwann``: ALWANN's original rule with uniform p). The layer then multiplies by
  ``LUT[a, map[w]]``, i.e. uses the column-remapped table ``LUT[:, map]``.

Everything here is numpy on 256x256 tables; `AxConv2D.set_multiplier` applies it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("none", "bias", "tune", "alwann", "tune+bias")


# Candidates of the per-(layer, circuit) rule "auto" (alwann is kept for comparison only:
# measured worse than the histogram-weighted tune, see experiments/compensation/).
AUTO_CANDIDATES = ("none", "bias", "tune", "tune+bias")


# "search": the compensation is part of the gene (see designs.design_catalog).
CHOICES = METHODS + ("auto", "search")


_CODES = np.arange(256, dtype=np.float64)


_EXACT = np.multiply.outer(_CODES, _CODES)


@dataclass(frozen=True)
class Compensation:
    """One layer's compensation: the stored weight-code map and the bias offsets."""

    method: str
    weight_map: np.ndarray | None = None  # (256,) int: code stored for weight code w
    bias_offset: np.ndarray | None = None  # (cout,) float32: subtracted from the output

    def table(self, lut: np.ndarray) -> np.ndarray:
        """The table the layer effectively multiplies with."""
        return lut if self.weight_map is None else np.ascontiguousarray(lut[:, self.weight_map])


def check_method(method: str, flag: str = "--compensation", allowed=CHOICES) -> str:
    from surrogate_nas.errors import UserError

    if method not in allowed:
        raise UserError(f"{flag}: expected one of {', '.join(allowed)}, got {method!r}")
    return method


def code_distribution(hist) -> np.ndarray:
    p = np.asarray(hist, dtype=np.float64)
    total = p.sum(axis=-1, keepdims=True)
    return np.divide(p, total, out=np.full_like(p, 1.0 / p.shape[-1]), where=total > 0)


def tuned_weight_map(lut: np.ndarray, activation_hist=None) -> np.ndarray:
    """ALWANN weight tuning: for each weight code w the stored code w' minimising the
    expected |a*w - LUT[a, w']| over activation codes a (uniform when no histogram).
    Ties keep w itself, so the exact table maps to the identity."""
    p = np.full(256, 1.0 / 256) if activation_hist is None else code_distribution(activation_hist)
    table = np.asarray(lut, dtype=np.float64)
    cost = np.empty((256, 256))
    for w in range(256):
        cost[w] = p @ np.abs(_CODES[:, None] * w - table)
    best = np.argmin(cost, axis=1)
    identity = np.arange(256)
    keep = cost[identity, identity] <= cost[identity, best]
    return np.where(keep, identity, best).astype(np.int64)


def bias_offsets(table: np.ndarray, channel_hists, kernel_codes: np.ndarray, scale_in: float, scale_w: float) -> np.ndarray:
    """Expected output error per output channel (what `bias` subtracts).

    channel_hists: (cin, 256) input-code counts per input channel; kernel_codes: integer
    codes (kh, kw, cin, cout) of the layer's (fake-quantized) kernel; table: the table the
    layer multiplies with."""
    err = np.asarray(table, dtype=np.float64) - _EXACT
    p = code_distribution(channel_hists)  # cin x 256
    mean_err = p @ err  # [ci, w] = E_a~p_ci[T[a, w] - a*w]
    codes = np.asarray(kernel_codes, dtype=np.int64)
    cin = codes.shape[2]
    per_tap = mean_err[np.arange(cin)[None, None, :, None], codes]
    return (float(scale_in) * float(scale_w) * per_tap.sum(axis=(0, 1, 2))).astype(np.float32)


def fit(method: str, lut: np.ndarray, channel_hists, kernel_codes, scale_in: float, scale_w: float) -> Compensation:
    """The compensation `method` of one layer from its calibration statistics."""
    check_method(method, allowed=METHODS)
    weight_map = None
    if method in ("tune", "tune+bias"):
        weight_map = tuned_weight_map(lut, np.asarray(channel_hists).sum(axis=0))
    elif method == "alwann":
        weight_map = tuned_weight_map(lut, None)
    comp = Compensation(method, weight_map)
    if method in ("bias", "tune+bias"):
        offset = bias_offsets(comp.table(lut), channel_hists, kernel_codes, scale_in, scale_w)
        comp = Compensation(method, weight_map, offset)
    return comp


def residual_statistics(comp: Compensation, lut: np.ndarray, activation_hist, kernel_hist) -> tuple[float, float, float]:
    """(bias, std, mean |error|) of one product's error after compensation, under the
    layer's code distributions: what the surrogate sees of a compensated design."""
    p_in = code_distribution(activation_hist)
    p_w = code_distribution(kernel_hist)
    err = np.asarray(comp.table(lut), dtype=np.float64) - _EXACT
    mean = float(p_in @ err @ p_w)
    std = float(np.sqrt(max(float(p_in @ (err**2) @ p_w) - mean**2, 0.0)))
    if comp.bias_offset is not None:
        err = err - mean  # the per-channel offsets remove the expected error
        mean = 0.0
    return mean, std, float(p_in @ np.abs(err) @ p_w)


def design_catalog(catalog):
    """For `--compensation search`: one entry per (circuit, candidate method), so that a
    gene picks both. Entries of one circuit are adjacent (SBX neighbours are related
    designs); the exact circuit appears once, uncompensated. Names: `mul8u_DM1+bias`."""
    from surrogate_nas.multipliers.catalog import Catalog, Multiplier  # noqa: I001  (catalog imports tables only)

    entries, methods = [], []
    for e in catalog:
        for method in ("none",) if e.is_exact else AUTO_CANDIDATES:
            name = e.name if method == "none" else f"{e.name}+{method}"
            entries.append(Multiplier(name, e.lut, e.power_mw, e.sha256, e.csv, e.metrics))
            methods.append(method)
    designs = Catalog(entries, catalog.path, exact=catalog.exact.name)
    designs.design_methods = methods
    return designs
