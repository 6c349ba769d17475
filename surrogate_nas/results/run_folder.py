"""A run folder's files and their formats, in one place: `config.json` (the run's record:
settings, evaluator, paths), `progress.json`, and the CSV tables that `summarize`,
`finetune`, `export` and `--resume` read back.

`rescored_bits.csv` holds the per-image records of the re-scored genomes: one row per
genome and split (genome_indices, split, n_images, bits), `bits` the hex text of the
packed bitset the cache stores (numpy.packbits, bitorder "little": bit k of byte j is
image 8 j + k of that split's scoring order, the same order for every genome). Runs made
before per-image records have no such file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from surrogate_nas.errors import UserError


class RunFolder:
    """One run's folder. Writers take what to write; readers give a clear one-line error
    for a file that is missing or not what a run writes."""

    CONFIG = "config.json"
    PROGRESS = "progress.json"
    EVALUATIONS = "evaluations.csv"
    FRONT = "front.csv"
    RESCORED = "rescored.csv"
    RESCORED_BITS = "rescored_bits.csv"
    SUMMARY = "summary.json"

    def __init__(self, path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def exists(self) -> bool:
        return (self.path / self.CONFIG).is_file()

    # ---- config.json
    def record(self, flag: str | None = None) -> dict:
        """config.json, which must hold the run's search settings and evaluator."""
        path = self.path / self.CONFIG
        where = f"{flag}: " if flag else ""
        if not path.is_file():
            raise UserError(f"{where}{self.path}: not a run folder (no {self.CONFIG})")
        try:
            doc = json.loads(path.read_text())
            doc["search"], doc["evaluator"]  # noqa: B018  (both must be there)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UserError(f"{where}{path} is not a run configuration ({type(exc).__name__}: {exc})") from None
        return doc

    def write_record(self, doc: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _write_json(self.path / self.CONFIG, doc)

    def discard_pending(self) -> None:
        """Remove a record that never got past "started" (and the folder, when empty)."""
        path = self.path / self.CONFIG
        try:
            pending = json.loads(path.read_text()).get("evaluator", "") is None
        except (OSError, ValueError):
            return
        if pending:
            path.unlink()
            if not any(self.path.iterdir()):
                self.path.rmdir()

    def write_progress(self, state: dict) -> None:
        (self.path / self.PROGRESS).write_text(json.dumps(state) + "\n")

    # ---- tables
    def rows(self, name: str) -> list[dict]:
        path = self.path / name
        if not path.is_file():
            raise UserError(f"{path}: not found (is this a finished run folder?)")
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))

    def evaluations(self) -> list[dict]:
        return self.rows(self.EVALUATIONS)

    def true_evaluations(self, n_images: int | None = None) -> list:
        """`evaluations.csv` as the run's `search.truth.Evaluation`s, in their order (no
        per-image bits: the file has none). Accuracies are restored as right/images (it keeps
        6 digits); `n_images`: what an older record without the column scored."""
        from surrogate_nas.search.truth import Evaluation

        out = []
        for i, r in enumerate(self.evaluations(), start=2):
            try:
                n = int(r["n_images"]) if r.get("n_images") else n_images
                accuracy = float(r["accuracy"]) if not n else round(float(r["accuracy"]) * n) / n
                stop, lost_to = r.get("below_floor"), r.get("dominated_by")
                out.append(Evaluation(tuple(int(g) for g in r["genome_indices"].split(",")), accuracy,
                                      float(r["energy"]), r["from_cache"] == "1", int(r["generation"]),
                                      float(r["seconds"]), r["reason"], n, float(stop) if stop else None, None,
                                      tuple(int(g) for g in lost_to.split(",")) if lost_to else None))
            except (KeyError, ValueError, AttributeError) as exc:
                raise UserError(f"{self.path / self.EVALUATIONS}: line {i}: {type(exc).__name__}: {exc}") from None
        return out

    def front_genomes(self) -> list[tuple[int, ...]]:
        return [tuple(int(v) for v in r["genome_indices"].split(",")) for r in self.rows(self.FRONT)]

    def rescored(self) -> list[dict]:
        """The re-scored genomes (role all-exact / front / other) with numbers as numbers;
        `test_accuracy` is None for a point scored on validation only (a run scores test for
        all-exact and the points its summary chooses, unless `--rescore all`)."""
        rows = []
        for r in self.rows(self.RESCORED):
            if not r["validation_accuracy"]:
                continue
            rows.append({"genome": r["genome"], "genome_indices": tuple(int(v) for v in r["genome_indices"].split(",")),
                         "compensation": r["compensation"], "energy": float(r["energy"]),
                         "validation_accuracy": float(r["validation_accuracy"]),
                         "test_accuracy": float(r["test_accuracy"]) if r["test_accuracy"] else None,
                         "role": r["role"]})
        return rows

    def write_rescored_bits(self, rows) -> None:
        """`rows`: (genome, split, n_images, packed bits) of each re-scored genome and split
        that has per-image records."""
        tmp = self.path / (self.RESCORED_BITS + ".tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["genome_indices", "split", "n_images", "bits"])
            for genome, split, n_images, bits in rows:
                writer.writerow([",".join(map(str, genome)), split, int(n_images), bytes(bits).hex()])
        tmp.replace(self.path / self.RESCORED_BITS)

    def rescored_bits(self) -> dict[tuple[tuple[int, ...], str], np.ndarray]:
        """(genome, split) -> per image of the split's scoring order: right? Empty for a run
        made before per-image records existed."""
        path = self.path / self.RESCORED_BITS
        if not path.is_file():
            return {}
        out = {}
        for r in self.rows(self.RESCORED_BITS):
            try:
                n = int(r["n_images"])
                raw = np.frombuffer(bytes.fromhex(r["bits"]), np.uint8)
                if len(raw) != (n + 7) // 8:
                    raise ValueError(f"{len(raw)} bytes for {n} images")
                genome = tuple(int(v) for v in r["genome_indices"].split(","))
            except (KeyError, TypeError, ValueError) as exc:
                raise UserError(f"{path}: not per-image records as a run writes them ({exc})") from None
            out[genome, r["split"]] = np.unpackbits(raw, count=n, bitorder="little").astype(bool)
        return out

    # ---- summary.json
    def summary(self) -> dict:
        path = self.path / self.SUMMARY
        if not path.is_file():
            raise UserError(f"{path}: not found (run `summarize` first)")
        return json.loads(path.read_text())

    def write_summary(self, summary: dict) -> None:
        _write_json(self.path / self.SUMMARY, summary)


def _write_json(path: Path, doc: dict) -> None:
    """Whole or not at all: a kill while writing leaves the previous file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
