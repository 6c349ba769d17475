"""A table as exact product plus a low-rank error (SVD): most circuits' errors have a
few factors, so the emulation needs a few float convolutions instead of a gather."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from threadpoolctl import threadpool_limits

from surrogate_nas.multipliers.tables import error_table, load_lut


@dataclass(frozen=True)
class Decomposition:
    """Error table factors: E[a, w] ~= sum_i u[a, i] * v[w, i].

    `max_abs_error` bounds |E - u v^T| over all 65,536 code pairs (0 when exact up to
    rounding); `weighted_rms_error` is the RMS of that residual under the code
    distributions used to weight the truncation (uniform when none were given).
    """

    u: np.ndarray  # (256, rank) float32, activation side
    v: np.ndarray  # (256, rank) float32, weight side
    full_rank: int
    exact: bool
    max_abs_error: float
    weighted_rms_error: float

    @property
    def rank(self) -> int:
        return int(self.u.shape[1])


def as_lut(lut) -> np.ndarray:
    """Accept a uint16 (256, 256) array, a `.bin` path, or a catalog entry (has `.lut`)."""
    if hasattr(lut, "lut"):
        lut = lut.lut
    if isinstance(lut, (str, Path)):
        lut = load_lut(Path(lut))
    if isinstance(lut, tf.Tensor):
        lut = lut.numpy()
    if not isinstance(lut, np.ndarray):
        raise TypeError(f"lut: expected a (256, 256) uint16 array, a .bin path or a catalog entry, got {type(lut).__name__}")
    if lut.shape != (256, 256):
        raise ValueError(f"lut: expected shape (256, 256), got {lut.shape}")
    if lut.dtype != np.uint16:
        if not np.issubdtype(lut.dtype, np.integer) or lut.min() < 0 or lut.max() > 65535:
            raise ValueError(f"lut: expected dtype uint16 (or integers in 0..65535), got {lut.dtype}")
        lut = lut.astype(np.uint16)
    return lut


@functools.lru_cache(maxsize=256)
def _svd(key: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    err = error_table(np.frombuffer(key, dtype=np.uint16).reshape(256, 256)).astype(np.float64)
    with threadpool_limits(1):  # 256x256: threads only add contention on a busy 2-core machine
        return np.linalg.svd(err)


def decompose(
    lut,
    max_rank: int | None = None,
    input_weights: np.ndarray | None = None,
    kernel_weights: np.ndarray | None = None,
) -> Decomposition:
    """Factor the error table of `lut`.

    With `max_rank=None` all components are kept (exact mode). With a `max_rank` the
    truncation minimises the error weighted by the code distributions the layer really
    sees (`input_weights`, `kernel_weights`: histograms over the 256 codes), so the
    neglected part is small where codes are frequent.
    """
    lut = as_lut(lut)
    err = error_table(lut).astype(np.float64)
    if max_rank is None or input_weights is None and kernel_weights is None:
        left, sing, right_t = _svd(np.ascontiguousarray(lut).tobytes())
        p_in = p_w = np.ones(256)
    else:
        p_in = _strictly_positive(input_weights)
        p_w = _strictly_positive(kernel_weights)
        ra, rw = np.sqrt(p_in), np.sqrt(p_w)
        left, sing, right_t = np.linalg.svd(ra[:, None] * err * rw[None, :])
        left = left / ra[:, None]
        right_t = right_t / rw[None, :]
    tol = sing[0] * 256 * np.finfo(np.float64).eps if sing.size and sing[0] > 0 else 0.0
    full_rank = int(np.sum(sing > tol))
    rank = full_rank if max_rank is None else min(full_rank, int(max_rank))
    root = np.sqrt(sing[:rank])
    u = left[:, :rank] * root[None, :]
    v = right_t[:rank, :].T * root[None, :]
    residual = err - u @ v.T
    weights = np.outer(p_in, p_w)
    weights /= weights.sum()
    return Decomposition(
        u=u.astype(np.float32),
        v=v.astype(np.float32),
        full_rank=full_rank,
        exact=rank == full_rank,
        max_abs_error=float(np.abs(residual).max()) if rank < full_rank else 0.0,
        weighted_rms_error=float(np.sqrt(np.sum(weights * residual**2))),
    )


def _strictly_positive(hist: np.ndarray | None) -> np.ndarray:
    """A strictly positive distribution over codes, so no code is ignored entirely."""
    if hist is None:
        return np.full(256, 1.0 / 256)
    p = np.asarray(hist, dtype=np.float64).reshape(256)
    p = p / max(p.sum(), 1e-300)
    p = p + 1e-6
    return p / p.sum()
