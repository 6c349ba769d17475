"""Bad input battery: what a new user mistypes or points at by mistake, through
`python -m surrogate_nas ...` (in-process, real files). For every case: a non-zero exit,
exactly one line on stderr that starts with `error:` and names the flag or file, no
traceback, and none of the user's files changed (cache database, catalog, model, data),
no run folder saved."""

from __future__ import annotations

import csv
import hashlib
import shutil
import sqlite3
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CIRCUITS, write_catalog

from surrogate_nas.evaluation.cache import EvalCache

EXACT5 = "exact,exact,exact,exact,exact"
SEARCH = ["--search-images", "20", "--test-images", "20", "--pop-size", "4", "--budget", "6"]


@dataclass(frozen=True)
class Bad:
    """Broken copies of the project's inputs, built once."""

    root: Path
    catalogs: dict
    data: dict
    models: dict
    configs: dict
    studies: dict
    c_file: Path


def _catalog_variant(folder: Path, edit) -> Path:
    write_catalog(folder)
    edit(folder)
    return folder


def _rewrite_csv(folder: Path, rows_fn) -> None:
    with open(folder / "catalog.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    with open(folder / "catalog.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows_fn(rows))


def _set_power(name: str, value: str):
    return lambda rows: [r[:2] + [value] if r[0] == name else r for r in rows]


