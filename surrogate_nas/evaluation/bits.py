"""Per-image correctness of a true evaluation, as the cache and the run folders store it.

A packed bitset: numpy.packbits with bitorder "little", so bit k (value 1 << k) of byte j
is image 8 j + k of the evaluator's scoring order (`Evaluator.order`: the fixed random
permutation of the scored images, seed `ORDER_SEED`); the pad bits of the last byte are
0. 2,000 images take 250 bytes. An early-stopped evaluation holds the bits of the images
it scored (the first `n_images` of that order).
"""

from __future__ import annotations

import numpy as np


def pack_correct(right) -> bytes:
    """Pack a boolean vector (image right?) in the stored bit order."""
    return np.packbits(np.asarray(right, dtype=bool), bitorder="little").tobytes()


def unpack_correct(bits: bytes, n_images: int) -> np.ndarray:
    """The boolean vector `pack_correct` packed (`n_images` long)."""
    if len(bits) != (n_images + 7) // 8:
        raise ValueError(f"{len(bits)} bytes of correctness bits cannot hold exactly {n_images} images")
    return np.unpackbits(np.frombuffer(bytes(bits), np.uint8), count=n_images, bitorder="little").astype(bool)


def popcount(bits: bytes) -> int:
    """Images right in a packed correctness bitset (pad bits are 0)."""
    return sum(int(b).bit_count() for b in bytes(bits))


def check_bits(bits: bytes, n_images: int | None, accuracy: float) -> bytes:
    """`bits` as bytes, when they hold `n_images` images and accuracy * n_images right."""
    bits = bytes(bits)
    if n_images is None or len(bits) != (int(n_images) + 7) // 8:
        raise ValueError(f"correct_bits: {len(bits)} bytes do not hold n_images={n_images} images")
    if popcount(bits) != round(float(accuracy) * int(n_images)):
        raise ValueError(f"correct_bits: {popcount(bits)} images right, but accuracy {accuracy} "
                         f"of {n_images} images says {round(float(accuracy) * int(n_images))}")
    return bits
