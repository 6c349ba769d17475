"""Shared fixtures: a tiny but real project (catalog, image-folder dataset, trained model)
built once per test session, and a helper that runs the CLI in-process.

Everything is real: the tables are written as .bin files, the dataset as PNGs, the model
is trained by `training_job.train_and_save` (5 tiny epochs, widths 4-4-8-8-8) and writes its card.
"""

from __future__ import annotations

import contextlib
import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_PER_CLASS, TEST_PER_CLASS = 30, 10  # validation = a tenth of 300 training images = 30
TINY_WIDTHS = (4, 4, 8, 8, 8)

_CODES = np.arange(256, dtype=np.int64)
_A, _B = np.meshgrid(_CODES, _CODES, indexing="ij")

# Catalog order = gene values. The exact circuit is deliberately not first.
CIRCUITS = {
    "trunc": (_A * _B) & ~0xFF,
    "exact": _A * _B,
    "lowbits": (_A & ~0x7) * (_B & ~0x7),
    "noisy": np.clip(_A * _B + np.random.default_rng(0).integers(-300, 301, size=_A.shape), 0, 65535),
    "zero": np.zeros_like(_A),
}
POWERS = {"trunc": 0.30, "exact": 0.40, "lowbits": 0.22, "noisy": 0.35, "zero": 0.01}
EXACT_INDEX = 1

PATH_ENV = ("SURROGATE_NAS_MULTIPLIERS", "SURROGATE_NAS_DATA", "SURROGATE_NAS_CACHE", "SURROGATE_NAS_MODEL",
            "SURROGATE_NAS_CONFIG")
PATH_COMMANDS = ("run", "evaluate", "compare", "study", "export", "finetune", "design")


@dataclass(frozen=True)
class Project:
    root: Path
    catalog: Path
    data: Path
    model: Path
    cache: Path  # shared cache folder (decoded dataset + evaluations of the session)

    def flags(self, cache: Path | None = None, **override) -> list[str]:
        values = {"catalog": self.catalog, "data": self.data, "model": self.model, "cache": cache or self.cache}
        values.update(override)
        return [x for key, value in values.items() for x in (f"--{key}", str(value))]


def write_catalog(folder: Path, circuits: dict = CIRCUITS, powers: dict = POWERS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "catalog.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", "lut_file", "power_mW"])
        for name, table in circuits.items():
            (folder / f"{name}.bin").write_bytes(np.asarray(table).astype("<u2").tobytes())
            writer.writerow([name, f"{name}.bin", powers[name]])
    return folder


# Well-separated colours, one per class (corners of the RGB cube plus two greys).
CLASS_COLOURS = np.array([
    (30, 30, 30), (225, 30, 30), (30, 225, 30), (30, 30, 225), (225, 225, 30),
    (225, 30, 225), (30, 225, 225), (225, 225, 225), (128, 128, 128), (128, 60, 190),
], dtype=np.float64)


def write_dataset(root: Path, seed: int = 0, train_per_class: int = TRAIN_PER_CLASS,
                  test_per_class: int = TEST_PER_CLASS) -> Path:
    """ROOT/{train,test}/<class>/NNNN.png: the class colour plus pixel noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(n):
                img = CLASS_COLOURS[c][None, None, :] + rng.normal(0, 12, size=(32, 32, 3))
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{j:04d}.png")
    return root


@pytest.fixture(autouse=True)
def no_rule_progress_lines(monkeypatch):
    """The auto rule saves (and prints) its progress once it has run 60 s, which the tiny
    model's rule reaches only on a loaded machine: a one-line-error test then sees two
    lines. Tests of the checkpoint set the interval themselves."""
    from surrogate_nas.evaluation import designs

    monkeypatch.setattr(designs, "CHECKPOINT_SECONDS", float("inf"))


@pytest.fixture(scope="session", autouse=True)
def single_threaded_openmp():
    """scikit-learn's HistGradientBoosting uses OpenMP; on a busy 2-core machine its
    spinning threads make a 0.06 s fit take 10 s or more (select_kind: 0.6 s -> ~2 min)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="openmp"):
        yield


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Project:
    from surrogate_nas.network.training import train_and_save

    root = tmp_path_factory.mktemp("project")
    catalog = write_catalog(root / "catalog")
    data = write_dataset(root / "cifar")
    cache = root / "cache"
    model = root / "models" / "tiny.keras"
    # 5 short epochs (17 steps each, ~8 s): one epoch leaves this tiny net at chance level,
    # and a model that has learned something gives the search real accuracy differences.
    train_and_save(model, data, cache, epochs=5, batch_size=16, widths=TINY_WIDTHS)
    assert model.is_file() and model.with_suffix(".json").is_file()
    return Project(root, catalog, data, model, cache)


