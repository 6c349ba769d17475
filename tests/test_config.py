"""Where paths come from (surrogate_nas.config): flag > environment variable > config
file, relative paths relative to the file, the file found upwards or named by
SURROGATE_NAS_CONFIG, and bad files as one-line errors. Real files in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import PATH_ENV

from surrogate_nas.config import resolve_paths
from surrogate_nas.errors import UserError

KEYS = ("multipliers", "data", "cache", "model")
ENV = {k: f"SURROGATE_NAS_{k.upper()}" for k in KEYS}


@pytest.fixture
def clean(tmp_path, monkeypatch):
    for name in PATH_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_config(folder: Path, body: str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "surrogate_nas.toml"
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    return path


FILE_BODY = '[paths]\nmultipliers = "cat"\ndata = "/abs/cifar.tar.gz"\ncache = "../c"\nmodel = "m/x.keras"\n'


def test_relative_paths_are_relative_to_the_file_found_upwards(clean, monkeypatch):
    config = write_config(clean / "proj", FILE_BODY)
    deep = clean / "proj" / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)  # found from the working directory upwards
    paths = resolve_paths()
    assert paths.config_file.resolve() == config.resolve()
    assert paths.multipliers.resolve() == (clean / "proj" / "cat").resolve()
    assert paths.cache.resolve() == (clean / "c").resolve()
    assert paths.model.resolve() == (clean / "proj" / "m" / "x.keras").resolve()
    assert paths.data == Path("/abs/cifar.tar.gz")
    assert paths.from_config_file == frozenset(KEYS)


def test_named_config_file_is_relative_to_itself(clean, monkeypatch):
    config = write_config(clean / "elsewhere", FILE_BODY)
    monkeypatch.setenv("SURROGATE_NAS_CONFIG", str(config))
    paths = resolve_paths()
    assert paths.multipliers.resolve() == (clean / "elsewhere" / "cat").resolve()


@pytest.mark.parametrize("key", KEYS)
def test_precedence_flag_over_env_over_file(clean, monkeypatch, key):
    write_config(clean, FILE_BODY)
    from_file = getattr(resolve_paths(), key)
    monkeypatch.setenv(ENV[key], "from-env")
    paths = resolve_paths()
    assert getattr(paths, key) == Path("from-env") and key not in paths.from_config_file
    paths = resolve_paths(**{key: "from-flag"})
    assert getattr(paths, key) == Path("from-flag") and key not in paths.from_config_file
    monkeypatch.delenv(ENV[key])
    assert getattr(resolve_paths(), key) == from_file != Path("from-env")
    others = [k for k in KEYS if k != key]
    assert all(getattr(paths, k) == getattr(resolve_paths(), k) for k in others)  # untouched


def test_no_config_file(clean):
    paths = resolve_paths()
    assert paths.config_file is None and paths.multipliers is None and paths.model is None
    assert paths.cache == Path("cache") and paths.from_config_file == frozenset()


@pytest.mark.parametrize("body, pattern", [
    (b"[paths]\ncache = \"\xff\xfe\"\n", r"surrogate_nas\.toml: config file is not UTF-8 text"),
    (b"[paths\n", r"surrogate_nas\.toml: not valid TOML"),
    (b"paths = 3\n", r"surrogate_nas\.toml: \[paths\] must be a table"),
    (b"[paths]\ncatalog = \"x\"\n", r"surrogate_nas\.toml: unknown key\(s\) in \[paths\]: catalog"),
    (b"[paths]\nmodel = 3\n", r"surrogate_nas\.toml: \[paths\] model must be a non-empty string"),
    (b"[paths]\ndata = \"\"\n", r"surrogate_nas\.toml: \[paths\] data must be a non-empty string"),
])
def test_bad_config_files(clean, body, pattern):
    write_config(clean, body)
    with pytest.raises(UserError, match=pattern):
        resolve_paths()


def test_named_config_file_missing_or_a_folder(clean, monkeypatch):
    monkeypatch.setenv("SURROGATE_NAS_CONFIG", str(clean / "nope.toml"))
    with pytest.raises(UserError, match=r"SURROGATE_NAS_CONFIG: config file .*nope\.toml does not exist"):
        resolve_paths()
    monkeypatch.setenv("SURROGATE_NAS_CONFIG", str(clean))
    with pytest.raises(UserError, match=r"SURROGATE_NAS_CONFIG: config file .* does not exist"):
        resolve_paths()


def test_unknown_flag_key_is_a_programming_error(clean):
    with pytest.raises(TypeError):
        resolve_paths(catalog="x")
