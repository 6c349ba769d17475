"""Disk-backed genome -> accuracy cache shared by runs, experiments and processes.

A true evaluation costs seconds, so every finished one is committed at once (a run
killed at any moment loses none) and reused by any later run whose fingerprint -- the
hash of everything that changes an accuracy -- matches. SQLite in WAL mode lets several
processes write the same file; the first writer of a (fingerprint, genome) wins so that
concurrent runs computing the same genome agree. A damaged file is reported, never
replaced: it may hold hours of evaluations.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from surrogate_nas.errors import UserError
from surrogate_nas.evaluation.bits import check_bits, unpack_correct
from surrogate_nas.evaluation.cache_errors import damaged, unusable
from surrogate_nas.genome import genome_from_key, genome_key  # noqa: F401  (genome_key: also the former home)

SCHEMA_VERSION = 3  # 2: below_floor (early-stopped evaluations); 3: correct_bits (per-image correctness) and
# dominated_by (stopped by Pareto racing); older files are upgraded in place and keep every row (both NULL)

CACHE_FILE_NAME = "evaluations.sqlite"

BUSY_TIMEOUT_S = 60.0

_CHUNK = 500  # genomes per IN (...) query; well under SQLite's oldest variable limit (999)

_OUR_TABLES = {"evaluations", "fingerprints", "hits"}

CSV_COLUMNS = ("fingerprint", "genome", "accuracy", "energy", "n_images", "seconds", "created_at", "run_id", "below_floor",
               "dominated_by", "correct_bits")

# Connections inherited through fork are parked here instead of being closed: closing
# them in the child could disturb the parent's locks and WAL state.
_ABANDONED: list[sqlite3.Connection] = []


_SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    fingerprint TEXT NOT NULL,
    genome      TEXT NOT NULL,
    accuracy    REAL NOT NULL,
    energy      REAL,
    n_images    INTEGER,
    seconds     REAL,
    created_at  TEXT NOT NULL,
    run_id      TEXT,
    below_floor REAL,  -- NULL when every image was scored, else an early stop showed accuracy < this
    dominated_by TEXT,  -- racing stopped it: shown worse than this genome of lower or equal energy
    correct_bits BLOB,  -- which scored images were right (bits.pack_correct), NULL in rows made before v3
    PRIMARY KEY (fingerprint, genome)
);
CREATE TABLE IF NOT EXISTS fingerprints (
    fingerprint TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hits (
    fingerprint TEXT NOT NULL,
    genome      TEXT NOT NULL,
    run_id      TEXT,
    at          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS hits_by_fingerprint ON hits (fingerprint);
"""


def default_cache_file(cache_dir: Path) -> Path:
    """One file per cache folder, so every command and experiment finds the same rows."""
    return Path(cache_dir) / CACHE_FILE_NAME


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "shape", None) == ():
        return obj.item()  # numpy scalar
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return obj.tolist()  # numpy array
    raise TypeError(f"fingerprint description part of type {type(obj).__name__} is not JSON-serialisable")


