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
