"""Accuracy surrogate: genome features from multiplier error statistics, and a
bootstrap ensemble of gradient-boosted trees that predicts accuracy with an uncertainty.

Features, per approximable layer l with assigned circuit m (n_layers x 12), then totals (4):
  mae, wce, ep_pct, mre_pct, mse, mean_error, error_std   the raw table's own error metrics
  power_mw                                                the circuit's power
  mac_share                                               layer's share of all MACs
  noise_bias   K * s_in * s_w * E_p[T - a*w] / std(y_l)   mean error the compensated design
                                                          adds to the layer's outputs after
                                                          its bias offsets, in units of their
                                                          spread (T = the table the design
                                                          multiplies with, p = the layer's
                                                          code distributions on calibration
                                                          images)
  noise_std    sqrt(K) * s_in * s_w * Std_p[T - a*w] / std(y_l)   noise it adds, same units
  noise_mae    K * s_in * s_w * E_p|residual error| / std(y_l)
  totals: relative energy, sum and max of noise_std, sum of |noise_bias|
The noise features describe the error left after compensation (designs.residual_noise).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import kendalltau
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.ensemble import GradientBoostingRegressor, HistGradientBoostingRegressor
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.model_selection import KFold, cross_val_score
from threadpoolctl import threadpool_limits

METRICS = ("mae", "wce", "ep_pct", "mre_pct", "mse", "mean_error", "error_std")


LAYER_FEATURES = METRICS + ("power_mw", "mac_share", "noise_bias", "noise_std", "noise_mae")


TOTAL_FEATURES = ("energy", "noise_std_sum", "noise_std_max", "noise_bias_abs_sum")


def feature_names(layers) -> list[str]:
    """Column names of the feature matrix; `layers`: the number of approximable layers,
    or their Keras names (then the columns are `conv1_mae`, ...)."""
    names = [f"l{l + 1}" for l in range(layers)] if isinstance(layers, int) else list(layers)
    return [f"{name}_{f}" for name in names for f in LAYER_FEATURES] + list(TOTAL_FEATURES)


class GenomeFeatures:
    """Maps genomes (rows of catalog indices) to the feature matrix described above."""

    def __init__(self, catalog, macs, energy_model, noise: np.ndarray):
        self.energy_model = energy_model
        metrics = np.array([[getattr(e.metrics, k) for k in METRICS] for e in catalog], dtype=np.float64)
        powers = np.array([e.power_mw for e in catalog], dtype=np.float64)
        self.per_circuit = np.column_stack([metrics, powers])  # (M, 8)
        self.mac_share = np.asarray(macs, np.float64) / float(np.sum(macs))
        self.noise = noise
        self.n_layers = len(macs)

    def transform(self, genomes) -> np.ndarray:
        G = np.asarray(genomes, dtype=np.int64).reshape(-1, self.n_layers)
        blocks = []
        for l in range(self.n_layers):
            idx = G[:, l]
            blocks.append(self.per_circuit[idx])
            blocks.append(np.full((len(G), 1), self.mac_share[l]))
            blocks.append(self.noise[l, idx])
        per_layer = np.hstack(blocks)
        noise_std = np.stack([self.noise[l, G[:, l], 1] for l in range(self.n_layers)], axis=1)
        noise_bias = np.stack([self.noise[l, G[:, l], 0] for l in range(self.n_layers)], axis=1)
        totals = np.column_stack(
            [self.energy_model.batch(G), noise_std.sum(1), noise_std.max(1), np.abs(noise_bias).sum(1)]
        )
        return np.hstack([per_layer, totals])


class AccuracySurrogate(RegressorMixin, BaseEstimator):
    """Bootstrap ensemble of gradient-boosting regressors: mean prediction and spread.

    `kind` is "hgb" (HistGradientBoostingRegressor) or "gbr" (GradientBoostingRegressor);
    `select_kind` picks between them by cross-validation on the data at hand.
    """

    def __init__(self, kind: str = "gbr", n_estimators: int = 200, learning_rate: float = 0.05,
                 max_depth: int = 3, n_members: int = 8, random_state: int = 0):
        self.kind = kind
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.n_members = n_members
        self.random_state = random_state

    def _base(self, seed: int):
        if self.kind == "hgb":
            return HistGradientBoostingRegressor(
                max_iter=self.n_estimators, learning_rate=self.learning_rate, max_depth=self.max_depth,
                min_samples_leaf=3, random_state=seed,
            )
        if self.kind == "gbr":
            return GradientBoostingRegressor(
                n_estimators=self.n_estimators, learning_rate=self.learning_rate, max_depth=self.max_depth,
                subsample=0.8, random_state=seed,
            )
        raise ValueError(f"kind: expected 'hgb' or 'gbr', got {self.kind!r}")

    def fit(self, X, y):
        # One OpenMP thread: on a 2-core machine shared with TensorFlow, histogram
        # boosting with several threads is tens of times slower, not faster.
        with threadpool_limits(1, "openmp"):
            return self._fit(X, y)

    def _fit(self, X, y):
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        rng = np.random.default_rng(self.random_state)
        self.members_ = []
        for i in range(self.n_members):
            rows = rng.integers(0, len(X), len(X)) if self.n_members > 1 else np.arange(len(X))
            self.members_.append(self._base(self.random_state + i).fit(X[rows], y[rows]))
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X, return_std: bool = False):
        X = np.asarray(X, dtype=np.float64)
        with threadpool_limits(1, "openmp"):
            preds = np.stack([m.predict(X) for m in self.members_])
        mean = preds.mean(axis=0)
        return (mean, preds.std(axis=0)) if return_std else mean


def select_kind(X, y, random_state: int = 0, folds: int = 5) -> tuple[str, dict[str, float]]:
    """Cross-validated R^2 of both regressor kinds (single members, for speed).

    With fewer than 2 * folds points R^2 per fold is meaningless: gbr is kept, unscored.
    """
    if len(y) < 2 * folds:
        return "gbr", {}
    scores = {}
    cv = KFold(n_splits=folds, shuffle=True, random_state=random_state)
    for kind in ("gbr", "hgb"):
        est = clone(AccuracySurrogate(kind=kind, n_members=1, random_state=random_state))
        scores[kind] = float(np.mean(cross_val_score(est, X, y, cv=cv, scoring="r2")))
    return max(scores, key=scores.get), scores


def prediction_quality(pred, true) -> tuple[float, float, float]:
    """R^2, mean absolute error and Kendall's tau of predicted against true accuracies."""
    pred, true = np.asarray(pred), np.asarray(true)
    if len(true) < 2:
        return float("nan"), float(np.mean(np.abs(pred - true))) if len(true) else float("nan"), float("nan")
    tau = kendalltau(pred, true).statistic if np.ptp(true) > 0 and np.ptp(pred) > 0 else float("nan")
    r2 = r2_score(true, pred) if np.ptp(true) > 0 else float("nan")
    return float(r2), float(mean_absolute_error(true, pred)), float(tau)
