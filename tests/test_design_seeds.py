"""`summarize` on a folder of design folders: medians over seeds worked out by hand, a seed
without a design counting as no saving, and one line for a folder without designs."""

from __future__ import annotations

import csv
import json

import pytest


def _choice(saving, choosing, test, retrained=True):
    return {"energy_saving_pct": saving, "choosing_loss_pp": choosing, "test_loss_pp": test, "retrained": retrained}


def _doc(seed, half, one, two, wall_s=1000.0):
    chosen = {"0.5": half, "1": one, "2": two}
    return {"model": "net", "seed": seed, "chosen": chosen, "chosen_upper": {"0.5": None, "1": half, "2": one},
            "cost": {"wall_s": wall_s, "float_pass_s": 0.5}}


@pytest.fixture
def designs(tmp_path):
    docs = [_doc(0, _choice(50.0, 0.4, 0.3), _choice(60.0, 0.9, 0.8), _choice(70.0, 1.9, 1.6), 1000.0),
            _doc(1, None, _choice(55.0, 0.7, 1.2), _choice(66.0, 1.5, 1.4, False), 3000.0),
            _doc(2, _choice(40.0, 0.1, 0.6), _choice(58.0, 1.0, 0.9), _choice(64.0, 2.0, 2.1), 2000.0)]
    for d in docs:
        folder = tmp_path / "net" / f"seed{d['seed']}"
        folder.mkdir(parents=True)
        (folder / "design.json").write_text(json.dumps(d))
    return tmp_path


def test_medians_over_seeds_by_hand(cli, designs):
    r = cli("summarize", designs)
    assert r.rc == 0, r.err
    rows = {(row["rule"], float(row["within_pp"])): row for row in csv.DictReader(open(designs / "summary.csv"))}
    half = rows[("point estimate", 0.5)]
    # savings 50, (none: 0), 40 -> median 40, range 0..50; test losses of the found ones 0.3, 0.6
    assert float(half["saving_median_pct"]) == 40.0 and float(half["saving_min_pct"]) == 0.0
    assert float(half["saving_max_pct"]) == 50.0 and half["designs_found"] == "2"
    assert float(half["test_loss_median_pp"]) == pytest.approx(0.45) and float(half["test_loss_max_pp"]) == 0.6
    assert half["every_seed_test_within"] == "False"  # seed 1 found nothing; seed 2's test loss is 0.6
    one = rows[("point estimate", 1.0)]
    assert float(one["saving_median_pct"]) == 58.0 and float(one["test_loss_max_pp"]) == 1.2
    assert one["every_seed_test_within"] == "False"
    two = rows[("point estimate", 2.0)]
    assert float(two["choosing_loss_median_pp"]) == 1.9 and two["retrained"] == "2"
    upper = rows[("upper bound", 2.0)]  # the point rule's 1 pp choices: every test loss <= 2
    assert float(upper["saving_median_pct"]) == 58.0 and upper["every_seed_test_within"] == "True"
    # cost: median wall 2000 s at 0.5 s per float pass
    assert float(half["wall_s_median"]) == 2000.0 and float(half["float_passes_median"]) == 4000.0
    assert (designs / "summary.md").is_file() and (designs / "summary.png").stat().st_size > 0
    assert "40.0 % [0.0, 50.0]" in (designs / "summary.md").read_text()


def test_folder_without_designs_one_line(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    r = cli("summarize", tmp_path / "empty")
    assert r.rc == 2 and len(r.err_lines) == 1 and "no design.json" in r.err_lines[0], r.err
