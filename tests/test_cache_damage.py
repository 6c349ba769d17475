"""A damaged or foreign evaluation cache file: one clear line naming the file and how to
rebuild it (`cache import` from run folders), and the file kept byte for byte; through
the Python API and the CLI, on real SQLite files and the cache of a real tiny run."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import isolated_cwd, read_csv

from surrogate_nas import cli
from surrogate_nas.errors import UserError
from surrogate_nas.evaluation.cache import SCHEMA_VERSION, EvalCache, default_cache_file
from test_cache import _no_project_config, db  # noqa: F401  (the same fixtures: a cache file, no project config)

FP_A = "a" * 64


# -- damaged and foreign files ---------------------------------------------------------------


def _damaged_line(db: Path, reason: str) -> str:
    """The one line a damaged cache gives: the file, that it is kept, and how to rebuild it."""
    return (f"{db}: evaluation cache is damaged ({reason}); it is left as it is: move it away, then rebuild the "
            f"cache from run folders with `python -m surrogate_nas cache import --cache {db.parent} <run folders>`")


def test_garbage_file_is_reported_and_left_alone(db):
    db.parent.mkdir(parents=True)
    garbage = bytes(range(256)) * 64
    db.write_bytes(garbage)
    with pytest.raises(UserError) as info:
        EvalCache(db)
    assert str(info.value) == _damaged_line(db, "file is not a database")
    assert db.read_bytes() == garbage


def test_other_file_name_is_rebuilt_into_the_configured_cache(tmp_path):
    """`cache import` writes <cache folder>/evaluations.sqlite: for a file of another name
    the hint names no folder."""
    odd = tmp_path / "my.sqlite"
    odd.write_bytes(b"x" * 5000)
    with pytest.raises(UserError) as info:
        EvalCache(odd)
    assert str(info.value).endswith("with `python -m surrogate_nas cache import <run folders>`")


def test_corrupted_pages_are_reported(db):
    with EvalCache(db) as cache:
        for i in range(1500):
            cache.put(FP_A, (i % 10, i // 10 % 10, i // 100, 0, 0), 0.5, 1.0, 10, 0.1, "r" * 40)
    assert not Path(str(db) + "-wal").exists() or Path(str(db) + "-wal").stat().st_size == 0
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    for start in range(2 * page, len(data) - page, 3 * page):
        data[start:start + page] = bytes([0xA5]) * page
    db.write_bytes(bytes(data))
    before = db.read_bytes()
    with pytest.raises(UserError, match="damaged") as info:
        EvalCache(db)
    assert str(db) in str(info.value)
    assert db.read_bytes() == before


def test_newer_schema_is_refused(db):
    EvalCache(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(UserError, match="schema version"):
        EvalCache(db)


def test_foreign_sqlite_db_is_not_taken_over(db):
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE precious (x)")
    conn.commit()
    conn.close()
    with pytest.raises(UserError, match="not an evaluation cache"):
        EvalCache(db)
    tables = [r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert tables == ["precious"]


def test_folder_instead_of_file(db):
    db.mkdir(parents=True)
    with pytest.raises(UserError, match="folder"):
        EvalCache(db)


def test_cli_damaged_cache_one_line(tmp_path, capsys):
    (tmp_path / "c").mkdir()
    db = default_cache_file(tmp_path / "c")
    db.write_bytes(b"not sqlite at all" * 100)
    assert cli.main(["cache", "stats", "--cache", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {_damaged_line(db, 'file is not a database')}"]
    assert db.read_bytes() == b"not sqlite at all" * 100




# -- a damaged cache of a real run, through the CLI -------------------------------------------

RUN = ["run", "--mode", "full", "--pop-size", "4", "--budget", "8", "--search-images", "20", "--no-test",
       "--compensation", "none", "--seed", "3"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, project) -> tuple[Path, bytes]:
    """A real run folder and the bytes of its cache file (WAL merged in: the whole file)."""
    base = tmp_path_factory.mktemp("tiny_run")
    with isolated_cwd(base):
        assert cli.main([*RUN, "--out", str(base / "runs"), "--run-id", "a", *project.flags(cache=base / "cache")]) == 0
    db = default_cache_file(base / "cache")
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return base / "runs" / "a", db.read_bytes()


def _cut_in_half(data: bytes) -> bytes:  # a disk that filled up, a copy cut short
    return data[: len(data) // 2]


def _overwrite_pages(data: bytes) -> bytes:  # every third page from the third on: garbage
    data, page = bytearray(data), 4096
    for start in range(2 * page, len(data) - page, 3 * page):
        data[start:start + page] = bytes([0xA5]) * page
    return bytes(data)


@pytest.mark.parametrize("damage", [_cut_in_half, _overwrite_pages], ids=["truncated", "corrupt-pages"])
def test_damaged_cache_of_a_run_one_line_kept_and_rebuilt(tiny_run, project, tmp_path, capsys, damage):
    """`run` and `cache stats` on a damaged cache: one line naming the file and the rebuild
    command, the file's bytes untouched. Following the line (move the file away, `cache
    import` the run folder) brings back every evaluation: a rerun scores nothing again."""
    run_dir, whole = tiny_run
    cache = tmp_path / "cache"
    cache.mkdir()
    db = default_cache_file(cache)
    damaged = damage(whole)
    assert len(whole) >= 6 * 4096 and damaged != whole
    db.write_bytes(damaged)
    capsys.readouterr()

    for argv in ([*RUN, "--out", str(tmp_path / "runs"), "--run-id", "b", *project.flags(cache=cache)],
                 ["cache", "stats", "--cache", str(cache)]):
        assert cli.main(argv) == 2, argv[0]
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1, err
        if damage is _cut_in_half:
            assert err == [f"error: {_damaged_line(db, 'database disk image is malformed')}"]
        else:  # the reason is SQLite's own account of the pages it found broken
            before, after = _damaged_line(db, "@").split("@")
            assert err[0].startswith(f"error: {before}") and err[0].endswith(after), err[0]
        assert db.read_bytes() == damaged  # kept as it was: not deleted, not written
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith(db.name)) == [db.name]

    db.rename(tmp_path / "damaged.sqlite")  # what the line says, then its command
    assert cli.main(["cache", "import", str(run_dir), "--cache", str(cache)]) == 0
    capsys.readouterr()
    rows = read_csv(run_dir / "evaluations.csv")
    fp = json.loads((run_dir / "config.json").read_text())["fingerprint"]
    with sqlite3.connect(db) as conn:
        stored = dict(conn.execute("SELECT genome, accuracy FROM evaluations WHERE fingerprint = ?", (fp,)))
    assert {g: f"{a:.6f}" for g, a in stored.items()} == {r["genome_indices"]: r["accuracy"] for r in rows}
    assert cli.main([*RUN, "--out", str(tmp_path / "runs"), "--run-id", "c", *project.flags(cache=cache)]) == 0
    again = read_csv(tmp_path / "runs" / "c" / "evaluations.csv")
    assert [r["genome_indices"] for r in again] == [r["genome_indices"] for r in rows]
    assert all(r["from_cache"] == "1" for r in again)
