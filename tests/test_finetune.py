"""`finetune` on a finished tiny run: outputs, honest selection, and saved designs that
reproduce the reported accuracy when loaded with plain Keras."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import read_csv


@pytest.fixture(scope="module")
def finetuned(project, tmp_path_factory):
    from conftest import isolated_cwd

    from surrogate_nas import cli

    base = tmp_path_factory.mktemp("finetune")
    out = base / "runs"
    with isolated_cwd(base):
        flags = project.flags(cache=base / "cache")
        rc = cli.main(["run", "--mode", "full", "--budget", "10", "--pop-size", "4", "--search-images", "20",
                       "--test-images", "20", "--compensation", "bias", "--rescore", "all", "--out", str(out),
                       "--run-id", "r"] + flags)
        assert rc == 0
        rc = cli.main(["finetune", str(out / "r"), "--points", "100", "--epochs", "1", "--train-images", "64",
                       "--test-images", "20"] + flags)
    return rc, out / "r"


def test_finetune_outputs(finetuned):
    rc, run = finetuned
    assert rc == 0
    ft = run / "finetune"
    rows = read_csv(ft / "finetune.csv")
    assert len(rows) == 1
    row = rows[0]
    summary = json.loads((run / "summary.json").read_text())
    # the chosen point is the cheapest front point (100 pp admits every point)
    front = [r for r in read_csv(run / "rescored.csv") if r["role"] == "front"]
    cheapest = min(front, key=lambda r: float(r["energy"]))
    assert row["genome_indices"] == cheapest["genome_indices"]
    assert float(row["validation_before"]) == pytest.approx(float(cheapest["validation_accuracy"]))
    assert row["epochs"] == "1" and row["train_images"] == "64"
    assert (ft / "finetune.png").is_file()
    doc = json.loads((ft / "finetune.json").read_text())
    assert doc["all_exact"]["validation_accuracy"] == pytest.approx(summary["all_exact"]["validation_accuracy"])


def test_saved_design_reproduces_reported_accuracy(finetuned, project):
    import keras

    import surrogate_nas.axconv  # noqa: F401  (registers AxConv2D with Keras)
    from surrogate_nas.data.datasets import load_cifar10
    from surrogate_nas.data.splits import make_splits

    _, run = finetuned
    row = read_csv(run / "finetune" / "finetune.csv")[0]
    model = keras.models.load_model(run / "finetune" / row["model_path"], compile=False)
    splits = make_splits(load_cifar10(project.data, cache_dir=project.cache), seed=0)
    logits = model(splits.x_val.astype(np.float32), training=False).numpy()
    assert np.mean(np.argmax(logits, axis=1) == splits.y_val) == pytest.approx(float(row["validation_after"]), abs=1e-12)
    card = json.loads((run / "finetune" / "design-1.json").read_text())
    # recorded relative to the project root (here the working directory of the run), not absolute
    assert card["genome_indices"] == row["genome_indices"] and card["source_run"] == "runs/r"


def test_run_finetune_top_adds_after_finetuning_to_summary(cli, tmp_path):
    r = cli("run", "--mode", "full", "--budget", "6", "--pop-size", "3", "--search-images", "20", "--test-images", "20",
            "--compensation", "none", "--rescore", "all", "--finetune-top", "1", "--out", tmp_path / "runs",
            "--run-id", "t", cache=tmp_path / "cache")
    assert r.rc == 0, r.err
    summary = json.loads((tmp_path / "runs" / "t" / "summary.json").read_text())
    after = summary["after_finetuning"]
    assert after["epochs"] == 2 and set(after["chosen_after_finetuning"]) == {"0.5pp", "1pp", "2pp"}
    rows = read_csv(tmp_path / "runs" / "t" / "finetune" / "finetune.csv")
    assert len(rows) == 1
    assert rows[0]["genome_indices"] == ",".join(map(str, summary["chosen"]["0.5pp"]["genome_indices"]))


def test_untuned_points_stay_candidates_of_the_validation_choice(tmp_path, catalog):
    from surrogate_nas.workflows.finetune import FinetuneResult, write_results

    exact = {"validation_accuracy": 0.80, "test_accuracy": 0.80}
    front = [{"genome": "a", "genome_indices": (0, 0, 0, 0, 0), "compensation": "", "energy": 0.7,
              "validation_accuracy": 0.798, "test_accuracy": 0.79}]
    hurt = FinetuneResult((0, 0, 0, 0, 0), ["none"] * 5, 0.7, 0.798, 0.79, 0.780, 0.78, 1, 64, 1.0, 1.0, True)
    helped = FinetuneResult((2, 2, 2, 2, 2), ["bias"] * 5, 0.4, 0.60, 0.61, 0.797, 0.70, 1, 64, 1.0, 1.0, False)
    doc = write_results(tmp_path, [hurt, helped], catalog, {"exact": exact, "front": front})
    half = doc["chosen_after_finetuning"]["0.5pp"]
    # the fine-tuned cheap design is within 0.5 pp on validation: chosen, its test loss reported
    assert half["finetuned"] is True and half["energy"] == 0.4 and half["test_loss_pp"] == pytest.approx(10.0)
    doc = write_results(tmp_path, [hurt], catalog, {"exact": exact, "front": front})
    # fine-tuning made this design worse on validation: its un-tuned version is chosen
    assert doc["chosen_after_finetuning"]["0.5pp"]["finetuned"] is False


def test_a_run_folder_is_enough_for_finetune_and_export(cli, tmp_path):
    """A `--compensation search` run made with --model/--catalog/--data flags: later
    commands given only the run folder (and a config file whose defaults name other files)
    take model, catalog, data and compensation from the run's record. `--report-only`
    names the genomes with the run's design catalog (circuit+method)."""
    runs = tmp_path / "runs"
    r = cli("run", "--mode", "full", "--budget", "6", "--pop-size", "3", "--search-images", "20",
            "--test-images", "20", "--compensation", "search", "--rescore", "all", "--out", runs, "--run-id", "s",
            cache=tmp_path / "cache")
    assert r.rc == 0, r.err
    (tmp_path / "surrogate_nas.toml").write_text('[paths]\nmodel = "other.keras"\nmultipliers = "other-catalog"\n')
    run = runs / "s"
    r = cli("finetune", run, "--points", "100", "--epochs", "1", "--train-images", "32", "--test-images", "20",
            paths=False, cache=tmp_path / "cache")
    assert r.rc == 0, r.err
    before = (run / "finetune" / "finetune.json").read_text()
    rows = read_csv(run / "finetune" / "finetune.csv")
    front = {f["genome_indices"]: f["genome"] for f in read_csv(run / "front.csv")}
    assert rows[0]["genome"] == front[rows[0]["genome_indices"]]  # design names, e.g. "c3+bias"
    r = cli("finetune", run, "--report-only", paths=False, cache=tmp_path / "cache")
    assert r.rc == 0, r.err
    assert (run / "finetune" / "finetune.json").read_text() == before
    r = cli("export", run, "--point", "1", "--out", tmp_path / "d.keras", paths=False, cache=tmp_path / "cache")
    assert r.rc == 0, r.err
    design = json.loads((tmp_path / "design.json").read_text())
    assert design["genome"] == [int(v) for v in read_csv(run / "front.csv")[0]["genome_indices"].split(",")]