def fingerprint(parts) -> str:
    """The one fingerprint recipe: sha256 of the sorted-key JSON text of `parts` (an
    evaluator's description, the auto rule's key, the rule itself). Its text form is
    frozen: cached evaluations are found by it."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def canonical_json(parts: dict) -> str:
    """Same dict content -> same text, whatever the key order (how a description is stored)."""
    return json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False, default=_json_default)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Record:
    fingerprint: str
    genome: tuple[int, ...]
    accuracy: float
    energy: float | None
    n_images: int | None
    seconds: float | None
    created_at: str
    run_id: str | None
    below_floor: float | None = None  # early-stopped: accuracy is partial (n_images scored)
    dominated_by: str | None = None  # stopped by racing (genome key of the point it lost to): partial too
    correct_bits: bytes | None = None  # pack_correct of the n_images scored images; None: not recorded

    def correct(self):
        """Per scored image (scoring order): right? None when the row has no bits."""
        return None if self.correct_bits is None else unpack_correct(self.correct_bits, int(self.n_images))

    def answers(self, floor: float | None, race: bool = False) -> bool:
        """Does this row settle a genome for a search with this accuracy floor (and racing)?
        A stop below a floor says nothing about designs above a lower floor (or with no
        floor); a racing stop settles it only for a search that races."""
        if self.dominated_by is not None:
            return race
        return self.below_floor is None or (floor is not None and self.below_floor <= floor)

_COLS = ", ".join(CSV_COLUMNS)


def _record(row: tuple) -> Record:
    fp, genome, *rest, bits = row
    return Record(fp, genome_from_key(genome), *rest, None if bits is None else bytes(bits))

_UPDATES = ", ".join(f"{c} = excluded.{c}" for c in CSV_COLUMNS[2:])


def _upsert(conn: sqlite3.Connection, values: tuple) -> None:
    """`EvalCache.put`'s merge rule for one row (`values` in CSV_COLUMNS order)."""
    fp, key = values[0], values[1]
    conn.execute(f"INSERT INTO evaluations ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                 f"ON CONFLICT (fingerprint, genome) DO UPDATE SET {_UPDATES} "
                 "WHERE (evaluations.below_floor IS NOT NULL OR evaluations.dominated_by IS NOT NULL) "
                 "AND ((excluded.below_floor IS NULL AND excluded.dominated_by IS NULL) "
                 "OR (excluded.dominated_by IS NULL AND evaluations.dominated_by IS NULL "
                 "AND excluded.below_floor < evaluations.below_floor))", values)
    if values[10] is not None:  # an older row of the same evaluation: add its bits
        conn.execute("UPDATE evaluations SET correct_bits = ? WHERE fingerprint = ? AND genome = ? "
                     "AND correct_bits IS NULL AND n_images = ? AND accuracy = ? AND below_floor IS ? "
                     "AND dominated_by IS ?", (values[10], fp, key, values[4], values[2], values[8], values[9]))