@pytest.fixture(scope="session")
def catalog(project):
    from surrogate_nas.multipliers.catalog import load_catalog

    return load_catalog(project.catalog)


@pytest.fixture(scope="session")
def dataset(project):
    from surrogate_nas.data.datasets import load_cifar10

    return load_cifar10(project.data, cache_dir=project.cache, progress=False)


@pytest.fixture(scope="session")
def card(project):
    from surrogate_nas.network.card import read_card

    return read_card(project.model)


@pytest.fixture(scope="session")
def float_model(project):
    import keras

    return keras.models.load_model(project.model, compile=False)


def make_evaluator(float_model, card, catalog, dataset, n_images=20, batch_size=None, split="validation"):
    from surrogate_nas.data.splits import make_splits
    from surrogate_nas.evaluation.evaluator import Evaluator
    from surrogate_nas.evaluation.images import select_images
    from surrogate_nas.network.measure import EVAL_BATCH

    image_set = select_images(make_splits(dataset, seed=0), dataset.source_hash, split, n_images, 0)
    return Evaluator(float_model, card, catalog, image_set, batch_size=batch_size or EVAL_BATCH)


@pytest.fixture(scope="session")
def evaluator(float_model, card, catalog, dataset):
    """The search-set evaluator (20 validation images), as `run --search-images 20` builds it."""
    return make_evaluator(float_model, card, catalog, dataset)


@dataclass
class CliResult:
    rc: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@contextlib.contextmanager
def isolated_cwd(folder: Path):
    """Run in `folder` without SURROGATE_NAS_* variables (for module-scoped fixtures)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in PATH_ENV:
            mp.delenv(name, raising=False)
        mp.chdir(folder)
        yield folder


@pytest.fixture
def cli(project, tmp_path, monkeypatch, capsys):
    """`cli("evaluate", "--genome", ..., cache=...)` -> CliResult; runs `surrogate_nas.cli.main`
    in tmp_path (so no surrogate_nas.toml is found) without SURROGATE_NAS_* variables; the
    path flags are appended for commands that take them (paths=False to leave them out)."""
    from surrogate_nas import cli as cli_module

    for name in PATH_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)

    def run(*argv: str, paths: bool = True, cache: Path | None = None, **override) -> CliResult:
        args = [str(a) for a in argv]
        if paths and args and args[0] in PATH_COMMANDS:
            args += project.flags(cache=cache, **override)
        elif cache is not None:
            args += ["--cache", str(cache)]
        capsys.readouterr()
        rc = cli_module.main(args)
        captured = capsys.readouterr()
        return CliResult(rc, captured.out, captured.err)

    return run


@pytest.fixture
def subprocess_env(tmp_path) -> dict:
    """Environment for `python -m surrogate_nas` in a subprocess: no path variables."""
    env = {k: v for k, v in os.environ.items() if k not in PATH_ENV}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    return env


PYTHON = sys.executable


def write_csv(path, rows: list[dict]) -> None:
    """A CSV with the rows' keys as header (hand-made run-folder files in tests)."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
