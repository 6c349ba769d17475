"""Evaluation cache on real SQLite files, with real concurrent and killed processes (damaged
files: test_cache_damage.py)."""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from surrogate_nas import cli
from surrogate_nas.errors import UserError
from surrogate_nas.evaluation.cache_csv import export_csv
from surrogate_nas.evaluation.cache import (
    CACHE_FILE_NAME,
    EvalCache,
    Record,
    canonical_json,
    default_cache_file,
)
from surrogate_nas.genome import genome_key

FP_A = hashlib.sha256(b"model a, 100 images").hexdigest()
FP_B = hashlib.sha256(b"model b, 100 images").hexdigest()


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "cache" / CACHE_FILE_NAME


@pytest.fixture(autouse=True)
def _no_project_config(tmp_path, monkeypatch):
    """Keep the CLI away from the checkout's surrogate_nas.toml and environment."""
    monkeypatch.chdir(tmp_path)
    for var in ("SURROGATE_NAS_CONFIG", "SURROGATE_NAS_CACHE"):
        monkeypatch.delenv(var, raising=False)


# -- fingerprints and hashes ---------------------------------------------------------------


def test_canonical_json_is_order_free_and_plain():
    """The text stored for a fingerprint's description (what `cache stats` shows)."""
    assert canonical_json({"a": 1, "b": [1, 2]}) == canonical_json({"b": [1, 2], "a": 1}) == '{"a":1,"b":[1,2]}'
    assert canonical_json({"n": np.int64(5), "v": np.array([1.5, 2.0])}) == '{"n":5,"v":[1.5,2.0]}'
    with pytest.raises(TypeError):
        canonical_json({"p": object()})
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_genome_key_is_canonical():
    assert genome_key((0, 3, 17, 2, 5)) == "0,3,17,2,5"
    assert genome_key(np.array([0, 3, 17, 2, 5])) == "0,3,17,2,5"
    with pytest.raises(TypeError):
        genome_key((0.5, 1))


# -- basic behaviour ------------------------------------------------------------------------


def test_hit_miss_and_fingerprint_isolation(db):
    with EvalCache(db) as cache:
        assert cache.get(FP_A, (0, 1, 2, 3, 4)) is None
        rec = cache.put(FP_A, (0, 1, 2, 3, 4), 0.75, 12.5, 100, 1.5, "run1")
        assert isinstance(rec, Record)
        assert rec.genome == (0, 1, 2, 3, 4) and rec.accuracy == 0.75 and rec.energy == 12.5
        assert rec.n_images == 100 and rec.seconds == 1.5 and rec.run_id == "run1"
        assert rec.created_at.endswith("+00:00")
        assert cache.get(FP_A, [0, 1, 2, 3, 4]) == rec
        assert cache.get(FP_A, np.array([0, 1, 2, 3, 4])) == rec
        assert cache.get(FP_B, (0, 1, 2, 3, 4)) is None  # other fingerprint never reuses a row
        assert cache.get(FP_A, (0, 1, 2, 3, 5)) is None


def test_put_twice_first_writer_wins(db):
    with EvalCache(db) as cache:
        first = cache.put(FP_A, (1, 1, 1, 1, 1), 0.5, 1.0, 100, 2.0, "first")
        second = cache.put(FP_A, (1, 1, 1, 1, 1), 0.9, 9.0, 100, 3.0, "second")
        assert second == first and second.run_id == "first" and second.accuracy == 0.5
        other = cache.put(FP_B, (1, 1, 1, 1, 1), 0.9, 9.0, 100, 3.0, "second")
        assert other.accuracy == 0.9


