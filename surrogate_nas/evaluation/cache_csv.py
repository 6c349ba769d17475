"""The cache as a CSV file (`cache export` / `cache import`): how evaluations travel to
another machine, per-image bits included, so that nothing scored once is scored again."""

from __future__ import annotations

import csv
from pathlib import Path

from surrogate_nas.errors import UserError
from surrogate_nas.evaluation.cache import CSV_COLUMNS, EvalCache, Record
from surrogate_nas.genome import genome_from_key, genome_key


def export_csv(cache: EvalCache, path: Path | str, fingerprint: str | None = None) -> int:
    """Write the rows (all, or one fingerprint's) to `path`; returns the row count. Floats
    are written in full (repr) and bits as hex, so `read_export_csv` gives the rows back."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a file name for the CSV")
    if not path.parent.is_dir():
        raise UserError(f"{path}: folder {path.parent} does not exist")
    rows = cache.rows(fingerprint)

    def cell(v):
        return "" if v is None else repr(v) if isinstance(v, float) else v.hex() if isinstance(v, bytes) else v

    try:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(CSV_COLUMNS)
            for r in rows:
                writer.writerow([cell(v) for v in (r.fingerprint, genome_key(r.genome), r.accuracy, r.energy, r.n_images,
                                                   r.seconds, r.created_at, r.run_id, r.below_floor, r.dominated_by,
                                                   r.correct_bits)])
    except OSError as exc:
        raise UserError(f"{path}: cannot write CSV ({exc.strerror or exc})") from None
    return len(rows)


def read_export_csv(path: Path | str) -> list[Record]:
    """The rows of a `cache export` file (any fingerprint), bits included: what another
    machine's cache held, ready for `EvalCache.merge`."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
                raise UserError(f"{path}: not a `cache export` file (columns {reader.fieldnames}, "
                                f"expected {', '.join(CSV_COLUMNS)})")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None

    def num(text: str, kind=float):
        return None if text == "" else kind(text)

    out = []
    for i, r in enumerate(rows, start=2):
        try:
            out.append(Record(r["fingerprint"], genome_from_key(r["genome"]), float(r["accuracy"]), num(r["energy"]),
                              num(r["n_images"], int), num(r["seconds"]), r["created_at"], r["run_id"] or None,
                              num(r["below_floor"]), r["dominated_by"] or None,
                              None if r["correct_bits"] == "" else bytes.fromhex(r["correct_bits"])))
        except (ValueError, TypeError) as exc:
            raise UserError(f"{path}: line {i}: {exc}") from None
    return out