def test_band_candidates_retrain_the_most_accurate_point_of_each_saving_band(finetuned, project, tmp_path):
    """`--points band:LO-HI/W` retrains, per W % band of saving, the front point most accurate
    on validation (a band the re-scored front misses: the run's most accurate complete
    evaluation there), and finetune.json lists what was retrained."""
    from conftest import isolated_cwd

    from surrogate_nas import cli

    _, run = finetuned
    out = tmp_path / "band"
    with isolated_cwd(tmp_path):
        rc = cli.main(["finetune", str(run), "--points", "band:0-100/25", "--epochs", "1", "--train-images", "32",
                       "--test-images", "20", "--out", str(out)] + project.flags(cache=run.parent.parent / "cache"))
    assert rc == 0
    expected = band_picks(run, range(0, 100, 25), 25)
    rows = read_csv(out / "finetune.csv")
    assert [r["genome_indices"] for r in rows] == expected and len(expected) >= 2
    doc = json.loads((out / "finetune.json").read_text())
    assert [r["genome"] for r in doc["retrained"]] == [r["genome"] for r in rows]


def test_quiet_candidates_are_the_least_noise_genomes_by_brute_force(finetuned, project, tmp_path):
    """`--points quiet:LO-HI/STEP` retrains, at each saving LO, LO+STEP, .., HI, the genome
    with the least summed output noise power among all genomes saving at least that much
    (checked here over every genome of the tiny catalog, with the evaluator's noise table)."""
    import itertools

    from conftest import isolated_cwd

    from surrogate_nas import cli
    from surrogate_nas.config import resolve_paths
    from surrogate_nas.workflows.context import Context

    _, run = finetuned
    out = tmp_path / "quiet"
    flags = project.flags(cache=run.parent.parent / "cache")
    with isolated_cwd(tmp_path):
        rc = cli.main(["finetune", str(run), "--points", "quiet:10-70/30", "--epochs", "1", "--train-images", "32",
                       "--test-images", "20", "--out", str(out)] + flags)
        assert rc == 0
        ctx, _ = Context.from_run(run, resolve_paths(model=project.model, multipliers=project.catalog, data=project.data,
                                                     cache=run.parent.parent / "cache"), quiet=True)
    ev = ctx.evaluator
    stats = ev.layer_statistics()
    noise = ev.designs.residual_noise(stats["taps"], stats["output_std"])[:, :, 1] ** 2
    genomes = list(itertools.product(range(len(ctx.catalog)), repeat=len(ev.layers)))
    expected = []
    for target in (10, 40, 70):
        ok = [(sum(noise[l, c] for l, c in enumerate(g)), ev.energy(g), g) for g in genomes
              if 100 * (1 - ev.energy(g)) >= target - 1e-9]
        if ok:
            expected.append(",".join(map(str, min(ok)[2])))
    expected = list(dict.fromkeys(expected))
    rows = read_csv(out / "finetune.csv")
    assert [r["genome_indices"] for r in rows] == expected and len(expected) >= 2
    doc = json.loads((out / "finetune.json").read_text())
    assert doc["candidates"].startswith("the least output noise")


