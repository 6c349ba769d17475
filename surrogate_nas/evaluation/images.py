"""The images a genome is scored on (search set, all validation, test, calibration), each
with a digest, so that a cached accuracy is only reused for the very same pixels."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from surrogate_nas.errors import UserError

SCORED_SPLITS = ("validation", "test")  # what a genome is scored on (the data's folders: data.SOURCE_SPLITS)


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class ImageSet:
    """The images a genome is scored on, and what identifies them for the cache."""

    images: np.ndarray
    labels: np.ndarray
    split: str
    indices: np.ndarray  # into the split
    data_sha256: str

    @property
    def description(self) -> dict:
        return {
            "split": self.split,
            "n_images": int(len(self.labels)),
            "indices_sha256": hashlib.sha256(self.indices.astype(np.int64).tobytes()).hexdigest(),
            "data_sha256": self.data_sha256,
            "images_sha256": _digest(self.images, self.labels),
        }


def select_images(splits, data_sha256: str, split: str = "validation", n_images: int | None = 2000, seed: int = 0) -> ImageSet:
    """The search set (a stratified validation subset) or a test subset/the full test set."""
    from surrogate_nas.data.splits import search_subset

    if split not in SCORED_SPLITS:
        raise UserError(f"--split: expected one of {', '.join(SCORED_SPLITS)}, got {split!r}")
    x, y = (splits.x_val, splits.y_val) if split == "validation" else (splits.x_test, splits.y_test)
    if n_images is None or n_images == len(y):
        idx = np.arange(len(y))
    else:
        if not 1 <= n_images <= len(y):
            raise UserError(f"--images: must be between 1 and {len(y)} for the {split} split, got {n_images}")
        idx = search_subset(y, size=n_images, seed=seed)
    return ImageSet(x[idx], np.asarray(y[idx]), split, idx, data_sha256)


def calibration_set(splits, data_sha256: str, seed: int = 0) -> ImageSet:
    """The training images behind calibration: the same ones `train` measured the
    input ranges on (seeded, so the card's `calibration_indices_sha256` matches)."""
    from surrogate_nas.data.splits import calibration_indices

    idx = calibration_indices(len(splits.y_train), seed)
    return ImageSet(splits.x_train[idx], np.asarray(splits.y_train[idx]), "train", idx, data_sha256)
