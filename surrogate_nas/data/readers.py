"""Readers of image datasets: image folders and archives in class folders (like the JPEG
copy of CIFAR-10) and CIFAR-10's official python release."""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm import tqdm

from surrogate_nas.errors import UserError, _one_line

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


class _EndMarkedInfo(tarfile.TarInfo):
    """tarfile ends an iteration as quietly on a cut or garbled header as on the real end
    (a zero block); this header class tells them apart, so that an archive cut between two
    members is an error, not a smaller dataset."""

    @classmethod
    def fromtarfile(cls, tar):
        try:
            return super().fromtarfile(tar)
        except tarfile.EOFHeaderError:
            tar.end_marked = True
            raise


def _read_archive(path: Path, progress: bool):
    """Stream the tar once, decoding members as they come (no extraction to disk)."""
    images: dict[tuple[str, str, str], np.ndarray] = {}
    dirs: dict[str, set[str]] = {}
    batches: dict[str, bytes] = {}
    tops: set[str] = set()
    member = None
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*", tarinfo=_EndMarkedInfo) as tar, tqdm(
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
            if not getattr(tar, "end_marked", False):
                raise tarfile.ReadError("it ends without tar's end-of-archive marker")
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
