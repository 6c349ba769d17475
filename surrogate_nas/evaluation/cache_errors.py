"""The evaluation cache's one-line errors. A damaged file is never replaced, deleted or
written to: it may hold hours of evaluations, and every run folder keeps its own
evaluations.csv, from which `cache import` rebuilds the rows in a new file."""

from __future__ import annotations

import shlex
import sqlite3
from pathlib import Path

from surrogate_nas.errors import UserError


def rebuild_command(cache_folder: Path | None) -> str:
    """The command that refills a cache from run folders (with `--cache` unless it is the
    folder the default settings find)."""
    flag = "" if cache_folder is None else f" --cache {shlex.quote(str(cache_folder))}"
    return f"python -m surrogate_nas cache import{flag} <run folders>"


def damaged(path: Path, reason: object, cache_folder: Path | None) -> UserError:
    """`cache_folder`: the folder whose cache this file is (None: a file of another name,
    which `cache import` does not write; it fills the settings' cache folder instead)."""
    return UserError(f"{path}: evaluation cache is damaged ({reason}); it is left as it is: move it away, then "
                     f"rebuild the cache from run folders with `{rebuild_command(cache_folder)}`")


def unusable(path: Path, exc: sqlite3.OperationalError, busy_timeout_s: float) -> UserError:
    if "locked" in str(exc) or "busy" in str(exc):
        return UserError(f"{path}: evaluation cache stayed locked by another process for over "
                         f"{busy_timeout_s:g} s ({exc}); try again when that process is done")
    return UserError(f"{path}: cannot use the evaluation cache ({exc})")
