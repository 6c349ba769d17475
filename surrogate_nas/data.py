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
import io
import os
import pickle
import tarfile
import tempfile
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm import tqdm

from surrogate_nas.errors import UserError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SOURCE_SPLITS = ("train", "test")  # the folders of a dataset (scored splits: evaluate.SCORED_SPLITS)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
OFFICIAL_DIR = "cifar-10-batches-py"
OFFICIAL_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
KIND_OFFICIAL = "CIFAR-10 (official python release)"
KIND_JPEG = "CIFAR-10 (JPEG copy)"
KIND_IMAGES = "CIFAR-10 (image folder)"
KIND_FOLDER = "image folder"  # any other image-folder dataset
KIND_KERAS = "CIFAR-10 (official, keras download)"
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError)  # PIL raises all three for broken files


@dataclass(frozen=True)
class Cifar10:
    """A dataset (CIFAR-10 or any image-folder dataset; the name is historical)."""

    x_train: np.ndarray  # (N, H, W, C) uint8, C = 1 or 3 (CIFAR-10: 32x32x3)
    y_train: np.ndarray  # (N,) uint8 or int64, index into classes
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    source_hash: str
    classes: tuple[str, ...] = CLASSES


Dataset = Cifar10


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


# --------------------------------------------------------------------------- public API


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
    data = Cifar10(*arrays, source=f"{label} from {path}", source_hash=source_hash, classes=tuple(classes))
    if cache_file is not None:
        _write_cache(cache_file, data, label)
    return data


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


# --------------------------------------------------------------------------- sampling


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


# --------------------------------------------------------------------------- hashing, cache


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
    return Cifar10(*arrays, source=f"{label} from {path}", source_hash=source_hash, classes=classes)


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


# --------------------------------------------------------------------------- keras download


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


# --------------------------------------------------------------------------- folders


