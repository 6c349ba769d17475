"""CIFAR-10 loading, caching and splitting, on tiny datasets written in every accepted layout."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from surrogate_nas.data import datasets as D
from surrogate_nas.data import readers
from surrogate_nas.data.datasets import Cifar10, load_cifar10
from surrogate_nas.data.readers import CLASSES
from surrogate_nas.data.splits import make_splits, search_subset
from surrogate_nas.errors import UserError

N_TRAIN_PER_BATCH, N_TEST = 20, 10  # official layout: 5 batches of 20 -> 100 train images
PER_CLASS = {"train": 3, "test": 2}  # image-folder layout


def _random_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def _smooth_images(n: int, seed: int) -> np.ndarray:
    """Flat colours survive JPEG almost unchanged, so decoded pixels can be compared."""
    colours = np.random.default_rng(seed).integers(30, 225, size=(n, 1, 1, 3))
    return np.broadcast_to(colours, (n, 32, 32, 3)).astype(np.uint8)


# --------------------------------------------------------------------------- writers


def _write_official(root):
    """Write official-format batches; return the arrays they hold."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i, name in enumerate(readers.OFFICIAL_FILES):
        n = N_TEST if name == "test_batch" else N_TRAIN_PER_BATCH
        x = _random_images(n, seed=i)
        y = [(j + i) % 10 for j in range(n)]
        batch = {b"batch_label": name.encode(), b"data": x.transpose(0, 3, 1, 2).reshape(n, 3072),
                 b"labels": y, b"filenames": [f"{j}.png".encode() for j in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        xs.append(x)
        ys.append(np.array(y))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CLASSES]}, protocol=2))
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5]


def _write_image_folder(root, fmt: str):
    """Write ROOT/{train,test}/<class>/NNNN.<fmt> in shuffled order; return arrays in sorted order."""
    make = _random_images if fmt == "png" else _smooth_images
    out = []
    for s, split in enumerate(("train", "test")):
        k = PER_CLASS[split]
        x = make(10 * k, seed=100 + s)
        y = np.repeat(np.arange(10), k)
        jobs = [(c, j) for c in range(10) for j in range(k)]
        for idx in np.random.default_rng(s).permutation(len(jobs)):
            c, j = jobs[idx]
            path = root / split / CLASSES[c] / f"{j:04d}.{fmt}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[c * k + j]).save(path, **({"quality": 95} if fmt == "jpg" else {}))
        out += [x, y]
    return out


def _tar(src, archive, arcname):
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=arcname)
    return archive


@pytest.fixture
def official(tmp_path):
    arrays = _write_official(tmp_path / "src")
    return tmp_path / "src", arrays


@pytest.fixture
def png_folder(tmp_path):
    arrays = _write_image_folder(tmp_path / "png", "png")
    return tmp_path / "png", arrays


def _assert_arrays(d: Cifar10, x_train, y_train, x_test, y_test, atol=0):
    assert d.x_train.shape == x_train.shape and d.x_train.dtype == np.uint8
    assert d.x_test.shape == x_test.shape and d.x_test.dtype == np.uint8
    np.testing.assert_array_equal(d.y_train, y_train)
    np.testing.assert_array_equal(d.y_test, y_test)
    diff_train = np.abs(d.x_train.astype(int) - x_train).max()
    diff_test = np.abs(d.x_test.astype(int) - x_test).max()
    assert max(diff_train, diff_test) <= atol


# --------------------------------------------------------------------------- official layout


