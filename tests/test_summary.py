"""`summarize` where the headline numbers are made: HV after 100/200/300 evaluations and
the validation-chosen savings, against references computed here from the CSV rows."""

import json

import numpy as np
import pytest
from conftest import write_csv
from test_compare_study import hv2d

from surrogate_nas.results.summary import format_summary, summarize


@pytest.fixture
def run_folder(tmp_path):
    rng = np.random.default_rng(7)
    run = tmp_path / "r"
    run.mkdir()
    floor = 0.6
    (run / "config.json").write_text(json.dumps({"search": {"mode": "surrogate", "compensation": "auto"},
                                                 "evaluator": {}, "hv_reference": {"accuracy": floor, "energy": 1.0},
                                                 "rescore": {"validation_images": "all", "test_images": "all"}}))
    evaluations = []
    for i in range(320):
        energy = float(rng.uniform(0.2, 1.0))
        accuracy = float(np.clip(0.85 - 0.4 * (1 - energy) ** 2 + rng.normal(0, 0.03), 0.05, 0.9))
        stopped = accuracy < floor and rng.random() < 0.7  # early stops: partial accuracies below the floor
        evaluations.append({"order": i, "genome_indices": f"{i},0", "accuracy": f"{accuracy:.6f}",
                            "energy": f"{energy:.6f}", "below_floor": f"{floor}" if stopped else ""})
    write_csv(run / "evaluations.csv", evaluations)
    rescored = [{"role": "all-exact", "genome": "e;e", "compensation": "none;none", "genome_indices": "0,0",
                 "energy": "1.0", "validation_accuracy": "0.8300", "test_accuracy": "0.8250"}]
    for k, (saving, val, test) in enumerate([(10, 0.8290, 0.8200), (20, 0.8260, 0.8260), (30, 0.8255, 0.8100),
                                             (40, 0.8190, 0.8150), (50, 0.8050, 0.8000)]):
        rescored.append({"role": "front", "genome": f"g{k}", "compensation": "", "genome_indices": f"{k + 1},1",
                         "energy": f"{1 - saving / 100:.6f}", "validation_accuracy": f"{val:.4f}",
                         "test_accuracy": f"{test:.4f}"})
    write_csv(run / "rescored.csv", rescored)
    return run, evaluations, floor


def test_hv_after_100_200_300_evaluations(run_folder):
    run, evaluations, floor = run_folder
    summary = summarize(run)
    reference = (1 - floor, 1.0)
    for n in (100, 200, 300):
        points = [(1 - float(e["accuracy"]), float(e["energy"])) for e in evaluations[:n] if not e["below_floor"]]
        assert summary["hv"][str(n)] == pytest.approx(hv2d(points, reference), rel=1e-9, abs=1e-12)
    assert summary["hv_reference_accuracy"] == pytest.approx(floor)
    assert summary["stopped_early"] == sum(1 for e in evaluations if e["below_floor"])
    assert summary["true_evaluations"] == len(evaluations)


def test_savings_are_chosen_on_validation_and_reported_on_test(run_folder):
    run, _, _ = run_folder
    chosen = summarize(run)["chosen"]
    # validation losses: 0.10, 0.40, 0.45, 1.10, 2.50 pp; test losses: 0.50, -0.10, 1.50, 1.00, 2.50 pp
    assert chosen["0.5pp"]["energy_saving_pct"] == pytest.approx(30.0)  # not 20 %, the best on test
    assert chosen["0.5pp"]["test_loss_pp"] == pytest.approx(1.50)
    assert chosen["1pp"]["energy_saving_pct"] == pytest.approx(30.0)
    assert chosen["2pp"]["energy_saving_pct"] == pytest.approx(40.0)
    assert chosen["2pp"]["validation_loss_pp"] == pytest.approx(1.10)
    assert "30.0 %" in format_summary(summarize(run))


def test_fewer_evaluations_than_a_checkpoint_give_no_hv(run_folder, tmp_path):
    run, evaluations, _ = run_folder
    write_csv(run / "evaluations.csv", evaluations[:150])
    hv = summarize(run)["hv"]
    assert hv["100"] is not None and hv["200"] is None and hv["300"] is None


def test_seed_table_gives_median_and_range_over_seeds_and_their_shared_seed_genomes(tmp_path):
    """experiments/headline/summarize.py's table over seeds: median and range of HV and of
    the chosen savings and losses, against values written here, and the shared seed set."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "headline" / "summarize.py"
    spec = importlib.util.spec_from_file_location("headline_summarize", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    runs, summaries = [], []
    seeds = {0: ["0,0", "1,1", "5,2"], 1: ["0,0", "1,1", "3,4"], 2: ["0,0", "1,1", "2,6"]}
    savings = {0: (12.2, 0.18, 0.11), 1: (20.0, 0.40, 0.90), 2: None}  # seed 2 chose no point within 0.5 pp
    for seed, genomes in seeds.items():
        run = tmp_path / f"s{seed}"
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"search": {"mode": "surrogate", "budget": 300, "seed": seed}, "evaluator": {}}))
        write_csv(run / "evaluations.csv", [{"order": i, "reason": "seed", "genome_indices": g}
                                            for i, g in enumerate(genomes)]
                  + [{"order": 3, "reason": "offspring", "genome_indices": "9,9"}])
        runs.append(run)
        half = None if savings[seed] is None else dict(zip(("energy_saving_pct", "validation_loss_pp", "test_loss_pp"),
                                                           savings[seed]))
        summaries.append({"hv": {"100": 0.05 + seed / 100, "200": 0.06, "300": 0.07 - seed / 1000},
                          "chosen": {"0.5pp": half, "1pp": None, "2pp": None}, "chosen_upper_bound": None})
    text = "\n".join(module.seed_table(runs, summaries))
    assert "| HV@100 | 0.0600 (0.0500 to 0.0700) | | |" in text
    assert "| HV@300 | 0.0690 (0.0680 to 0.0700) | | |" in text
    # the median of two present values is their mean; the missing seed is counted, not dropped silently
    assert ("| saving within 0.5 pp, point estimate rule (%) | 16.1 (12.2 to 20.0), 1 none | 0.29 (0.18 to 0.40), "
            "1 none | 0.51 (0.11 to 0.90), 1 none |") in text
    assert "| saving within 1 pp, upper bound rule (%) | - | - | - |" in text
    assert "share 2 genomes" in text
    # runs with other settings than the seed are not pooled
    (runs[2] / "config.json").write_text(json.dumps({"search": {"mode": "full", "budget": 300, "seed": 2}, "evaluator": {}}))
    assert module.seed_table(runs, summaries) == []