def test_get_many_chunks_and_skips_misses(db):
    genomes = [(i % 7, i % 11, i % 13, i // 100, 0) for i in range(1200)]
    genomes = list(dict.fromkeys(genomes))
    with EvalCache(db) as cache:
        for g in genomes[::2]:
            cache.put(FP_A, g, sum(g) / 100, None, None, None, None)
        found = cache.get_many(FP_A, genomes + genomes[:10])  # duplicates are fine
        assert set(found) == set(genomes[::2])
        assert all(found[g].accuracy == sum(g) / 100 and found[g].energy is None for g in found)
        assert cache.get_many(FP_B, genomes) == {}
        assert cache.get_many(FP_A, []) == {}


def test_persistence_across_reopen_and_pickle(db):
    cache = EvalCache(db)
    rec = cache.put(FP_A, (2, 2, 2, 2, 2), 0.6, 3.0, 100, 1.0, "r")
    cache.close()
    with EvalCache(db) as again:
        assert again.get(FP_A, (2, 2, 2, 2, 2)) == rec
        copy = pickle.loads(pickle.dumps(again))
        assert copy.get(FP_A, (2, 2, 2, 2, 2)) == rec
        copy.close()
    mode = sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def _fork_child_put(cache: EvalCache) -> None:
    cache.put(FP_A, (7, 7, 7, 7, 7), 0.7, 0.0, 1, 0.0, "child")


def test_connection_reopened_after_fork(db):
    cache = EvalCache(db)
    cache.put(FP_A, (6, 6, 6, 6, 6), 0.6, 0.0, 1, 0.0, "parent")
    proc = multiprocessing.get_context("fork").Process(target=_fork_child_put, args=(cache,))
    proc.start()
    proc.join(20)
    assert proc.exitcode == 0
    assert cache.get(FP_A, (7, 7, 7, 7, 7)).run_id == "child"  # parent connection still fine
    cache.close()


def test_stats_and_hits(db):
    with EvalCache(db) as cache:
        cache.register_fingerprint(FP_A, {"model": "alexnet.keras", "n_images": 100})
        cache.register_fingerprint(FP_A, {"model": "ignored, first registration wins"})
        for i in range(3):
            cache.put(FP_A, (i, 0, 0, 0, 0), 0.5, 1.0, 100, 1.0, "r1")
        cache.put(FP_B, (0, 0, 0, 0, 0), 0.5, 1.0, 100, 1.0, "r1")
        cache.record_hit(FP_A, (0, 0, 0, 0, 0), "r2")
        cache.record_hits(FP_A, [(1, 0, 0, 0, 0), (2, 0, 0, 0, 0)], "r2")
        cache.record_hits(FP_A, [], "r2")
        stats = {s["fingerprint"]: s for s in cache.stats()}
    assert stats[FP_A]["rows"] == 3 and stats[FP_A]["hits"] == 3
    assert stats[FP_A]["description"] == {"model": "alexnet.keras", "n_images": 100}
    assert stats[FP_A]["first_created"] <= stats[FP_A]["last_created"]
    assert stats[FP_B]["rows"] == 1 and stats[FP_B]["hits"] == 0 and stats[FP_B]["description"] is None


def test_export_csv(db, tmp_path):
    with EvalCache(db) as cache:
        cache.put(FP_A, (0, 3, 17, 2, 5), 0.8125, 4.5, 100, 1.25, "r1")
        cache.put(FP_A, (1, 1, 1, 1, 1), 0.5, None, None, None, None)
        cache.put(FP_B, (0, 0, 0, 0, 0), 0.25, 1.0, 100, 1.0, "r2")
        assert export_csv(cache, tmp_path / "all.csv") == 3
        assert export_csv(cache, tmp_path / "a.csv", fingerprint=FP_A) == 2
        with pytest.raises(UserError, match="does not exist"):
            export_csv(cache, tmp_path / "missing" / "x.csv")
    rows = list(csv.DictReader(open(tmp_path / "a.csv", newline="")))
    assert [r["genome"] for r in rows] == ["0,3,17,2,5", "1,1,1,1,1"]
    assert float(rows[0]["accuracy"]) == 0.8125 and rows[0]["run_id"] == "r1"
    assert rows[1]["energy"] == "" and rows[1]["run_id"] == ""
    assert {r["fingerprint"] for r in csv.DictReader(open(tmp_path / "all.csv", newline=""))} == {FP_A, FP_B}


# -- concurrency and crashes -----------------------------------------------------------------

WRITER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from surrogate_nas.evaluation.cache import EvalCache
    path, wid, go, fp = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    cache = EvalCache(path)
    while not go.exists():
        time.sleep(0.005)
    shared = {}
    for i in range(200):
        cache.put(fp, (10 + wid, i % 50, i // 50, 0, 0), wid + i / 1000, 1.0, 10, 0.01, f"w{wid}")
        if i % 4 == 0:
            g = (99, i // 4, 0, 0, 0)
            rec = cache.put(fp, g, wid + 0.5, 1.0, 10, 0.01, f"w{wid}")
            shared[",".join(map(str, g))] = [rec.accuracy, rec.run_id, rec.created_at]
    print(json.dumps(shared))
""")


def test_concurrent_processes_write_same_file(db, tmp_path):
    go = tmp_path / "go"
    # no database yet: the workers also race on creating the file and its schema
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(w), str(go), FP_A],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(3)]
    time.sleep(0.3)
    go.touch()
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outputs.append(json.loads(out))
    with EvalCache(db) as cache:
        for w in range(3):
            mine = cache.get_many(FP_A, [(10 + w, i % 50, i // 50, 0, 0) for i in range(200)])
            assert len(mine) == 200 and all(r.run_id == f"w{w}" for r in mine.values())
        shared = cache.get_many(FP_A, [(99, k, 0, 0, 0) for k in range(50)])
        assert len(shared) == 50
        for g, rec in shared.items():  # every process got the single stored answer
            stored = [rec.accuracy, rec.run_id, rec.created_at]
            assert all(out[genome_key(g)] == stored for out in outputs)
        assert sum(s["rows"] for s in cache.stats()) == 3 * 200 + 50


KILLED = textwrap.dedent("""
    import sys
    from pathlib import Path
    from surrogate_nas.evaluation.cache import EvalCache
    cache = EvalCache(Path(sys.argv[1]))
    for i in range(100000):
        g = (i % 20, (i // 20) % 20, i // 400, 1, 2)
        cache.put(sys.argv[2], g, 0.5, 1.0, 10, 0.01, "killed")
        print(",".join(map(str, g)), flush=True)
""")


def test_sigkill_loses_no_committed_row(db):
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(db), FP_A],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reported = []
    try:
        for line in proc.stdout:
            reported.append(line.strip())
            if len(reported) >= 150:
                break
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    reported += [line for line in rest.splitlines() if line]
    assert len(reported) >= 150
    with EvalCache(db) as cache:
        found = cache.get_many(FP_A, [tuple(map(int, g.split(","))) for g in reported])
        assert len(found) == len(reported)


# -- CLI -------------------------------------------------------------------------------------


def _fill(cache_dir: Path) -> None:
    with EvalCache(default_cache_file(cache_dir)) as cache:
        cache.register_fingerprint(FP_A, {"model": "models/alexnet.keras", "catalog": "evoapprox8b",
                                          "n_images": 100, "weights_sha256": "ab" * 32})
        cache.put(FP_A, (0, 1, 2, 3, 4), 0.8, 1.0, 100, 1.0, "r1")
        cache.put(FP_A, (0, 1, 2, 3, 5), 0.7, 1.0, 100, 1.0, "r1")
        cache.put(FP_B, (0, 1, 2, 3, 4), 0.6, 1.0, 100, 1.0, "r1")
        cache.record_hit(FP_A, (0, 1, 2, 3, 4), "r2")


def test_default_cache_file():
    assert default_cache_file(Path("x")) == Path("x") / "evaluations.sqlite"


def test_cli_stats(tmp_path, capsys):
    cache_dir = tmp_path / "c"
    assert cli.main(["cache", "stats", "--cache", str(cache_dir)]) == 0
    assert "no evaluation cache" in capsys.readouterr().out
    assert not cache_dir.exists()  # stats does not create a cache
    _fill(cache_dir)
    assert cli.main(["cache", "stats", "--cache", str(cache_dir)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("fingerprint"))
    row_a = next(line for line in lines if line.startswith(FP_A[:12]))
    assert "rows" in header and "hits" in header
    assert row_a.split()[1:3] == ["2", "1"]
    assert "model=alexnet.keras" in row_a and "catalog=evoapprox8b" in row_a and "n_images=100" in row_a
    assert "abab" not in row_a  # hashes are not shown
    assert FP_A[:13] not in out
    rows_end = header.index("rows") + len("rows")
    assert row_a[rows_end - 1] == "2" and row_a[rows_end] == " "  # numbers right-aligned under header


def test_cli_stats_uses_env_cache(tmp_path, capsys, monkeypatch):
    _fill(tmp_path / "envcache")
    monkeypatch.setenv("SURROGATE_NAS_CACHE", str(tmp_path / "envcache"))
    assert cli.main(["cache", "stats"]) == 0
    assert FP_B[:12] in capsys.readouterr().out


def test_cli_export(tmp_path, capsys):
    cache_dir = tmp_path / "c"
    _fill(cache_dir)
    out_csv = tmp_path / "a.csv"
    assert cli.main(["cache", "export", "--csv", str(out_csv), "--cache", str(cache_dir),
                     "--fingerprint", FP_A[:12]]) == 0
    assert "wrote 2 row(s)" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out_csv, newline="")))
    assert {r["genome"] for r in rows} == {"0,1,2,3,4", "0,1,2,3,5"} and {r["fingerprint"] for r in rows} == {FP_A}

    assert cli.main(["cache", "export", "--csv", str(tmp_path / "all.csv"), "--cache", str(cache_dir)]) == 0
    capsys.readouterr()
    assert len(list(csv.DictReader(open(tmp_path / "all.csv", newline="")))) == 3


@pytest.mark.parametrize("args, message", [
    (["--csv", "{tmp}/nope/x.csv"], "does not exist"),
    (["--csv", "{tmp}"], "is a folder"),
    (["--csv", "{tmp}/x.csv", "--fingerprint", "zzzz"], "no such fingerprint"),
    (["--csv", "{tmp}/x.csv", "--cache", "{tmp}/empty"], "no evaluation cache"),
])
def test_cli_export_errors(tmp_path, capsys, args, message):
    _fill(tmp_path / "c")
    args = [a.format(tmp=tmp_path) for a in args]
    if "--cache" not in args:
        args += ["--cache", str(tmp_path / "c")]
    assert cli.main(["cache", "export", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