class EvalCache:
    """Handle on the cache file; cheap to pickle, reconnects in each new process."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._lock = threading.RLock()
        self._connect()  # fail early on a damaged or newer file

    # -- connection management ---------------------------------------------------------

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self._conn = None
        self._pid = None
        self._lock = threading.RLock()

    def __enter__(self) -> "EvalCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EvalCache({str(self.path)!r})"

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                if self._pid == os.getpid():
                    self._conn.close()
                else:
                    _ABANDONED.append(self._conn)
            self._conn = None
            self._pid = None

    def _damaged(self, reason: object) -> UserError:
        return damaged(self.path, reason, self.path.parent if self.path.name == CACHE_FILE_NAME else None)

    def _unusable(self, exc: sqlite3.OperationalError) -> UserError:
        return unusable(self.path, exc, BUSY_TIMEOUT_S)

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        if self._conn is not None:  # inherited through fork
            _ABANDONED.append(self._conn)
            self._conn = None
        path = self.path
        if path.is_dir():
            raise UserError(f"{path}: is a folder, not an evaluation cache file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{path.parent}: cannot create cache folder ({exc.strerror or exc})") from None
        conn = None
        try:
            conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")  # first read of the header: NOTADB here
            conn.execute("PRAGMA synchronous = NORMAL")
            problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise self._damaged("; ".join(str(p) for p in problems[:3]))
            self._ensure_schema(conn)
        except UserError:
            if conn is not None:
                conn.close()
            raise
        except sqlite3.OperationalError as exc:
            if conn is not None:
                conn.close()
            raise self._unusable(exc) from None
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            raise self._damaged(exc) from None
        self._conn = conn
        self._pid = os.getpid()
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        self._check_version(version)
        conn.execute("BEGIN IMMEDIATE")  # another process may be creating it right now
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            self._check_version(version)
            if version == 0:
                tables = {r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
                foreign = tables - _OUR_TABLES
                if foreign:
                    raise UserError(f"{self.path}: an SQLite database but not an evaluation cache "
                                    f"(tables: {', '.join(sorted(foreign))}); use another --cache")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            if version == 1:
                conn.execute("ALTER TABLE evaluations ADD COLUMN below_floor REAL")
            if version in (1, 2):
                conn.execute("ALTER TABLE evaluations ADD COLUMN dominated_by TEXT")
                conn.execute("ALTER TABLE evaluations ADD COLUMN correct_bits BLOB")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise UserError(f"{self.path}: evaluation cache has schema version {version}, this "
                            f"surrogate_nas reads up to {SCHEMA_VERSION}; upgrade surrogate_nas "
                            "or use another --cache")
        if version < 0:
            raise self._damaged(f"schema version {version}")

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """Connection for this process; corruption found later is reported like at open."""
        with self._lock:
            conn = self._connect()
            try:
                yield conn
            except sqlite3.OperationalError as exc:
                raise self._unusable(exc) from None
            except sqlite3.DatabaseError as exc:
                raise self._damaged(exc) from None

    # -- public API ----------------------------------------------------------------------

    def register_fingerprint(self, fp: str, description: dict) -> None:
        """Keep what went into a fingerprint so `cache stats` can say what rows are for."""
        text = canonical_json(description)
        with self._db() as conn:
            conn.execute("INSERT INTO fingerprints (fingerprint, description, created_at) VALUES (?, ?, ?) "
                         "ON CONFLICT (fingerprint) DO NOTHING", (fp, text, _now()))

    def get(self, fp: str, genome: Iterable[int]) -> Record | None:
        with self._db() as conn:
            row = conn.execute(f"SELECT {_COLS} FROM evaluations WHERE fingerprint = ? AND genome = ?",
                               (fp, genome_key(genome))).fetchone()
        return _record(row) if row else None

    def get_many(self, fp: str, genomes: Iterable[Iterable[int]]) -> dict[tuple[int, ...], Record]:
        """Cached records among `genomes`, keyed by genome tuple; misses are absent."""
        keys = sorted({genome_key(g) for g in genomes})
        out: dict[tuple[int, ...], Record] = {}
        with self._db() as conn:
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start:start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(f"SELECT {_COLS} FROM evaluations WHERE fingerprint = ? "
                                        f"AND genome IN ({marks})", (fp, *chunk)):
                    rec = _record(row)
                    out[rec.genome] = rec
        return out

    def put(self, fp: str, genome: Iterable[int], accuracy: float, energy: float | None, n_images: int | None,
            seconds: float | None, run_id: str | None, below_floor: float | None = None,
            correct_bits: bytes | None = None, dominated_by: Iterable[int] | None = None) -> Record:
        """Commit one evaluation now and return the stored row. The first writer wins, except
        that a row settling more replaces an early-stopped one: a complete evaluation, or a
        stop below a lower floor (a racing stop, `dominated_by`, is replaced only by a
        complete one); and a row without `correct_bits` (made before they were recorded) gets
        them from an evaluation that agrees with it (same images, same accuracy).
        `correct_bits` must hold `n_images` images and accuracy * n_images right."""
        key = genome_key(genome)
        correct_bits = None if correct_bits is None else check_bits(correct_bits, n_images, accuracy)
        values = (fp, key, float(accuracy), None if energy is None else float(energy),
                  None if n_images is None else int(n_images), None if seconds is None else float(seconds),
                  _now(), run_id, None if below_floor is None else float(below_floor),
                  None if dominated_by is None else genome_key(dominated_by), correct_bits)
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                _upsert(conn, values)
                row = conn.execute(f"SELECT {_COLS} FROM evaluations WHERE fingerprint = ? AND genome = ?",
                                   (fp, key)).fetchone()
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return _record(row)

    def merge(self, records: Iterable[Record]) -> int:
        """Take in evaluations made elsewhere (another machine's `cache export`, a run
        folder whose cache is gone), by `put`'s rules, in one transaction; they keep their
        `created_at` and `run_id`. Returns how many rows were added or updated."""
        values = []
        for r in records:
            bits = None if r.correct_bits is None else check_bits(r.correct_bits, r.n_images, r.accuracy)
            values.append((r.fingerprint, genome_key(r.genome), float(r.accuracy), r.energy, r.n_images, r.seconds,
                           r.created_at or _now(), r.run_id, r.below_floor, r.dominated_by, bits))
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.total_changes
                for v in values:
                    _upsert(conn, v)
                changed = conn.total_changes - before
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return changed

    def record_hit(self, fp: str, genome: Iterable[int], run_id: str | None) -> None:
        self.record_hits(fp, [genome], run_id)

    def record_hits(self, fp: str, genomes: Iterable[Iterable[int]], run_id: str | None) -> None:
        """One transaction for a batch of hits, so a cached generation costs one commit."""
        at = _now()
        rows = [(fp, genome_key(g), run_id, at) for g in genomes]
        if not rows:
            return
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT INTO hits (fingerprint, genome, run_id, at) VALUES (?, ?, ?, ?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def stats(self) -> list[dict]:
        """Per fingerprint: rows, hits, first/last created_at and description (dict or None)."""
        with self._db() as conn:
            conn.execute("BEGIN")  # one consistent snapshot across the three queries
            try:
                evals = conn.execute("SELECT fingerprint, COUNT(*), MIN(created_at), MAX(created_at) "
                                     "FROM evaluations GROUP BY fingerprint").fetchall()
                hits = dict(conn.execute("SELECT fingerprint, COUNT(*) FROM hits GROUP BY fingerprint"))
                described = {fp: (text, at) for fp, text, at in
                             conn.execute("SELECT fingerprint, description, created_at FROM fingerprints")}
            finally:
                conn.execute("COMMIT")
        out: dict[str, dict] = {}
        for fp, rows, first, last in evals:
            out[fp] = {"fingerprint": fp, "rows": rows, "hits": hits.get(fp, 0),
                       "first_created": first, "last_created": last, "description": None}
        for fp in set(hits) | set(described):
            out.setdefault(fp, {"fingerprint": fp, "rows": 0, "hits": hits.get(fp, 0),
                                "first_created": None, "last_created": None, "description": None})
        for fp, (text, _at) in described.items():
            try:
                out[fp]["description"] = json.loads(text)
            except ValueError:
                out[fp]["description"] = {"raw": text}

        def order(d: dict) -> tuple:
            return (d["first_created"] or described.get(d["fingerprint"], ("", ""))[1], d["fingerprint"])

        return sorted(out.values(), key=order)

    def fingerprints(self) -> list[str]:
        with self._db() as conn:
            return [r[0] for r in conn.execute(
                "SELECT fingerprint FROM evaluations UNION SELECT fingerprint FROM fingerprints ORDER BY 1")]

    def resolve_fingerprint(self, prefix: str) -> str:
        """Full fingerprint from a unique prefix (stats shows 12 characters)."""
        matches = [fp for fp in self.fingerprints() if fp.startswith(prefix)]
        if not matches:
            raise UserError(f"--fingerprint {prefix}: no such fingerprint in {self.path}")
        if len(matches) > 1:
            raise UserError(f"--fingerprint {prefix}: ambiguous, matches {len(matches)} fingerprints; "
                            "give more characters")
        return matches[0]

    def rows(self, fingerprint: str | None = None) -> list[Record]:
        """Every row (or one fingerprint's), in a stable order: what `cache_csv` exports."""
        sql = f"SELECT {_COLS} FROM evaluations"
        params: tuple = ()
        if fingerprint is not None:
            sql += " WHERE fingerprint = ?"
            params = (fingerprint,)
        with self._db() as conn:
            return [_record(r) for r in conn.execute(sql + " ORDER BY fingerprint, created_at, genome", params)]
