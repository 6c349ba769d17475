"""Where the catalog, data, cache and model live.

Precedence (highest first): command-line flag, environment variable, project config
file (`surrogate_nas.toml`, found in the working directory or any parent, or named by
SURROGATE_NAS_CONFIG), built-in fallback. No path to shared data is hard-wired here.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from surrogate_nas.errors import UserError

CONFIG_NAME = "surrogate_nas.toml"
KEYS = ("multipliers", "data", "cache", "model")
ENV = {key: f"SURROGATE_NAS_{key.upper()}" for key in KEYS}
FLAGS = {"multipliers": "--catalog", "data": "--data", "cache": "--cache", "model": "--model"}
DEFAULT_TRAIN_EPOCHS = 40  # `train`, and a first run on a model that does not exist yet


@dataclass(frozen=True)
class Paths:
    multipliers: Path | None
    data: Path | None
    cache: Path
    model: Path | None
    config_file: Path | None = None
    from_config_file: frozenset = frozenset()  # keys whose value came from the config file


def find_config_file(start: Path | None = None) -> Path | None:
    named = os.environ.get("SURROGATE_NAS_CONFIG")
    if named:
        path = Path(named)
        if not path.is_file():
            raise UserError(f"SURROGATE_NAS_CONFIG: config file {path} does not exist")
        return path
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def _read_config(path: Path) -> dict[str, Path]:
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except UnicodeDecodeError:
        raise UserError(f"{path}: config file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    table = doc.get("paths", {})
    if not isinstance(table, dict):
        raise UserError(f"{path}: [paths] must be a table")
    unknown = set(table) - set(KEYS)
    if unknown:
        raise UserError(f"{path}: unknown key(s) in [paths]: {', '.join(sorted(unknown))}")
    out = {}
    for key, value in table.items():
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"{path}: [paths] {key} must be a non-empty string (a path)")
        p = Path(value).expanduser()
        out[key] = p if p.is_absolute() else (path.parent / p)
    return out


def resolve_paths(**flags: str | Path | None) -> Paths:
    """Resolve each path from flags, then environment, then the config file."""
    unknown = set(flags) - set(KEYS)
    if unknown:
        raise TypeError(f"unknown path keys: {sorted(unknown)}")
    config_file = find_config_file()
    from_file = _read_config(config_file) if config_file else {}
    values: dict[str, Path | None] = {}
    from_config: set[str] = set()
    for key in KEYS:
        flag = flags.get(key)
        env = os.environ.get(ENV[key])
        if flag:
            values[key] = Path(flag).expanduser()
        elif env:
            values[key] = Path(env).expanduser()
        else:
            values[key] = from_file.get(key)
            if key in from_file:
                from_config.add(key)
    if values["cache"] is None:
        values["cache"] = Path("cache")
    return Paths(config_file=config_file, from_config_file=frozenset(from_config), **values)  # type: ignore[arg-type]


def require(path: Path | None, key: str, what: str) -> Path:
    """Return an existing path or raise a one-line error saying how to set it."""
    flag = FLAGS[key]
    if path is None:
        raise UserError(
            f"no {what} configured: pass {flag}, set {ENV[key]} or add '{key}' to [paths] in {CONFIG_NAME}"
        )
    if not path.exists():
        raise UserError(f"{flag} {path}: {what} not found")
    return path


def project_root(paths: Paths | None = None) -> Path:
    """What recorded paths are relative to: the folder of the config file, else the
    working directory."""
    config_file = paths.config_file if paths is not None else find_config_file()
    return (config_file.parent if config_file else Path.cwd()).resolve()


def portable(path: str | Path, root: Path) -> str:
    """`path` as a run record stores it: relative to the project root (with `/`), so that a
    record that is moved, shared or committed exposes no folder of the machine that made it."""
    return Path(os.path.relpath(Path(path).resolve(), root)).as_posix()


def from_record(text: str, root: Path) -> Path:
    """A path a record stored (relative to the project root, or absolute in old records)."""
    path = Path(text)
    return path if path.is_absolute() else root / path
