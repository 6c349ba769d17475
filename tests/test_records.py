"""Committed records: portable (no absolute path of the machine that made them) and in
step with their CSVs (a regenerated summary equals the committed one)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from surrogate_nas.results.summary import summarize

ROOT = Path(__file__).resolve().parents[1]
# absolute POSIX paths under the usual roots, or a Windows drive path
ABSOLUTE = re.compile(r"(?<![\w.])(/(?:work|home|root|tmp|Users|mnt|opt|var)/[\w.-]+|[A-Z]:\\\\[\w.-]+)")


def _committed(pattern: str) -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", pattern], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in out.split()]


def test_no_committed_record_holds_an_absolute_path():
    offenders = {}
    for path in _committed("*.json") + _committed("*.csv") + _committed("*.md") + _committed("*.txt"):
        found = ABSOLUTE.findall(path.read_text(errors="replace"))
        if found:
            offenders[str(path.relative_to(ROOT))] = found[:3]
    assert offenders == {}


def test_the_pattern_catches_what_it_should():
    assert ABSOLUTE.search('"model": "/work/main/models/a.keras"')
    assert ABSOLUTE.search("from /home/me/data.tar.gz")
    assert not ABSOLUTE.search('"model": "models/a.keras"')
    assert not ABSOLUTE.search("../shared/datasets/cifar10-jpeg.tar.gz")


RUNS = sorted({p.parent for p in _committed("experiments/*/summary.json")}
              & {p.parent for p in _committed("experiments/*/rescored.csv")}) if (ROOT / ".git").exists() else []


@pytest.mark.parametrize("run", RUNS, ids=lambda p: str(p.relative_to(ROOT / "experiments")))
def test_committed_summary_equals_a_regenerated_one(run, tmp_path):
    copy = tmp_path / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("*.png", "*.keras"))
    committed = json.loads((run / "summary.json").read_text())
    regenerated = summarize(copy)
    committed.pop("after_finetuning", None)  # added by `run --finetune-top`, not by summarize
    assert json.loads(json.dumps(regenerated)) == committed


COMPARISONS = sorted(p.parent for p in _committed("experiments/*/summary.csv")
                     if "--from-records" in (p.parent / "summary.md").read_text()) if (ROOT / ".git").exists() else []


@pytest.mark.parametrize("folder", COMPARISONS, ids=lambda p: str(p.relative_to(ROOT / "experiments")))
def test_committed_comparison_equals_one_regenerated_from_its_run_folders(folder, tmp_path):
    """The plan (methods, seeds, budgets) is read off the committed summary.csv; the tables
    are rebuilt from copies of the committed run folders and must say the same."""
    import csv

    from surrogate_nas.experiments.compare import compare_from_records

    rows = list(csv.DictReader(open(folder / "summary.csv")))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    budget = min(int(r["budget"]) for r in rows)
    full = [int(r["budget"]) for r in rows if r["method"] == "full"]
    shutil.copytree(folder / "runs", tmp_path / "runs")
    compare_from_records(methods, max(int(r["seeds"]) for r in rows), budget, max(full) if full else None, tmp_path,
                         rescored=any(k.startswith("saving_") for k in rows[0]))
    assert (tmp_path / "summary.md").read_text() == (folder / "summary.md").read_text()
    assert list(csv.DictReader(open(tmp_path / "summary.csv"))) == rows