@pytest.fixture(scope="module")
def bad(project, tmp_path_factory) -> Bad:
    import keras

    root = tmp_path_factory.mktemp("bad")
    catalogs = {
        "truncated_table": _catalog_variant(root / "c1", lambda f: (f / "noisy.bin").write_bytes(
            (f / "noisy.bin").read_bytes()[:1000])),
        "garbage_table": _catalog_variant(root / "c2", lambda f: (f / "lowbits.bin").write_bytes(
            b"this is not a lookup table\n" * 10)),
        "missing_table": _catalog_variant(root / "c3", lambda f: (f / "trunc.bin").unlink()),
        "missing_column": _catalog_variant(root / "c4", lambda f: _rewrite_csv(f, lambda rows: [r[:2] for r in rows])),
        "nan_power": _catalog_variant(root / "c5", lambda f: _rewrite_csv(f, _set_power("noisy", "nan"))),
        "no_exact": write_catalog(root / "c6", {k: v for k, v in CIRCUITS.items() if k != "exact"}),
        "exact_power_zero": _catalog_variant(root / "c7", lambda f: _rewrite_csv(f, _set_power("exact", "0"))),
        "not_utf8": _catalog_variant(root / "c8", lambda f: (f / "catalog.csv").write_bytes(
            b"name,lut_file,power_mW\n\xff\xfe\xfa,exact.bin,0.4\n")),
        "missing": root / "no-such-catalog",
    }
    # data: a truncated archive of the project's image folders, a folder without test/
    archive = root / "cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(project.data, arcname="cifar")
    truncated = root / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    archive.unlink()
    no_test = root / "no-test"
    shutil.copytree(project.data / "train", no_test / "train")
    data = {"truncated": truncated, "no_test_split": no_test, "missing": root / "no-such-data.tar.gz"}

    card = project.model.with_suffix(".json").read_text()

    def model_variant(name: str, content: bytes | None, with_card: str | None = card) -> Path:
        path = root / "models" / name / "m.keras"
        path.parent.mkdir(parents=True)
        if content is not None:
            path.write_bytes(content)
        if with_card is not None:
            path.with_suffix(".json").write_text(with_card)
        return path

    three = keras.Sequential([keras.Input((32, 32, 3))] + [keras.layers.Conv2D(4, 3, name=f"c{i}") for i in range(3)]
                             + [keras.layers.Flatten(), keras.layers.Dense(10)])
    three_path = model_variant("three-convs", None)
    three.save(three_path)
    import json

    doc = json.loads(card)
    doc["weights_sha256"] = hashlib.sha256(three_path.read_bytes()).hexdigest()
    three_path.with_suffix(".json").write_text(json.dumps(doc))
    def foreign(name: str, layer) -> Path:
        """A model with an unsupported conv, with a card that matches its file."""
        net = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3, name="c0"), layer,
                                keras.layers.Flatten(), keras.layers.Dense(10)])
        path = model_variant(name, None)
        net.save(path)
        doc = json.loads(card)
        doc["weights_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        path.with_suffix(".json").write_text(json.dumps(doc))
        return path

    models = {
        "missing": root / "models" / "typo.keras",
        "depthwise": foreign("depthwise", keras.layers.DepthwiseConv2D(3, name="dw")),
        "dilated": foreign("dilated", keras.layers.Conv2D(4, 3, dilation_rate=2, name="c1")),
        "garbage": model_variant("garbage", b"PK\x03\x04 this is not a keras archive" * 20),
        "truncated": model_variant("truncated", project.model.read_bytes()[:2000]),
        "three_convs": three_path,
    }
    configs = {}
    for name, content in {"not_utf8": b"[paths]\ncache = \"\xff\xfe\"\n", "not_toml": b"[paths\ncache = 1\n",
                          "unknown_key": b"[paths]\nmodels = \"m\"\n", "not_a_string": b"[paths]\ncache = 3\n"}.items():
        configs[name] = root / "configs" / name / "surrogate_nas.toml"
        configs[name].parent.mkdir(parents=True)
        configs[name].write_bytes(content)
    configs["missing"] = root / "configs" / "nope.toml"
    studies = {}
    for name, content in {"not_utf8": b'name = "\xff"\n', "wrong_type": b'pop_size = "many"\n',
                          "bad_mode": b'modes = ["fast"]\n', "bad_name": b'name = "../x"\n',
                          "ok": b'pop_size = 4\nbudget = 6\nmodes = ["full"]\n',
                          "too_many_test": b'pop_size = 4\nbudget = 6\nsearch_images = 20\ntest_images = 101\n'}.items():
        studies[name] = root / "studies" / f"{name}.toml"
        studies[name].parent.mkdir(parents=True, exist_ok=True)
        studies[name].write_bytes(content)
    c_file = root / "csrc" / "mul8u_BAD.c"
    c_file.parent.mkdir()
    c_file.write_text("#include <stdint.h>\nuint16_t mul8u_BAD(uint8_t a, uint8_t b) { return a * b }\n")
    return Bad(root, catalogs, data, models, configs, studies, c_file)


# id -> (argv, path overrides, pattern the single error line must match). Values "bad.x.y"
# are looked up in the `bad` fixture; "OUT" is the run output folder.
CASES = {
    # genome strings
    "genome-unicode-digit": (["evaluate", "--genome", "²,0,0,0,0"], {}, r"--genome: layer 1: unknown multiplier '²'"),
    "genome-fullwidth-digit": (["evaluate", "--genome", "0,0,０,0,0"], {}, r"--genome: layer 3: unknown multiplier"),
    "genome-short": (["evaluate", "--genome", "0,0,0"], {}, r"--genome: expected 5 multipliers .* got 3"),
    "genome-empty": (["evaluate", "--genome", ""], {}, r"--genome: expected 5 multipliers"),
    "genome-empty-item": (["evaluate", "--genome", "0,,0,0,0"], {}, r"--genome: layer 2: unknown multiplier ''"),
    "genome-float": (["evaluate", "--genome", "1.5,0,0,0,0"], {}, r"--genome: layer 1: unknown multiplier '1.5'"),
    "genome-out-of-range": (["evaluate", "--genome", "0,0,0,0,99"], {}, r"--genome: layer 5: index 99 is out of range"),
    # numeric flags
    "evaluate-images-0": (["evaluate", "--genome", EXACT5, "--images", "0"], {}, r"--images: must be positive"),
    "evaluate-images-too-many": (["evaluate", "--genome", EXACT5, "--images", "31"], {}, r"--images: must be between 1 and 30"),
    "evaluate-seed-negative": (["evaluate", "--genome", EXACT5, "--seed", "-1"], {}, r"--seed: must be >= 0"),
    "evaluate-images-not-int": (["evaluate", "--genome", EXACT5, "--images", "many"], {}, r"argument --images: invalid int"),
    "run-test-images-0": (["run", *SEARCH, "--test-images", "0"], {}, r"--test-images: must be positive"),
    "run-test-images-too-many": (["run", *SEARCH, "--test-images", "101"], {}, r"--test-images: must be between 1 and 100"),
    "run-search-images-too-many": (["run", *SEARCH, "--search-images", "31"], {}, r"--search-images: must be between 1 and 30"),
    "run-search-images-0": (["run", *SEARCH, "--search-images", "0"], {}, r"--search-images: must be positive"),
    "run-seed-negative": (["run", *SEARCH, "--seed", "-1"], {}, r"--seed: must be >= 0"),
    "run-budget-0": (["run", *SEARCH, "--budget", "0"], {}, r"--budget: must be a positive"),
    "run-pop-size-0": (["run", *SEARCH, "--pop-size", "0"], {}, r"--pop-size: must be at least 2"),
    "run-generations-0": (["run", *SEARCH, "--generations", "0"], {}, r"--generations: must be at least 1"),
    "run-crossover-prob-nan": (["run", *SEARCH, "--crossover-prob", "nan"], {}, r"--crossover-prob: must be a probability"),
    "run-crossover-eta-inf": (["run", *SEARCH, "--crossover-eta", "inf"], {}, r"--crossover-eta: must be > 0 and finite"),
    "run-mutation-prob-negative": (["run", *SEARCH, "--mutation-prob", "-0.5"], {}, r"--mutation-prob: must be a probability"),
    "run-mutation-eta-0": (["run", *SEARCH, "--mutation-eta", "0"], {}, r"--mutation-eta: must be > 0"),
    "run-seed-fraction-0": (["run", *SEARCH, "--seed-fraction", "0"], {}, r"--seed-fraction: must be in \(0, 1\)"),
    "run-offspring-factor-0": (["run", *SEARCH, "--offspring-factor", "0"], {}, r"--offspring-factor: must be >= 1"),
    "run-accuracy-floor-percent": (["run", *SEARCH, "--accuracy-floor", "68"], {}, r"--accuracy-floor: must be an accuracy in \[0, 1\)"),
    "run-rescore-unknown": (["run", *SEARCH, "--rescore", "some"], {}, r"--rescore: expected .floor. or .all., got .some."),
    "run-workers-zero": (["run", *SEARCH, "--workers", "0"], {}, r"--workers: must be >= 1, got 0"),
    "run-budget-not-int": (["run", *SEARCH, "--budget", "3e2"], {}, r"argument --budget: invalid int value: '3e2'"),
    "run-compensation-bogus": (["run", *SEARCH, "--compensation", "magic"], {}, r"--compensation: expected one of"),
    "compare-seeds-0": (["compare", *SEARCH, "--seeds", "0"], {}, r"--seeds must be >= 1"),
    "compare-budget-0": (["compare", *SEARCH, "--budget", "0"], {}, r"--budget: must be a positive"),
    "compare-test-images-0": (["compare", *SEARCH, "--test-images", "0"], {}, r"--test-images: must be positive"),
    "study-budget-0": (["study", "bad.studies.ok", "--budget", "0"], {}, r"--budget: must be a positive"),
    "study-seed-negative": (["study", "bad.studies.ok", "--seed", "-1"], {}, r"--seed: must be >= 0"),
    "study-search-images-0": (["study", "bad.studies.ok", "--search-images", "0"], {}, r"--search-images: must be positive"),
    "study-test-images-too-many": (["study", "bad.studies.ok", "--test-images", "101", "--search-images", "20"], {},
                                   r"--test-images: must be between 1 and 100"),
    "study-file-test-images-too-many": (["study", "bad.studies.ok", "bad.studies.too_many_test", "--search-images", "20"],
                                        {}, r"too_many_test\.toml: --test-images: must be between 1 and 100"),
    "finetune-weight-clip-negative": (["finetune", "somewhere", "--recipe", "kd-adam1e-3-cos", "--weight-clip", "-1"],
                                      {}, r"--weight-clip: needs --recipe and a value >= 0 \(0 = off\), got -1\.0"),
    "finetune-weight-clip-without-recipe": (["finetune", "somewhere", "--weight-clip", "3"], {},
                                            r"--weight-clip: needs --recipe"),
    "calibrate-input-percentile-0": (["calibrate", "--input-percentile", "0"], {},
                                     r"--input-percentile: must be in \(50, 100\], got 0"),
    "calibrate-input-percentile-nan": (["calibrate", "--input-percentile", "nan"], {},
                                       r"--input-percentile: must be in \(50, 100\], got nan"),
    "train-seed-negative": (["train", "--seed", "-1"], {}, r"--seed must be >= 0"),
    "train-epochs-0": (["train", "--epochs", "0"], {}, r"--epochs must be >= 1"),
    # catalogs
    "catalog-truncated-table": (["evaluate", "--genome", EXACT5], {"catalog": "bad.catalogs.truncated_table"},
                                r"noisy\.bin: lookup table is 1,000 bytes"),
    "catalog-garbage-table": (["evaluate", "--genome", EXACT5], {"catalog": "bad.catalogs.garbage_table"},
                              r"lowbits\.bin: lookup table is 270 bytes"),
    "catalog-missing-table": (["run", *SEARCH], {"catalog": "bad.catalogs.missing_table"}, r"trunc\.bin: lookup table not found"),
    "catalog-missing-column": (["evaluate", "--genome", EXACT5], {"catalog": "bad.catalogs.missing_column"},
                               r"catalog\.csv: missing required column\(s\) power_mW"),
    "catalog-nan-power": (["evaluate", "--genome", EXACT5], {"catalog": "bad.catalogs.nan_power"},
                          r"catalog\.csv.*power 'nan' is not a finite number"),
    "catalog-no-exact": (["run", *SEARCH], {"catalog": "bad.catalogs.no_exact"}, r"--catalog .*c6: no exact multiplier"),
    "catalog-exact-power-0": (["evaluate", "--genome", EXACT5], {"catalog": "bad.catalogs.exact_power_zero"},
                              r"--catalog .*c7: the exact multiplier exact has power 0"),
    "catalog-not-utf8": (["evaluate", "--genome", EXACT5], {"catalog": "bad.catalogs.not_utf8"},
                         r"catalog\.csv: not a UTF-8 text CSV file"),
    "catalog-missing": (["multipliers", "list", "--catalog", "bad.catalogs.missing"], {}, r"--catalog .*no-such-catalog: multiplier catalog not found"),
    # data
    "data-missing": (["evaluate", "--genome", EXACT5], {"data": "bad.data.missing"}, r"--data .*no-such-data\.tar\.gz.*not found"),
    "data-truncated": (["run", *SEARCH], {"data": "bad.data.truncated"}, r"truncated\.tar\.gz: corrupt, truncated or unreadable archive"),
    "data-no-test-split": (["evaluate", "--genome", EXACT5], {"data": "bad.data.no_test_split"}, r"no-test: no test/ folder"),
    # models
    "model-missing": (["run", *SEARCH], {"model": "bad.models.missing"},
                      r"--model .*typo\.keras: model not found; train one with `python -m surrogate_nas train --model .*typo\.keras`"),
    "model-garbage": (["evaluate", "--genome", EXACT5], {"model": "bad.models.garbage"}, r"--model .*garbage.*m\.keras: cannot load the model"),
    "model-truncated": (["evaluate", "--genome", EXACT5], {"model": "bad.models.truncated"}, r"--model .*truncated.*m\.keras: cannot load the model"),
    "model-three-convs": (["evaluate", "--genome", EXACT5], {"model": "bad.models.three_convs"},
                          r"--genome: expected 3 multipliers \(one per approximable layer\), got 5"),
    "model-card-of-another": (["evaluate", "--genome", "exact,exact,exact", "--images", "20"], {"model": "bad.models.three_convs"},
                              r"three-convs.*m\.json: no calibration for layer c0 \(the card describes conv1, "),
    "model-depthwise": (["evaluate", "--genome", EXACT5], {"model": "bad.models.depthwise"},
                        r"^error: layer dw: DepthwiseConv2D is not emulated \(only Conv2D and Dense layers are approximable\)$"),
    "model-dilated": (["run", *SEARCH], {"model": "bad.models.dilated"},
                      r"^error: layer c1: dilation_rate \(2, 2\) \(only 1 is emulated\)$"),
    # cache
    "cache-corrupt": (["run", *SEARCH], {"cache": "CORRUPT"}, r"evaluations\.sqlite: evaluation cache is damaged"),
    "cache-truncated": (["run", *SEARCH], {"cache": "TRUNCATED"}, r"evaluations\.sqlite: evaluation cache is damaged"),
    "cache-export-corrupt": (["cache", "stats", "--cache", "CORRUPT"], {}, r"evaluations\.sqlite: evaluation cache is damaged"),
    # config files (SURROGATE_NAS_CONFIG)
    "config-not-utf8": (["evaluate", "--genome", EXACT5], {"config": "bad.configs.not_utf8"}, r"surrogate_nas\.toml: config file is not UTF-8"),
    "config-not-toml": (["evaluate", "--genome", EXACT5], {"config": "bad.configs.not_toml"}, r"surrogate_nas\.toml: not valid TOML"),
    "config-unknown-key": (["evaluate", "--genome", EXACT5], {"config": "bad.configs.unknown_key"},
                           r"surrogate_nas\.toml: unknown key\(s\) in \[paths\]: models"),
    "config-not-a-string": (["evaluate", "--genome", EXACT5], {"config": "bad.configs.not_a_string"},
                            r"surrogate_nas\.toml: \[paths\] cache must be a non-empty string"),
    "config-missing": (["evaluate", "--genome", EXACT5], {"config": "bad.configs.missing"}, r"SURROGATE_NAS_CONFIG: config file .*nope\.toml does not exist"),
    # study files
    "study-not-utf8": (["study", "bad.studies.not_utf8"], {}, r"not_utf8\.toml: not a UTF-8 text file"),
    "study-wrong-type": (["study", "bad.studies.wrong_type"], {}, r"wrong_type\.toml: pop_size = 'many' has the wrong type"),
    "study-bad-mode": (["study", "bad.studies.bad_mode"], {}, r"bad_mode\.toml: modes must be a list"),
    "study-bad-name": (["study", "bad.studies.bad_name"], {}, r"bad_name\.toml: name '\.\./x' is not usable"),
    "study-missing": (["study", "bad.studies.none"], {}, r"none\.toml: study file not found"),
    # C file that does not compile
    "c-file-does-not-compile": (["multipliers", "import", "bad.c_file", "--out", "OUT/imported", "--power", "0.1"], {},
                                r"mul8u_BAD\.c: C compile failed"),
}


def _resolve(value, bad: Bad, out: Path, cache: Path):
    if not isinstance(value, str):
        return value
    if value.startswith("bad."):
        parts = value.split(".")[1:]
        obj = getattr(bad, parts[0])
        if isinstance(obj, dict):
            return obj.get(parts[1], bad.root / "studies" / f"{parts[1]}.toml")
        return obj
    if value in ("CORRUPT", "TRUNCATED"):
        return cache
    return value.replace("OUT", str(out))


def _snapshot(*roots: Path) -> dict[Path, bytes]:
    files = {}
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*") if root.exists() else []:
            if path.is_file():
                files[path] = path.read_bytes()
    return files


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, cli, project, bad, tmp_path, monkeypatch):
    argv, overrides, pattern = CASES[case]
    out, cache = tmp_path / "out", tmp_path / "cache"
    cache.mkdir()
    db = cache / "evaluations.sqlite"
    if "CORRUPT" in argv or overrides.get("cache") == "CORRUPT":
        db.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 16)
    elif overrides.get("cache") == "TRUNCATED":  # a real cache cut in half (a disk that filled up)
        with EvalCache(db) as c:
            for i in range(2000):
                c.put("f" * 64, (i, 1, 1, 1, 1), 0.5, 1.0, 20, 0.1, "earlier-run")
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    else:  # a real cache holding a row, as a user's would
        with EvalCache(db) as c:
            c.put("f" * 64, (1, 1, 1, 1, 1), 0.5, 1.0, 20, 0.1, "earlier-run")
    argv = [str(_resolve(a, bad, out, cache)) for a in argv]
    config = overrides.get("config")
    if config:
        monkeypatch.setenv("SURROGATE_NAS_CONFIG", str(_resolve(config, bad, out, cache)))
    paths = {k: _resolve(v, bad, out, cache) for k, v in overrides.items() if k != "config"}
    if argv[0] in ("run", "compare", "study"):
        argv += ["--out", str(out)]
    before = _snapshot(bad.root, project.catalog, project.model, project.model.with_suffix(".json"), db)

    from conftest import PATH_COMMANDS

    r = cli(*argv, cache=paths.pop("cache", cache) if argv[0] in PATH_COMMANDS else None, **paths)

    assert r.rc != 0, (r.out, r.err)
    assert "Traceback" not in r.err and "Traceback" not in r.out
    assert len(r.err_lines) == 1, r.err
    line = r.err_lines[0]
    assert line.startswith("error: "), line
    import re

    assert re.search(pattern, line), line
    after = _snapshot(bad.root, project.catalog, project.model, project.model.with_suffix(".json"), db)
    changed = [str(p) for p in before if after.get(p) != before[p]]
    assert not changed, f"changed by the failed command: {changed}"
    assert sorted(p.name for p in cache.glob("evaluations.sqlite*")) == ["evaluations.sqlite"]  # no journal left
    assert not list(out.rglob("config.json")), "a run configuration was saved"
    assert not (bad.models["missing"]).exists(), "a model was trained"


