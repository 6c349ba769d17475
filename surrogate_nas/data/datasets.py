"""Image data: load it from whatever copy the user has, cache the decoded arrays, split it.

Accepted sources: CIFAR-10's official python release (`cifar-10-python.tar.gz` or its
folder), an image-folder layout `ROOT/{train,test}/<class>/*.{png,jpg,jpeg}` (folder or tar
archive, optionally one extra top-level folder) with any number of classes (the class
folders, sorted by name, are the labels; train/ and test/ must hold the same ones) and
any one image size, grayscale (1 channel) or colour (3), or nothing at all (CIFAR-10's
keras download). Decoding 60,000 images is slow, so decoded arrays are cached per source
content hash. The protocol is the same for every dataset: a stratified validation split
held out of the training images, the test split untouched.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from surrogate_nas.data.readers import (
    CLASSES,
    KIND_KERAS,
    _detect_folder,
    _folder_files,
    _read_archive,
    _read_image_folder,
    _read_official,
)
from surrogate_nas.errors import UserError, _one_line


@dataclass(frozen=True)
class Cifar10:
    """A dataset (CIFAR-10 or any image-folder dataset; the name is historical)."""

    x_train: np.ndarray  # (N, H, W, C) uint8, C = 1 or 3 (CIFAR-10: 32x32x3)
    y_train: np.ndarray  # (N,) uint8 or int64, index into classes
    x_test: np.ndarray
    y_test: np.ndarray
    source: str  # what and where, the path relative to the project root
    source_hash: str
    classes: tuple[str, ...] = CLASSES
    path: Path | None = None  # the file or folder read (None: the Keras download)


Dataset = Cifar10


def load_cifar10(path: str | Path | None, cache_dir: Path | None = None, progress: bool = True) -> Cifar10:
    """Load CIFAR-10 or an image-folder dataset from `path`, reusing decoded arrays from
    `cache_dir` when the source is unchanged."""
    if path is None:
        return _load_keras()
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path}: data not found")
    if path.is_dir():
        kind, root = _detect_folder(path)
        files = _folder_files(kind, root)
        source_hash = _hash_folder(root, files)
    else:
        kind, root, files = "archive", path, []
        source_hash = _hash_file(path)

    cache_file = Path(cache_dir) / f"cifar10-{source_hash[:16]}.npz" if cache_dir is not None else None
    if cache_file is not None and cache_file.exists():
        cached = _read_cache(cache_file, path, source_hash)
        if cached is not None:
            return cached

    classes = CLASSES
    if kind == "official":
        arrays, label = _read_official([(str(root / name), (root / name).read_bytes) for name in files])
    elif kind == "images":
        arrays, label, classes = _read_image_folder(root, files, progress)
    else:
        arrays, label, classes = _read_archive(path, progress)
    data = Cifar10(*arrays, source=_source(label, path), source_hash=source_hash, classes=tuple(classes), path=path)
    if cache_file is not None:
        _write_cache(cache_file, data, label)
    return data


def _source(label: str, path: Path) -> str:
    from surrogate_nas.config import portable, project_root

    return f"{label} from {portable(path, project_root())}"


def _hash_file(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({_one_line(exc)})") from None
    return h.hexdigest()


def _hash_folder(root: Path, files: list[str]) -> str:
    """Content hash over the files actually used, so a copied or touched folder keeps its cache."""
    h = hashlib.sha256()
    for rel in sorted(files):
        try:
            content = (root / rel).read_bytes()
        except OSError as exc:
            raise UserError(f"{root / rel}: cannot read ({_one_line(exc)})") from None
        h.update(f"{rel}\0{len(content)}\0".encode())
        h.update(content)
    return h.hexdigest()


def _read_cache(cache_file: Path, path: Path, source_hash: str) -> Cifar10 | None:
    """Return the cached arrays, or None after deleting a cache file that does not load cleanly."""
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            arrays = [z[k] for k in ("x_train", "y_train", "x_test", "y_test")]
            label = str(z["kind"])
            classes = tuple(str(c) for c in z["classes"]) if "classes" in z.files else CLASSES
        _check_arrays(*arrays, n_classes=len(classes))
    except Exception as exc:  # any damage means "rebuild"; the cache is disposable
        warnings.warn(f"{cache_file}: unreadable dataset cache ({_one_line(exc)}); rebuilding it", stacklevel=3)
        cache_file.unlink(missing_ok=True)
        return None
    return Cifar10(*arrays, source=_source(label, path), source_hash=source_hash, classes=classes, path=path)


def _write_cache(cache_file: Path, data: Cifar10, label: str) -> None:
    """Write via a temp file and os.replace so a crash never leaves a half-written cache behind."""
    tmp = None
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache_file.parent, prefix=".cifar10-", suffix=".tmp", delete=False) as fh:
            tmp = Path(fh.name)
            np.savez(
                fh, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test,
                kind=np.array(label), classes=np.array(data.classes),
            )
        os.chmod(tmp, 0o644)  # NamedTemporaryFile makes it 0600; the cache is shared by users of the checkout
        os.replace(tmp, cache_file)
    except OSError as exc:
        warnings.warn(f"{cache_file}: cannot write dataset cache ({_one_line(exc)}); continuing without it", stacklevel=3)
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _check_arrays(x_train, y_train, x_test, y_test, n_classes: int = len(CLASSES)) -> None:
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] not in (1, 3) or x.shape[1:] != x_train.shape[1:]:
            raise ValueError(f"{split} images have shape {x.shape} {x.dtype}, expected (N, H, W, 1 or 3) uint8 "
                             f"like the training images {x_train.shape[1:]}")
        if y.shape != (len(x),):
            raise ValueError(f"{split} labels have shape {y.shape}, expected ({len(x)},)")
        if len(y) and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"{split} labels outside 0..{n_classes - 1}")


def _keras_load_data():
    import keras  # imported here: TensorFlow takes seconds to import

    return keras.datasets.cifar10.load_data()


def _load_keras() -> Cifar10:
    try:
        (x_train, y_train), (x_test, y_test) = _keras_load_data()
    except Exception:
        raise UserError(
            "CIFAR-10 download failed (no network?): pass --data PATH to a local copy "
            "(official release, image folder or .tar.gz) or set SURROGATE_NAS_DATA"
        ) from None
    arrays = [np.ascontiguousarray(x_train, np.uint8), np.asarray(y_train, np.uint8).reshape(-1),
              np.ascontiguousarray(x_test, np.uint8), np.asarray(y_test, np.uint8).reshape(-1)]
    _check_arrays(*arrays)
    h = hashlib.sha256()
    for a in arrays:
        h.update(a.tobytes())
    return Cifar10(*arrays, source=KIND_KERAS, source_hash=h.hexdigest())


load_images = load_cifar10  # the same loader, named for what it does for any image-folder dataset