def _detect_folder(path: Path) -> tuple[str, Path]:
    """Find which layout a folder holds, allowing one extra level above it."""
    for root in (path, path / OFFICIAL_DIR):
        if root.is_dir() and any((root / name).is_file() for name in OFFICIAL_FILES):
            return "official", root
    candidates = [path]
    subdirs = [d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if len(subdirs) == 1:
        candidates.append(subdirs[0])
    for root in candidates:
        if any((root / split).is_dir() for split in SOURCE_SPLITS):
            return "images", root
    raise UserError(
        f"{path}: no data found (expected CIFAR-10's {OFFICIAL_DIR}/ batch files or train/ and test/ class folders)"
    )


def _folder_files(kind: str, root: Path) -> list[str]:
    """Relative paths of the files that make up the dataset, after checking the layout."""
    if kind == "official":
        missing = [name for name in OFFICIAL_FILES if not (root / name).is_file()]
        if missing:
            raise UserError(f"{root}: official CIFAR-10 batch file(s) missing: {', '.join(missing)}")
        return list(OFFICIAL_FILES)
    listing: dict[str, dict[str, list[str]]] = {}
    for split in SOURCE_SPLITS:
        if not (root / split).is_dir():
            continue
        listing[split] = {}
        for entry in sorted((root / split).iterdir()):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                if entry.suffix.lower() in IMAGE_SUFFIXES:
                    raise UserError(f"{entry}: image outside a class folder (expected {split}/<class>/<image>)")
                continue
            listing[split][entry.name] = [
                f.name for f in entry.iterdir()
                if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES
            ]
    classes = _check_layout(root, listing)
    return [f"{split}/{cls}/{name}" for split in SOURCE_SPLITS for cls in classes for name in sorted(listing[split][cls])]


def _check_layout(where: Path | str, listing: dict[str, dict[str, list[str]]]) -> tuple[str, ...]:
    """The classes (sorted folder names): train/ and test/ must hold the same class folders,
    at least two, none empty."""
    for split in SOURCE_SPLITS:
        if split not in listing:
            raise UserError(f"{where}: no {split}/ folder (expected train/<class>/ and test/<class>/)")
    found = {split: set(listing[split]) for split in SOURCE_SPLITS}
    if found["train"] != found["test"]:
        differences = "; ".join(f"{split}/ lacks {', '.join(sorted(found[other] - found[split]))}"
                                for split, other in (("train", "test"), ("test", "train")) if found[other] - found[split])
        raise UserError(f"{where}: train/ and test/ must hold the same class folders; train/ has "
                        f"[{', '.join(sorted(found['train']))}], test/ has [{', '.join(sorted(found['test']))}]: "
                        f"{differences}")
    classes = tuple(sorted(found["train"]))
    if len(classes) < 2:
        raise UserError(f"{where}: train/ holds {len(classes)} class folder(s); a classifier needs at least 2")
    for split in SOURCE_SPLITS:
        empty = [c for c in classes if not listing[split][c]]
        if empty:
            raise UserError(f"{where}: {split}/ class folder(s) without images: {', '.join(empty)}")
    return classes


def _read_image_folder(root: Path, files: list[str], progress: bool):
    classes = tuple(sorted({rel.split("/")[1] for rel in files}))
    images, labels, wheres = {s: [] for s in SOURCE_SPLITS}, {s: [] for s in SOURCE_SPLITS}, {s: [] for s in SOURCE_SPLITS}
    for rel in tqdm(files, desc="decoding images", unit="img", disable=(not progress) or None):
        split, cls, _ = rel.split("/")
        try:
            content = (root / rel).read_bytes()
        except OSError as exc:
            raise UserError(f"{root / rel}: cannot read ({_one_line(exc)})") from None
        images[split].append(_decode_image(content, root / rel))
        labels[split].append(classes.index(cls))
        wheres[split].append(root / rel)
    arrays = _stack(images, labels, wheres)
    return arrays, _image_kind(files, classes, arrays[0].shape[1:]), classes


# --------------------------------------------------------------------------- archives


def _read_archive(path: Path, progress: bool):
    """Stream the tar once, decoding members as they come (no extraction to disk)."""
    images: dict[tuple[str, str, str], np.ndarray] = {}
    dirs: dict[str, set[str]] = {}
    batches: dict[str, bytes] = {}
    tops: set[str] = set()
    member = None
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar, tqdm(
            total=path.stat().st_size, desc="decoding CIFAR-10", unit="B", unit_scale=True, disable=(not progress) or None
        ) as bar:
            for member in tar:
                bar.update(raw.tell() - bar.n)
                parts = PurePosixPath(member.name).parts
                parts = parts[1:] if parts and parts[0] == "." else parts
                if not parts or any(p.startswith(".") for p in parts):
                    continue
                if member.isfile() and parts[-1] in OFFICIAL_FILES and len(parts) <= 2:
                    batches[parts[-1]] = _member_bytes(tar, member)
                    continue
                offset = 0 if parts[0] in SOURCE_SPLITS else 1 if len(parts) > 1 and parts[1] in SOURCE_SPLITS else None
                if offset is None:
                    continue
                tops.add("/".join(parts[:offset]))
                split, rest = parts[offset], parts[offset + 1:]
                dirs.setdefault(split, set())
                if member.isdir():
                    if len(rest) == 1:
                        dirs[split].add(rest[0])
                    continue
                if not member.isfile() or PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if len(rest) != 2:
                    raise UserError(f"{path}: {member.name}: image not directly in a class folder ({split}/<class>/<image>)")
                dirs[split].add(rest[0])
                images[(split, rest[0], rest[1])] = _decode_image(_member_bytes(tar, member), f"{path}: {member.name}")
            bar.update(path.stat().st_size - bar.n)
    except _ARCHIVE_ERRORS as exc:
        at = f" at {member.name}" if member is not None else ""
        raise UserError(f"{path}: corrupt, truncated or unreadable archive{at} ({_one_line(exc)})") from None

    if batches and images:
        raise UserError(f"{path}: holds both official batch files and image folders; use one layout per archive")
    if batches:
        missing = [name for name in OFFICIAL_FILES if name not in batches]
        if missing:
            raise UserError(f"{path}: official CIFAR-10 batch file(s) missing: {', '.join(missing)}")
        arrays, label = _read_official([(f"{path}: {name}", lambda b=batches[name]: b) for name in OFFICIAL_FILES])
        return arrays, label, CLASSES
    if not dirs:
        raise UserError(
            f"{path}: no data found (expected CIFAR-10's {OFFICIAL_DIR}/ batch files or train/ and test/ class folders)"
        )
    if len(tops) > 1:
        raise UserError(f"{path}: several top-level folders hold train/ or test/: {', '.join(sorted(tops))}")
    listing = {split: {cls: [] for cls in classes} for split, classes in dirs.items()}
    for split, cls, name in images:
        listing[split][cls].append(name)
    classes = _check_layout(path, listing)
    keys = sorted(images, key=lambda k: (SOURCE_SPLITS.index(k[0]), classes.index(k[1]), k[2]))
    stacked_images, labels, wheres = {s: [] for s in SOURCE_SPLITS}, {s: [] for s in SOURCE_SPLITS}, {s: [] for s in SOURCE_SPLITS}
    top = "/".join(p for p in tops if p)
    for split, cls, name in keys:
        stacked_images[split].append(images[(split, cls, name)])
        labels[split].append(classes.index(cls))
        wheres[split].append(f"{path}: {top + '/' if top else ''}{split}/{cls}/{name}")
    arrays = _stack(stacked_images, labels, wheres)
    return arrays, _image_kind([k[2] for k in keys], classes, arrays[0].shape[1:]), classes


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(member)
    assert fh is not None  # regular file
    return fh.read()


# --------------------------------------------------------------------------- decoding


GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _decode_image(content: bytes, where) -> np.ndarray:
    """(H, W, 1) for a grayscale image, (H, W, 3) for any other."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(content)) as img:
            if img.mode in GRAY_MODES:
                return np.asarray(img.convert("L"), dtype=np.uint8)[:, :, None]
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except _IMAGE_ERRORS as exc:
        raise UserError(f"{where}: cannot decode image ({_one_line(exc)})") from None


class _ArrayUnpickler(pickle.Unpickler):
    """Refuse anything but the numpy/bytes globals the official batches use: pickles can run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_official(batches: list[tuple[str, Callable[[], bytes]]]):
    """Decode (where, read_bytes) pairs in OFFICIAL_FILES order into train/test arrays."""
    images, labels = {s: [] for s in SOURCE_SPLITS}, {s: [] for s in SOURCE_SPLITS}
    for where, read in batches:
        try:
            d = _ArrayUnpickler(io.BytesIO(read()), encoding="bytes").load()
            x = np.asarray(d[b"data"])
            y = np.asarray(d[b"labels"], dtype=np.int64)
        except OSError as exc:
            raise UserError(f"{where}: cannot read ({_one_line(exc)})") from None
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise UserError(f"{where}: not a CIFAR-10 batch file ({_one_line(exc)})") from None
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or y.shape != (len(x),):
            raise UserError(f"{where}: data is {x.shape} {x.dtype} with {y.size} labels, expected (N, 3072) uint8 and N labels")
        if len(y) and (y.min() < 0 or y.max() >= len(CLASSES)):
            raise UserError(f"{where}: labels outside 0..{len(CLASSES) - 1}")
        split = "test" if where.endswith("test_batch") else "train"
        images[split].append(x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels[split].append(y)
    out = []
    for split in SOURCE_SPLITS:
        out += [np.ascontiguousarray(np.concatenate(images[split])), np.concatenate(labels[split]).astype(np.uint8)]
    return out, KIND_OFFICIAL


def _stack(images: dict[str, list], labels: dict[str, list], wheres: dict[str, list] | None = None) -> list[np.ndarray]:
    """Train and test arrays. Every image must have the size most of them have (the first
    that does not is named); grayscale images join colour ones as grey RGB."""
    sizes: dict[tuple[int, int], int] = {}
    for split in SOURCE_SPLITS:
        for img in images[split]:
            sizes[img.shape[:2]] = sizes.get(img.shape[:2], 0) + 1
    if len(sizes) > 1:
        size = max(sizes, key=sizes.get)
        for split in SOURCE_SPLITS:
            for i, img in enumerate(images[split]):
                if img.shape[:2] != size:
                    where = wheres[split][i] if wheres else f"{split} image {i}"
                    raise UserError(f"{where}: image is {img.shape[1]}x{img.shape[0]}, expected {size[1]}x{size[0]} "
                                    "(the size of the other images)")
    colour = any(img.shape[2] == 3 for split in SOURCE_SPLITS for img in images[split])
    out = []
    for split in SOURCE_SPLITS:
        stack = [np.repeat(img, 3, axis=2) if colour and img.shape[2] == 1 else img for img in images[split]]
        y = np.asarray(labels[split], dtype=np.int64)
        out += [np.stack(stack), y.astype(np.uint8) if y.size == 0 or y.max() < 256 else y]
    return out


def _image_kind(names: list[str], classes=CLASSES, shape=(32, 32, 3)) -> str:
    """CIFAR-10 when its ten classes at 32x32x3; JPEG is lossy, so results on it must say
    so (see the shared dataset README)."""
    jpeg = any(n.lower().endswith((".jpg", ".jpeg")) for n in names)
    if tuple(classes) == CLASSES and tuple(shape) == (32, 32, 3):
        return KIND_JPEG if jpeg else KIND_IMAGES
    return (f"{KIND_FOLDER}{' (JPEG)' if jpeg else ''}, {len(classes)} classes, "
            f"{'x'.join(str(int(d)) for d in shape)}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


load_images = load_cifar10  # the same loader, named for what it does for any image-folder dataset

__all__ = ["CLASSES", "Cifar10", "Dataset", "Splits", "load_cifar10", "load_images", "make_splits", "search_subset"]