def test_cache_locked_longer_than_the_timeout(cli, tmp_path, monkeypatch):
    """Another process holds the write lock past the busy timeout: one line naming the file."""
    from surrogate_nas.evaluation import cache as cache_module

    monkeypatch.setattr(cache_module, "BUSY_TIMEOUT_S", 0.5)
    db = tmp_path / "cache" / "evaluations.sqlite"
    EvalCache(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the write lock, as a process in the middle of a commit
        holder.execute("INSERT INTO hits (fingerprint, genome, run_id, at) VALUES ('x', '1', 'r', 't')")
        r = cli("run", *SEARCH, "--out", tmp_path / "out", cache=tmp_path / "cache")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert r.rc == 2 and len(r.err_lines) == 1, r.err
    assert r.err_lines[0].startswith(f"error: {db}: evaluation cache stayed locked by another process for over 0.5 s")
    assert "Traceback" not in r.err


def test_missing_model_is_not_trained(cli, tmp_path, monkeypatch):
    """A mistyped --model is an error at once, not 25 minutes of training (an event, not a
    clock: training must never start)."""
    from surrogate_nas.network import training

    def no_training(*args, **kwargs):
        raise AssertionError("training started for a mistyped --model")

    monkeypatch.setattr(training, "train_and_save", no_training)
    monkeypatch.setattr(training, "train", no_training)
    model = tmp_path / "modls" / "alexnet.keras"
    r = cli("evaluate", "--genome", EXACT5, model=model)
    assert r.rc == 2 and len(r.err_lines) == 1
    assert r.err_lines[0] == (f"error: --model {model}: model not found; train one with "
                              f"`python -m surrogate_nas train --model {model}`")
    assert not model.parent.exists()