def band_picks(run, lows, width):
    """By hand from the run's CSVs: per band [lo, lo + width) of saving, the re-scored front
    point most accurate on validation, else the most accurate complete evaluation."""
    front = [r for r in read_csv(run / "rescored.csv") if r["role"] == "front"]
    complete = [e for e in read_csv(run / "evaluations.csv") if not e.get("below_floor") and not e.get("dominated_by")]
    expected = []
    for lo in lows:
        def saving(r):
            return 100 * (1 - float(r["energy"]))

        inside = [r for r in front if lo <= saving(r) < lo + width]
        pick = max(inside, key=lambda r: (float(r["validation_accuracy"]), -float(r["energy"])), default=None)
        if pick is None:
            inside = [e for e in complete if lo <= saving(e) < lo + width]
            pick = max(inside, key=lambda e: (float(e["accuracy"]), -float(e["energy"])), default=None)
        if pick is not None:
            expected.append(pick["genome_indices"])
    return expected


def test_run_finetune_top_with_bands_retrains_the_highest_saving_bands(cli, tmp_path):
    """`run --finetune-top K --finetune-points band:... --finetune-recipe R` retrains the
    picks of the K highest-saving bands that hold a point (recomputed here from the run's
    CSVs), each with the recipe (its per-epoch history beside it)."""
    r = cli("run", "--mode", "full", "--budget", "8", "--pop-size", "4", "--search-images", "20", "--test-images", "20",
            "--compensation", "none", "--rescore", "all", "--finetune-top", "2", "--finetune-points", "band:0-100/25",
            "--finetune-recipe", "kd-adam1e-3-cos", "--out", tmp_path / "runs", "--run-id", "b", cache=tmp_path / "cache")
    assert r.rc == 0, r.err
    run = tmp_path / "runs" / "b"
    expected = band_picks(run, range(0, 100, 25), 25)
    assert len(expected) >= 2
    rows = read_csv(run / "finetune" / "finetune.csv")
    assert [r["genome_indices"] for r in rows] == expected[-2:]
    for k, row in enumerate(rows, start=1):
        history = json.loads((run / "finetune" / f"design-{k}.work" / "history.json").read_text())
        assert history["recipe"]["name"] == "kd-adam1e-3-cos" and len(history["history"]) == 1 + 4
        assert json.loads((run / "finetune" / f"design-{k}.json").read_text())["history"] == history["history"]
        assert row["kept"] in ("retrained", "untuned")
    summary = json.loads((run / "summary.json").read_text())
    assert [d["genome"] for d in summary["after_finetuning"]["retrained"]] == [r["genome"] for r in rows]


