"""Every choice of image indices: train/validation split, the search subset, calibration
images and fine-tuning subsets, each stratified or seeded so it is the same on every run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from surrogate_nas.data.datasets import Cifar10
from surrogate_nas.errors import UserError


@dataclass(frozen=True)
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    train_idx: np.ndarray  # into the official training set
    val_idx: np.ndarray


def validation_size(n_train: int) -> int:
    """Images `make_splits` holds out by default: 5,000 of 50,000, or a tenth of a smaller set."""
    return 5000 if n_train >= 50000 else max(1, n_train // 10)


def make_splits(data: Cifar10, val_size: int | None = None, seed: int = 0) -> Splits:
    """Hold out a class-stratified validation set from the official training images.

    The test set stays untouched so that final numbers are comparable; stratifying keeps
    the validation accuracy from depending on which classes happened to be drawn.
    `val_size=None` means 5,000 (of 50,000), or a tenth of a smaller training set.
    """
    n_train = len(data.y_train)
    if val_size is None:
        val_size = validation_size(n_train)
    if not 1 <= val_size < n_train:
        raise UserError(f"validation size {val_size} must be between 1 and {n_train - 1} (training images: {n_train})")
    rng = np.random.default_rng(seed)
    val_idx = _stratified_sample(np.asarray(data.y_train), val_size, rng)
    keep = np.ones(n_train, dtype=bool)
    keep[val_idx] = False
    train_idx = np.flatnonzero(keep)
    return Splits(
        x_train=data.x_train[train_idx],
        y_train=data.y_train[train_idx],
        x_val=data.x_train[val_idx],
        y_val=data.y_train[val_idx],
        x_test=data.x_test,
        y_test=data.y_test,
        train_idx=train_idx,
        val_idx=val_idx,
    )


def search_subset(y_val: np.ndarray, size: int = 2000, seed: int = 0) -> np.ndarray:
    """Sorted indices of a fixed, class-stratified part of the validation set.

    The search evaluates many candidates; a smaller but stratified subset keeps each
    evaluation cheap while its accuracy stays an unbiased estimate of validation accuracy.
    """
    y_val = np.asarray(y_val)
    if not 1 <= size <= len(y_val):
        raise UserError(f"search subset size {size} must be between 1 and {len(y_val)} (validation images)")
    return _stratified_sample(y_val, size, np.random.default_rng(seed))


def _stratified_sample(y: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices: per-class counts proportional to class frequency (largest remainder).

    On a balanced label set this is equal per class; leftover slots go to classes in a
    seeded random order so no class is systematically favoured.
    """
    classes, counts = np.unique(y, return_counts=True)
    quota = size * counts / counts.sum()
    take = np.minimum(np.floor(quota).astype(np.int64), counts)
    left = size - int(take.sum())
    if left:
        priority = rng.permutation(len(classes))
        order = sorted(range(len(classes)), key=lambda i: (-(quota[i] - take[i]), priority[i]))
        for i in order:
            if left == 0:
                break
            if take[i] < counts[i]:
                take[i] += 1
                left -= 1
    chosen = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


CALIBRATION_IMAGES = 2000  # training images behind the compensation statistics


def calibration_indices(n_train: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 12345)
    return np.sort(rng.choice(n_train, size=min(CALIBRATION_IMAGES, n_train), replace=False))


def training_subset(y: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """A class-stratified subset of the training split (all of it when n is None)."""
    if n is None or n >= len(y):
        return np.arange(len(y))
    return np.sort(search_subset(y, size=n, seed=seed + 777))
