"""`design` end to end on the tiny project: calibration rule, search, raced retraining,
soups and the choice on images nothing else used."""

from __future__ import annotations

import json

import numpy as np
import pytest

TINY = ("--budget", "8", "--search-images", "20", "--epochs", "1", "--train-images", "100", "--seeds", "2",
        "--max-candidates", "3", "--retrain-hours", "1")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return {}


def test_design_end_to_end(cli, tmp_path):
    r = cli("design", *TINY, "--out", tmp_path / "d", cache=tmp_path / "cache")
    assert r.rc == 0, r.err
    doc = json.loads((tmp_path / "d" / "design.json").read_text())
    print(r.out)
    search, choosing = set(doc["images"]["search"]), set(doc["images"]["choosing"])
    assert search and choosing and not search & choosing
    assert sorted(search | choosing) == list(range(30))