@pytest.mark.parametrize("points", ["band:70-30/5", "band:0-100/0", "band:x", "quiet:50-40/5", "quietly"])
def test_bad_band_is_one_line(cli, tmp_path, points):
    r = cli("finetune", tmp_path, "--points", points, paths=False)
    assert r.rc == 2 and len(r.err_lines) == 1 and "--points" in r.err, r.err
    r = cli("run", "--finetune-top", "1", "--finetune-points", points, "--out", tmp_path / "runs", paths=False)
    assert r.rc == 2 and len(r.err_lines) == 1 and "--finetune-points" in r.err, r.err
    assert not (tmp_path / "runs").exists()  # refused before any folder is made


def test_unknown_finetune_recipe_is_one_line(cli, tmp_path):
    r = cli("run", "--finetune-top", "1", "--finetune-recipe", "kd-adam", "--out", tmp_path / "runs", paths=False)
    assert r.rc == 2 and len(r.err_lines) == 1 and "--finetune-recipe" in r.err and "kd-adam1e-3-cos" in r.err, r.err
    assert not (tmp_path / "runs").exists()


def test_a_rerun_after_an_interruption_reuses_finished_designs(finetuned, project, tmp_path, capsys):
    """finetune killed after a design was saved (here: before its finetune.csv) loses no
    finished design: the rerun reuses it and writes the same results; other settings
    (another --lr) retrain."""
    import shutil

    from conftest import isolated_cwd

    from surrogate_nas import cli

    _, run = finetuned
    out = tmp_path / "again"
    shutil.copytree(run / "finetune", out)
    (out / "finetune.csv").unlink()
    (out / "finetune.json").unlink()
    args = ["finetune", str(run), "--points", "100", "--epochs", "1", "--train-images", "64", "--test-images", "20",
            "--out", str(out)] + project.flags(cache=run.parent.parent / "cache")
    capsys.readouterr()
    with isolated_cwd(run.parent.parent):
        assert cli.main(args) == 0
    assert "already retrained (design-1.keras), reused" in capsys.readouterr().out
    assert read_csv(out / "finetune.csv") == read_csv(run / "finetune" / "finetune.csv")
    with isolated_cwd(run.parent.parent):
        assert cli.main(args + ["--lr", "3e-4"]) == 0
    assert "reused" not in capsys.readouterr().out
    assert read_csv(out / "finetune.csv")[0]["seconds"] != read_csv(run / "finetune" / "finetune.csv")[0]["seconds"]