@pytest.mark.parametrize("form", ["parent", "folder", "tar.gz"])
def test_official_layout_round_trips(official, tmp_path, form):
    src, arrays = official
    path = {"parent": src, "folder": src / "cifar-10-batches-py",
            "tar.gz": _tar(src / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py")}[form]
    d = load_cifar10(path, progress=False)
    _assert_arrays(d, *arrays)
    assert d.source.startswith("CIFAR-10 (official python release) from ")
    assert len(d.source_hash) == 64
    if form == "tar.gz":
        assert d.source_hash == hashlib.sha256(path.read_bytes()).hexdigest()


def test_official_missing_batch(official):
    src, _ = official
    (src / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3"):
        load_cifar10(src, progress=False)


def test_official_refuses_foreign_pickle_globals(official):
    src, _ = official

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (src / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(UserError, match="test_batch: not a CIFAR-10 batch file"):
        load_cifar10(src, progress=False)


# --------------------------------------------------------------------------- image-folder layout


def test_png_folder_round_trips_exactly(png_folder):
    root, arrays = png_folder
    d = load_cifar10(root, progress=False)
    _assert_arrays(d, *arrays)
    np.testing.assert_array_equal(d.y_train[:: PER_CLASS["train"]], np.arange(10))  # label order = CLASSES
    from surrogate_nas.config import portable, project_root

    assert d.source == f"CIFAR-10 (image folder) from {portable(root, project_root())}"  # no absolute path


def test_png_tar_with_extra_top_folder(png_folder, tmp_path):
    root, arrays = png_folder
    archive = _tar(root, tmp_path / "cifar10-png.tgz", "cifar10-png")
    d = load_cifar10(archive, progress=False)
    _assert_arrays(d, *arrays)
    assert d.source_hash == hashlib.sha256(archive.read_bytes()).hexdigest()


def test_archive_order_and_missing_dir_entries_do_not_matter(png_folder, tmp_path):
    """Members in reverse order and no directory entries: labels and order come from the names."""
    root, arrays = png_folder
    archive = tmp_path / "reversed.tar.gz"
    files = sorted(p for p in root.rglob("*") if p.is_file())
    with tarfile.open(archive, "w:gz") as tar:
        for p in reversed(files):
            tar.add(p, arcname=f"top/{p.relative_to(root).as_posix()}")
    _assert_arrays(load_cifar10(archive, progress=False), *arrays)


def test_folder_with_extra_top_folder(png_folder, tmp_path):
    root, arrays = png_folder
    parent = tmp_path / "parent"
    shutil.copytree(root, parent / "cifar10-png")
    _assert_arrays(load_cifar10(parent, progress=False), *arrays)


@pytest.mark.parametrize("as_tar", [False, True])
def test_jpeg_layout_round_trips_approximately(tmp_path, as_tar):
    arrays = _write_image_folder(tmp_path / "jpg" / "cifar10-jpeg", "jpg")
    path = _tar(tmp_path / "jpg" / "cifar10-jpeg", tmp_path / "cifar10-jpeg.tar.gz", "cifar10-jpeg") if as_tar \
        else tmp_path / "jpg"
    d = load_cifar10(path, progress=False)
    _assert_arrays(d, *arrays, atol=4)
    assert d.source.startswith("CIFAR-10 (JPEG copy) from ")


def test_grayscale_images_become_rgb(png_folder):
    root, _ = png_folder
    target = root / "test" / "ship" / "0000.png"
    Image.fromarray(np.full((32, 32), 77, np.uint8)).save(target)  # 2-D array -> mode "L"
    d = load_cifar10(root, progress=False)
    i = CLASSES.index("ship") * PER_CLASS["test"]
    np.testing.assert_array_equal(d.x_test[i], np.full((32, 32, 3), 77, np.uint8))


def test_folder_hash_is_content_based(png_folder, tmp_path):
    root, _ = png_folder
    h = load_cifar10(root, progress=False).source_hash
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    os.utime(copy / "train" / "cat" / "0000.png", (0, 0))
    assert load_cifar10(copy, progress=False).source_hash == h
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(copy / "train" / "cat" / "0000.png")
    assert load_cifar10(copy, progress=False).source_hash != h


# --------------------------------------------------------------------------- errors


def test_missing_class_folder_lists_what_was_found(png_folder):
    root, _ = png_folder
    shutil.rmtree(root / "train" / "cat")
    with pytest.raises(UserError) as err:
        load_cifar10(root, progress=False)
    msg = str(err.value)
    assert "train/ has [airplane, automobile, bird, deer" in msg and msg.endswith("train/ lacks cat")
    assert "test/ has [airplane, automobile, bird, cat" in msg


def test_missing_class_in_archive(png_folder, tmp_path):
    root, _ = png_folder
    shutil.rmtree(root / "test" / "frog")
    with pytest.raises(UserError, match="must hold the same class folders.*: test/ lacks frog$"):
        load_cifar10(_tar(root, tmp_path / "a.tar.gz", "top"), progress=False)


def test_extra_and_misnamed_class_folders(png_folder, tmp_path):
    """Any class names work (an image-folder dataset need not be CIFAR-10), but train/ and
    test/ must agree."""
    root, _ = png_folder
    shutil.copytree(root / "train" / "cat", root / "train" / "unicorn")
    with pytest.raises(UserError, match="test/ lacks unicorn$"):
        load_cifar10(root, progress=False)
    shutil.rmtree(root / "train" / "unicorn")
    (root / "train" / "airplane").rename(root / "train" / "plane")
    with pytest.raises(UserError, match="train/ lacks airplane; test/ lacks plane$"):
        load_cifar10(root, progress=False)
    with pytest.raises(UserError, match="train/ lacks airplane; test/ lacks plane$"):
        load_cifar10(_tar(root, tmp_path / "a.tar.gz", "top"), progress=False)


def test_missing_split(png_folder, tmp_path):
    root, _ = png_folder
    shutil.rmtree(root / "test")
    with pytest.raises(UserError, match="no test/ folder"):
        load_cifar10(root, progress=False)
    with pytest.raises(UserError, match="no test/ folder"):
        load_cifar10(_tar(root, tmp_path / "a.tar.gz", "top"), progress=False)


def test_truncated_and_garbage_archives(png_folder, tmp_path):
    root, _ = png_folder
    archive = _tar(root, tmp_path / "a.tar.gz", "top")
    content = archive.read_bytes()
    archive.write_bytes(content[: len(content) // 2])
    with pytest.raises(UserError, match="a.tar.gz: corrupt, truncated or unreadable archive") as err:
        load_cifar10(archive, progress=False)
    assert "\n" not in str(err.value)
    archive.write_bytes(b"this is not an archive" * 100)
    with pytest.raises(UserError, match="a.tar.gz: corrupt, truncated or unreadable archive"):
        load_cifar10(archive, progress=False)


def test_archive_cut_between_two_members_is_not_a_smaller_dataset(png_folder, tmp_path):
    """tarfile alone reads a tar cut exactly after a member as a complete, shorter archive."""
    root, _ = png_folder
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname="top")
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    cut = members[len(members) // 2].offset  # the header of a member in the middle
    archive.write_bytes(archive.read_bytes()[:cut])
    with tarfile.open(archive) as tar:
        assert 0 < len(tar.getmembers()) < len(members)  # what tarfile makes of it, silently
    with pytest.raises(UserError, match=r"a.tar: corrupt, truncated or unreadable archive at .*end-of-archive marker"):
        load_cifar10(archive, progress=False)


def test_wrong_image_size_names_the_file(png_folder, tmp_path):
    root, _ = png_folder
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(root / "train" / "dog" / "0001.png")
    with pytest.raises(UserError, match=r"dog/0001.png: image is 28x28, expected 32x32"):
        load_cifar10(root, progress=False)
    with pytest.raises(UserError, match=r"top/train/dog/0001.png: image is 28x28, expected 32x32"):
        load_cifar10(_tar(root, tmp_path / "a.tar.gz", "top"), progress=False)


def test_undecodable_image_names_the_file(png_folder):
    root, _ = png_folder
    (root / "test" / "horse" / "0000.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"horse/0000.png: cannot decode image"):
        load_cifar10(root, progress=False)


def test_missing_path_and_unknown_folder(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_cifar10(tmp_path / "nope", progress=False)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir()
    with pytest.raises(UserError, match="no data found"):
        load_cifar10(tmp_path / "empty", progress=False)


def test_keras_download_failure_is_a_user_error(monkeypatch):
    def offline():
        raise OSError("no internet")

    monkeypatch.setattr(D, "_keras_load_data", offline)
    with pytest.raises(UserError, match=r"CIFAR-10 download failed \(no network\?\): pass --data PATH"):
        load_cifar10(None)


def test_keras_labels_are_flattened(monkeypatch):
    x = _random_images(4, 0)
    monkeypatch.setattr(D, "_keras_load_data", lambda: ((x, np.arange(4).reshape(4, 1)), (x[:2], np.array([[1], [2]]))))
    d = load_cifar10(None)
    assert d.y_train.shape == (4,) and d.y_test.tolist() == [1, 2] and len(d.source_hash) == 64


# --------------------------------------------------------------------------- cache


def test_cache_is_written_and_reused_without_decoding(png_folder, tmp_path, monkeypatch):
    root, arrays = png_folder
    archive = _tar(root, tmp_path / "a.tar.gz", "top")
    cache = tmp_path / "cache"
    first = load_cifar10(archive, cache_dir=cache, progress=False)
    cache_file = cache / f"cifar10-{first.source_hash[:16]}.npz"
    assert cache_file.is_file()
    assert sorted(p.name for p in cache.iterdir()) == [cache_file.name]  # no temp files left behind

    def no_decoding(*args):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(readers, "_decode_image", no_decoding)
    second = load_cifar10(archive, cache_dir=cache, progress=False)
    _assert_arrays(second, *arrays)
    assert second.source == first.source and second.source_hash == first.source_hash


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_cache_is_rebuilt(png_folder, tmp_path, damage):
    root, arrays = png_folder
    cache = tmp_path / "cache"
    d = load_cifar10(root, cache_dir=cache, progress=False)
    cache_file = cache / f"cifar10-{d.source_hash[:16]}.npz"
    content = cache_file.read_bytes()
    cache_file.write_bytes(b"garbage" if damage == "garbage" else content[: len(content) // 2])
    with pytest.warns(UserWarning, match="unreadable dataset cache"):
        again = load_cifar10(root, cache_dir=cache, progress=False)
    _assert_arrays(again, *arrays)
    assert cache_file.read_bytes() == content
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_arrays(load_cifar10(root, cache_dir=cache, progress=False), *arrays)


# --------------------------------------------------------------------------- splits


def _labels_only(per_class: int, n_test: int = 10) -> Cifar10:
    """A dataset whose images are 1 pixel: splitting only looks at labels."""
    y = np.tile(np.arange(10, dtype=np.uint8), per_class)
    x = np.arange(len(y), dtype=np.uint32).view(np.uint8).reshape(-1, 1, 1, 4)[..., :3].copy()
    return Cifar10(x, y, x[:n_test], y[:n_test], source="test", source_hash="0" * 64)


def test_make_splits_full_size():
    d = _labels_only(5000)
    s = make_splits(d)
    assert len(s.y_train) == 45_000 and len(s.y_val) == 5_000 and len(s.y_test) == 10
    assert np.bincount(s.y_val, minlength=10).tolist() == [500] * 10
    assert np.bincount(s.y_train, minlength=10).tolist() == [4500] * 10
    assert np.intersect1d(s.train_idx, s.val_idx).size == 0
    assert np.array_equal(np.sort(np.concatenate([s.train_idx, s.val_idx])), np.arange(50_000))
    np.testing.assert_array_equal(s.x_val, d.x_train[s.val_idx])
    np.testing.assert_array_equal(s.y_train, d.y_train[s.train_idx])


def test_make_splits_deterministic_and_seeded():
    d = _labels_only(50)
    a, b, c = make_splits(d, 50, seed=0), make_splits(d, 50, seed=0), make_splits(d, 50, seed=1)
    np.testing.assert_array_equal(a.val_idx, b.val_idx)
    assert not np.array_equal(a.val_idx, c.val_idx)
    assert np.bincount(a.y_val).tolist() == [5] * 10


def test_make_splits_tiny_and_uneven(official):
    src, _ = official
    d = load_cifar10(src, progress=False)  # 100 train images, 10 per class
    s = make_splits(d, val_size=13, seed=3)
    counts = np.bincount(s.y_val, minlength=10)
    assert counts.sum() == 13 and set(counts.tolist()) <= {1, 2}
    assert len(s.y_train) == 87
    for bad in (0, 100, 101):
        with pytest.raises(UserError, match="validation size"):
            make_splits(d, val_size=bad)


def test_make_splits_proportional_on_imbalanced_classes():
    y = np.repeat(np.arange(10, dtype=np.uint8), [100] * 5 + [20] * 5)
    x = np.zeros((len(y), 1, 1, 3), np.uint8)
    s = make_splits(Cifar10(x, y, x, y, "t", "0"), val_size=60)
    assert np.bincount(s.y_val).tolist() == [10] * 5 + [2] * 5


def test_search_subset_stratified_and_deterministic():
    y_val = np.tile(np.arange(10), 500)
    idx = search_subset(y_val)
    assert len(idx) == 2000 and np.all(np.diff(idx) > 0)
    assert np.bincount(y_val[idx]).tolist() == [200] * 10
    np.testing.assert_array_equal(idx, search_subset(y_val))
    assert not np.array_equal(idx, search_subset(y_val, seed=1))
    odd = search_subset(y_val, size=25, seed=7)
    counts = np.bincount(y_val[odd], minlength=10)
    assert counts.sum() == 25 and set(counts.tolist()) == {2, 3}
    assert len(search_subset(y_val, size=len(y_val))) == len(y_val)
    for bad in (0, len(y_val) + 1):
        with pytest.raises(UserError, match="search subset size"):
            search_subset(y_val, size=bad)


# --------------------------------------------------------------------------- real data


@pytest.mark.real_data
def test_real_shared_dataset():
    from surrogate_nas.config import resolve_paths

    paths = resolve_paths()
    if paths.data is None or not paths.data.exists():
        pytest.skip(f"real dataset not present ({paths.data})")
    start = time.perf_counter()
    d = load_cifar10(paths.data, cache_dir=paths.cache, progress=False)
    print(f"loaded {d.source} in {time.perf_counter() - start:.1f} s")
    assert d.x_train.shape == (50_000, 32, 32, 3) and d.x_test.shape == (10_000, 32, 32, 3)
    assert np.bincount(d.y_train, minlength=10).tolist() == [5000] * 10
    assert np.bincount(d.y_test, minlength=10).tolist() == [1000] * 10
    assert (paths.cache / f"cifar10-{d.source_hash[:16]}.npz").is_file()
    s = make_splits(d)
    assert len(s.y_train) == 45_000 and np.bincount(s.y_val).tolist() == [500] * 10