def test_finetune_with_a_recipe_keeps_a_retrained_design_only_when_better_on_validation(finetuned, project, tmp_path):
    """`--recipe`: workflows.retrain per design (a checkpoint per epoch), and the saved
    design is the retrained network only when it beats the un-tuned one on all validation
    images; the reported validation accuracy is recomputed here with plain Keras."""
    import keras

    from conftest import isolated_cwd

    import surrogate_nas.emulation.layers  # noqa: F401
    from surrogate_nas import cli
    from surrogate_nas.data.datasets import load_cifar10
    from surrogate_nas.data.splits import make_splits

    _, run = finetuned
    out = tmp_path / "recipe"
    with isolated_cwd(run.parent.parent):
        rc = cli.main(["finetune", str(run), "--points", "100", "--recipe", "kd-adam1e-3-cos", "--epochs", "1",
                       "--train-images", "64", "--test-images", "20", "--out", str(out)]
                      + project.flags(cache=run.parent.parent / "cache"))
    assert rc == 0
    row = read_csv(out / "finetune.csv")[0]
    history = json.loads((out / "design-1.work" / "history.json").read_text())
    assert [h["epoch"] for h in history["history"]] == [0, 1] and history["recipe"]["epochs"] == 1
    before, after = float(row["validation_before"]), float(row["validation_after"])
    assert row["kept"] in ("retrained", "untuned")
    assert after > before if row["kept"] == "retrained" else after == before
    model = keras.models.load_model(out / row["model_path"], compile=False)
    splits = make_splits(load_cifar10(project.data, cache_dir=project.cache), seed=0)
    logits = model(splits.x_val.astype(np.float32), training=False).numpy()
    assert np.mean(np.argmax(logits, axis=1) == splits.y_val) == pytest.approx(after, abs=1e-12)
    doc = json.loads((out / "finetune.json").read_text())
    assert doc["recipe"]["name"] == "kd-adam1e-3-cos" and doc["retrained"][0]["kept"] == row["kept"]


def test_unknown_recipe_is_one_line(cli, tmp_path):
    r = cli("finetune", tmp_path, "--recipe", "nope", paths=False)
    assert r.rc == 2 and len(r.err_lines) == 1 and "--recipe" in r.err and "kd-adam1e-3-cos" in r.err, r.err


def test_finetune_on_another_card_scores_before_on_that_card(finetuned, project, dataset, tmp_path, capsys):
    """`finetune --model M` on a run searched with another card (here: input ranges at the
    60th percentile) measures the design's accuracy before retraining on M, as `evaluate`
    does on all validation images, instead of taking the run's record. The record is made
    unmistakable (an accuracy no 30-image set can give) in a copy of the run."""
    import shutil

    from conftest import isolated_cwd, write_csv

    from surrogate_nas import cli
    from surrogate_nas.data.splits import make_splits

    _, run = finetuned
    copy = run.parent / "r-record-edited"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("finetune*", "rescored_bits*"), dirs_exist_ok=True)
    rows = read_csv(copy / "rescored.csv")
    exact = next(r for r in rows if r["role"] == "all-exact")
    exact["validation_accuracy"] = "0.987654"
    write_csv(copy / "rescored.csv", rows)
    model = tmp_path / "p60.keras"
    shutil.copy(project.model, model)
    base = run.parent.parent
    with isolated_cwd(base):
        finetune = ["finetune", str(copy), "--genome", exact["genome_indices"], "--epochs", "1", "--train-images", "64",
                    "--test-images", "20"]
        assert cli.main(finetune + ["--out", str(tmp_path / "same")] + project.flags(cache=base / "cache")) == 0
        assert cli.main(["calibrate", "--model", str(model), "--input-percentile", "60", "--data", str(project.data),
                         "--cache", str(base / "cache")]) == 0
        flags = project.flags(cache=base / "cache", model=model)
        assert cli.main(finetune + ["--out", str(tmp_path / "p60")] + flags) == 0
        capsys.readouterr()
        n_val = len(make_splits(dataset, seed=0).y_val)
        assert cli.main(["evaluate", "--genome", exact["genome_indices"], "--split", "validation", "--images",
                         str(n_val), "--compensation", "bias", "--json"] + flags) == 0
    measured = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert float(read_csv(tmp_path / "same" / "finetune.csv")[0]["validation_before"]) == 0.987654  # the record's
    assert float(read_csv(tmp_path / "p60" / "finetune.csv")[0]["validation_before"]) == pytest.approx(
        measured["accuracy"], abs=1e-12)
