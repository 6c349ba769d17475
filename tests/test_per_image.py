"""Per-image correctness records: the bit format, the cache's v2 -> v3 upgrade, what
search, validation and test scoring store (the tiny model, early stopping firing), and the
paired intervals of `summarize` against a reference computed here."""

from __future__ import annotations

import csv
import json
import math
import shutil
import sqlite3

import numpy as np
import pytest
from conftest import EXACT_INDEX, read_csv, write_csv
from scipy.stats import norm

from surrogate_nas.evaluation.bits import pack_correct, popcount, unpack_correct
from surrogate_nas.evaluation.cache import SCHEMA_VERSION, EvalCache
from surrogate_nas.evaluation.cache_csv import export_csv
from surrogate_nas.evaluation.early_stop import Outcome, StoppingRule, score_genomes
from surrogate_nas.results.summary import (
    NO_RECORDS,
    format_summary,
    paired_loss,
    summarize,
)

# --------------------------------------------------------------------------- the bit format


def test_bit_order_is_little_and_round_trips():
    right = np.zeros(11, bool)
    right[[0, 3, 8, 10]] = True
    bits = pack_correct(right)
    assert bits == bytes([0b00001001, 0b00000101])  # image 8 j + k is bit k (value 1 << k) of byte j
    assert popcount(bits) == 4 and (unpack_correct(bits, 11) == right).all()
    rng = np.random.default_rng(1)
    for n in (1, 7, 8, 9, 250, 2000):
        r = rng.random(n) < 0.7
        assert len(pack_correct(r)) == (n + 7) // 8 and (unpack_correct(pack_correct(r), n) == r).all()
    with pytest.raises(ValueError):
        unpack_correct(bits, 17)


def test_outcome_bits_must_match_its_count():
    Outcome(2, 3, 0.1, bits=pack_correct([True, False, True]))
    with pytest.raises(ValueError):
        Outcome(1, 3, 0.1, bits=pack_correct([True, False, True]))


def test_score_genomes_keeps_the_bits_of_the_images_it_scored():
    patterns = {(1,): np.arange(2000) % 10 == 0, (2,): np.arange(2000) % 5 != 0}  # 10 % and 80 %

    def correct_many(tasks):
        return [(patterns[g][lo:hi], 0.0) for g, lo, hi in tasks]

    stopped, full = score_genomes([(1,), (2,)], correct_many, 2000, StoppingRule(0.68), shard=250)
    assert stopped.stopped and stopped.n_images == 250
    assert (unpack_correct(stopped.bits, 250) == patterns[(1,)][:250]).all()
    assert not full.stopped and (unpack_correct(full.bits, 2000) == patterns[(2,)]).all()
    assert popcount(full.bits) == full.correct == 1600


# --------------------------------------------------------------------------- the cache


def test_a_version_2_cache_is_upgraded_in_place_keeping_every_row(tmp_path):
    path = tmp_path / "v2.sqlite"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE evaluations (fingerprint TEXT NOT NULL, genome TEXT NOT NULL, accuracy REAL NOT NULL,
            energy REAL, n_images INTEGER, seconds REAL, created_at TEXT NOT NULL, run_id TEXT, below_floor REAL,
            PRIMARY KEY (fingerprint, genome));
        CREATE TABLE fingerprints (fingerprint TEXT PRIMARY KEY, description TEXT NOT NULL, created_at TEXT NOT NULL);
        CREATE TABLE hits (fingerprint TEXT NOT NULL, genome TEXT NOT NULL, run_id TEXT, at TEXT NOT NULL);
        INSERT INTO evaluations VALUES ('fp', '1,2', 0.75, 0.5, 8, 3.0, '2026-11-28', 'old', NULL);
        INSERT INTO evaluations VALUES ('fp', '3,3', 0.1, 0.2, 250, 0.4, '2026-11-28', 'old', 0.68);
        INSERT INTO evaluations VALUES ('fq', '1,2', 0.5, 0.5, 2000, 3.0, '2026-11-28', 'old', NULL);
        INSERT INTO hits VALUES ('fp', '1,2', 'later', '2026-11-29');
        PRAGMA user_version = 2;
    """)
    con.close()
    with EvalCache(path) as cache:
        assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert sum(s["rows"] for s in cache.stats()) == 3 and sum(s["hits"] for s in cache.stats()) == 1
        old = cache.get("fp", (1, 2))
        assert (old.accuracy, old.n_images, old.run_id, old.correct_bits, old.correct()) == (0.75, 8, "old", None, None)
        assert cache.get("fp", (3, 3)).below_floor == 0.68
        # an evaluation that disagrees leaves the old row alone (first writer wins), one that agrees adds its bits
        other = pack_correct([True] * 5 + [False] * 3)
        assert cache.put("fp", (1, 2), 5 / 8, 0.5, 8, 1.0, "new", correct_bits=other).correct_bits is None
        same = pack_correct([True] * 6 + [False] * 2)
        row = cache.put("fp", (1, 2), 0.75, 0.5, 8, 1.0, "new", correct_bits=same)
        assert row.correct_bits == same and row.run_id == "old" and row.correct().sum() == 6


def test_bits_round_trip_through_the_cache_and_its_csv(tmp_path):
    right = np.random.default_rng(2).random(2000) < 0.8
    with EvalCache(tmp_path / "c.sqlite") as cache:
        row = cache.put("fp", (0, 1), right.mean(), 0.5, 2000, 1.0, "r", correct_bits=pack_correct(right))
        assert len(row.correct_bits) == 250 and (row.correct() == right).all()
        assert (cache.get_many("fp", [(0, 1)])[(0, 1)].correct() == right).all()
        stop = cache.put("fp", (2, 2), 0.2, 0.5, 5, 1.0, "r", below_floor=0.68, correct_bits=pack_correct([1, 0, 0, 0, 0]))
        assert stop.correct().tolist() == [True, False, False, False, False]
        with pytest.raises(ValueError, match="images right"):
            cache.put("fp", (3, 3), 0.5, 0.5, 2000, 1.0, "r", correct_bits=pack_correct(right))
        with pytest.raises(ValueError, match="do not hold"):
            cache.put("fp", (3, 3), 0.5, 0.5, 1000, 1.0, "r", correct_bits=pack_correct(right))
        export_csv(cache, tmp_path / "c.csv")
    with open(tmp_path / "c.csv", newline="") as fh:
        rows = {r["genome"]: r for r in csv.DictReader(fh)}
    assert bytes.fromhex(rows["0,1"]["correct_bits"]) == pack_correct(right)


# --------------------------------------------------------------------------- the tiny model, end to end

FLOOR, LOOKS = 0.9, (10, 20)


@pytest.fixture(scope="module")
def stopped_run(project, tmp_path_factory):
    from conftest import isolated_cwd

    from surrogate_nas import cli

    base = tmp_path_factory.mktemp("bits")
    flags = ["--mode", "full", "--budget", "8", "--pop-size", "4", "--search-images", "30", "--test-images", "20",
             "--compensation", "none", "--rescore", "all", "--accuracy-floor", str(FLOOR),
             "--early-stop-looks", ",".join(map(str, LOOKS)), "--out", str(base / "runs"), "--run-id", "r"]
    with isolated_cwd(base):
        assert cli.main(["run", *flags] + project.flags(cache=base / "cache")) == 0
    return base


def test_every_stored_evaluation_has_bits_whose_popcount_is_its_count(stopped_run):
    with EvalCache(stopped_run / "cache" / "evaluations.sqlite") as cache:
        stats = cache.stats()
        splits = {s["fingerprint"]: (s["description"]["images"]["split"], s["description"]["images"]["n_images"])
                  for s in stats}
        seen = set()
        for fp in splits:
            for row in cache.get_many(fp, _genomes(cache, fp)).values():
                assert row.correct_bits is not None and len(row.correct_bits) == (row.n_images + 7) // 8
                assert popcount(row.correct_bits) == round(row.accuracy * row.n_images)
                seen.add((splits[fp][0], row.below_floor is not None))
    # search (some stopped early), validation and test re-scoring
    assert {("validation", True), ("validation", False), ("test", False)} <= seen


def _genomes(cache, fp):
    with cache._db() as conn:
        return [tuple(int(v) for v in g.split(",")) for (g,) in
                conn.execute("SELECT genome FROM evaluations WHERE fingerprint = ?", (fp,))]


def test_bits_are_the_evaluators_predictions_in_its_order(stopped_run, project):
    from surrogate_nas.workflows.context import Context

    ctx = Context.create(model=project.model, data=project.data, catalog=project.catalog,
                         cache=stopped_run / "cache", search_images=30, test_images=20, compensation="none")
    ev = ctx.evaluator
    rows = read_csv(stopped_run / "runs" / "r" / "evaluations.csv")
    assert any(r["below_floor"] for r in rows)
    for r in rows[:4]:
        genome = tuple(int(v) for v in r["genome_indices"].split(","))
        record = ctx.cache.get(ev.fingerprint, genome)
        right, _ = ev.correct(genome)
        assert (record.correct() == right[:record.n_images]).all()
        assert ev.count(genome, 0, record.n_images)[0] == popcount(record.correct_bits)
    exact = (EXACT_INDEX,) * len(ev.layers)
    for split in ("validation", "test"):
        record = ctx.cached_record(split, exact, "check")
        assert record.run_id == "r" and (record.correct() == ctx.rescore_evaluator(split).correct(exact)[0]).all()


def test_the_run_folder_carries_the_bits_and_summarize_gives_intervals(stopped_run):
    run = stopped_run / "runs" / "r"
    rescored = read_csv(run / "rescored.csv")
    bits = read_csv(run / "rescored_bits.csv")
    assert {(r["genome_indices"], s) for r in rescored for s in ("validation", "test")} == \
        {(b["genome_indices"], b["split"]) for b in bits}
    summary = summarize(run)
    assert summary["intervals"]["note"] is None and summary["intervals"]["confidence"] == 0.95
    point = summary["chosen"]["2pp"]
    assert point is None or (point["rule"] == "point estimate" and len(point["validation_loss_interval_pp"]) == 2)
    text = format_summary(summary)
    assert "(point estimate)" in text and "(upper bound)" in text


# --------------------------------------------------------------------------- the interval and the rules


def test_paired_interval_against_an_independent_reference():
    rng = np.random.default_rng(3)
    exact = rng.random(5000) < 0.82
    point = exact.copy()
    flip = rng.random(5000) < 0.045  # about 4.5 % of images change prediction
    point[flip] = rng.random(flip.sum()) < 0.55
    d = exact.astype(float) - point.astype(float)  # per-image paired differences
    se = d.std(ddof=0) / math.sqrt(len(d))  # = sqrt(b + c - (b - c)^2 / n) / n
    z = norm.ppf(0.975)
    got = paired_loss(exact, point)
    assert got["loss_pp"] == pytest.approx(100 * d.mean(), abs=1e-12)
    assert got["lower_pp"] == pytest.approx(100 * (d.mean() - z * se), rel=1e-9)
    assert got["upper_pp"] == pytest.approx(100 * (d.mean() + z * se), rel=1e-9)
    # by hand: b = 3, c = 1 of n = 10 -> loss 20 pp, se = sqrt(4 - 0.4) / 10 = 0.18974
    e = np.array([1, 1, 1, 1, 0, 1, 1, 0, 0, 0], bool)
    p = np.array([0, 0, 0, 1, 1, 1, 1, 0, 0, 0], bool)
    hand = paired_loss(e, p)
    assert (hand["only_exact_right"], hand["only_point_right"]) == (3, 1)
    assert hand["lower_pp"] == pytest.approx(100 * (0.2 - 1.959963984540054 * 0.18973665961010275), rel=1e-9)


@pytest.fixture
def folder(tmp_path):
    """A run folder: all-exact and three front points, with per-image records of 4,000
    validation and 2,000 test images."""
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"search": {"mode": "surrogate", "compensation": "auto"},
                                                 "evaluator": {}, "hv_reference": {"accuracy": 0.6, "energy": 1.0}}))
    write_csv(run / "evaluations.csv", [{"genome_indices": "1,1", "accuracy": "0.8", "energy": "0.9", "below_floor": ""}])
    rng = np.random.default_rng(5)
    n = {"validation": 4000, "test": 2000}
    exact = {s: rng.random(k) < 0.8 for s, k in n.items()}
    # discordant images (b only-exact, c only-point): saving 10 % loses little, 30 % loses 0.45 pp, 40 % 0.9 pp
    designs = {"1,1": (10, 4, 2), "2,2": (30, 40, 22), "3,3": (40, 60, 24)}
    right = {"0,0": exact}
    for g, (_, b, c) in designs.items():
        right[g] = {}
        for s in n:
            r = exact[s].copy()
            ones, zeros = np.flatnonzero(r), np.flatnonzero(~r)
            r[ones[:b * n[s] // 4000]] = False
            r[zeros[:c * n[s] // 4000]] = True
            right[g][s] = r
    rows = [{"role": "all-exact", "genome": "e;e", "compensation": "", "genome_indices": "0,0", "energy": "1.0"}]
    rows += [{"role": "front", "genome": f"g{g}", "compensation": "", "genome_indices": g,
              "energy": f"{1 - saving / 100:.6f}"} for g, (saving, _, _) in designs.items()]
    for r in rows:
        for s in n:
            r[f"{s}_accuracy"] = f"{right[r['genome_indices']][s].mean():.6f}"
    write_csv(run / "rescored.csv", rows)
    with open(run / "rescored_bits.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["genome_indices", "split", "n_images", "bits"])
        for g, by in right.items():
            for s, r in by.items():
                w.writerow([g, s, len(r), pack_correct(r).hex()])
    return run, right


def test_both_rules_and_their_intervals(folder):
    run, right = folder
    summary = summarize(run)
    point, bound = summary["chosen"]["0.5pp"], summary["chosen_upper_bound"]["0.5pp"]
    assert point["rule"] == "point estimate" and point["genome"] == "g2,2"  # 0.45 pp <= 0.5 pp
    assert bound["rule"] == "upper bound" and bound["genome"] == "g1,1"  # 0.45 pp's upper bound is above 0.5 pp
    ref = paired_loss(right["0,0"]["validation"], right["2,2"]["validation"])
    assert point["validation_loss_interval_pp"] == [ref["lower_pp"], ref["upper_pp"]]
    assert ref["upper_pp"] > 0.5 >= ref["loss_pp"]
    assert point["validation_loss_pp"] == pytest.approx(ref["loss_pp"], abs=1e-4)
    test = paired_loss(right["0,0"]["test"], right["2,2"]["test"])
    assert point["test_loss_interval_pp"] == [test["lower_pp"], test["upper_pp"]]
    assert summary["chosen"]["1pp"]["genome"] == "g3,3"
    assert set(summary["rules"]) == {"point estimate", "upper bound"}
    assert json.loads((run / "summary.json").read_text()) == json.loads(json.dumps(summary))
    text = format_summary(summary)
    assert f"[{ref['lower_pp']:.2f}, {ref['upper_pp']:.2f}]" in text and "within 0.5pp (upper bound)" in text


def test_a_run_without_per_image_records_still_summarizes(folder, tmp_path):
    run, _ = folder
    old = tmp_path / "old"
    shutil.copytree(run, old)
    (old / "rescored_bits.csv").unlink()
    summary = summarize(old)
    assert summary["intervals"]["note"] == NO_RECORDS and summary["intervals"]["method"] is None
    assert summary["chosen"]["0.5pp"]["genome"] == "g2,2"
    assert summary["chosen"]["0.5pp"]["validation_loss_interval_pp"] is None
    assert summary["chosen"]["0.5pp"]["test_loss_interval_pp"] is None
    assert set(summary["chosen_upper_bound"].values()) == {None}
    assert NO_RECORDS in format_summary(summary)


def test_records_that_contradict_rescored_csv_are_refused(folder):
    from surrogate_nas.errors import UserError

    run, _ = folder
    rows = read_csv(run / "rescored.csv")
    rows[1]["validation_accuracy"] = "0.5"
    write_csv(run / "rescored.csv", rows)
    with pytest.raises(UserError, match="rescored_bits.csv"):
        summarize(run)


# --------------------------------------------------------------------------- the CPU's vector ISA


@pytest.mark.parametrize("flags, level", [
    ("fpu sse4_2 avx avx2 fma avx512f avx512dq avx512bw", "avx512"),
    ("fpu sse4_2 avx avx2 fma", "avx2"),
    ("fpu sse4_2 avx", "avx"),
    ("fpu sse4_2", "sse4.2"),
])
def test_cpu_vector_isa_from_cpuinfo(flags, level):
    from surrogate_nas.emulation.ops import cpu_vector_isa

    text = f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: fpu\n"
    assert cpu_vector_isa(text) == level
    assert cpu_vector_isa("processor : 0\nFeatures : fp asimd evtstrm\n") == "neon"
    assert cpu_vector_isa("").startswith("unknown (")


def test_the_cpu_isa_is_in_the_fingerprint_only_without_a_gpu(evaluator):
    from surrogate_nas.emulation.ops import cpu_vector_isa

    emulation = evaluator.description["emulation"]
    if emulation["device"] == "CPU":
        assert emulation["cpu_isa"] == cpu_vector_isa()
    else:
        assert "cpu_isa" not in emulation


# --------------------------------------------------------------------------- Pareto racing


@pytest.mark.parametrize("b, c", [(9, 0), (12, 3), (30, 14), (5, 5), (3, 9), (0, 0)])
def test_lost_race_is_a_one_sided_exact_sign_test(b, c):
    from scipy.stats import binomtest

    from surrogate_nas.evaluation.early_stop import lost_race

    rival = np.array([True] * b + [False] * c + [True] * 7 + [False] * 4)
    right = np.array([False] * b + [True] * c + [True] * 7 + [False] * 4)
    p = binomtest(b, b + c, 0.5, alternative="greater").pvalue if b + c else 1.0
    for alpha in (0.001, 0.01, 0.05):
        assert (lost_race(right, [("r", rival)], alpha) == "r") == (p < alpha and b > c)


def test_score_genomes_races_against_cheaper_front_points():
    n = 100
    strong = np.arange(n) % 10 != 0  # 90 %
    patterns = {(1,): np.arange(n) % 2 == 0, (2,): strong.copy(), (3,): np.arange(n) % 10 > 1}  # 50 %, 90 %, 80 %

    def correct_many(tasks):
        return [(patterns[g][lo:hi], 0.0) for g, lo, hi in tasks]

    rule = StoppingRule(None, 0.999, (25, 50), race=True)
    assert rule.stages(n) == [(0, 25), (25, 50), (50, 100)]  # looks without a floor
    asked = []

    def rivals(genome):
        asked.append(genome)
        return [((9, 9), strong)]

    weak, equal, close = score_genomes([(1,), (2,), (3,)], correct_many, n, rule, 25, rivals)
    assert weak.stopped and weak.dominated_by == (9, 9) and weak.below_floor is None and weak.n_images in (25, 50)
    assert (unpack_correct(weak.bits, weak.n_images) == patterns[(1,)][:weak.n_images]).all()
    assert not equal.stopped and equal.n_images == n
    assert not close.stopped  # 8 discordant images of 100 at most: not shown worse at 99.9 %
    no_race = score_genomes([(1,)], correct_many, n, StoppingRule(None, 0.999, (25, 50)), 25, rivals)[0]
    assert not no_race.stopped and no_race.n_images == n


def test_true_evaluations_race_and_a_racing_stop_is_kept_apart_in_the_cache(tmp_path):
    from surrogate_nas.search.truth import TrueEvaluations

    n = 200
    patterns = {(1, 1): np.arange(n) % 10 != 0, (2, 2): np.arange(n) % 3 == 0, (0, 0): np.arange(n) % 4 == 0}
    energy = {(1, 1): 0.5, (2, 2): 0.9, (0, 0): 0.1}.get

    def correct_many(tasks):
        return [(patterns[g][lo:hi], 0.0) for g, lo, hi in tasks]

    with EvalCache(tmp_path / "c.sqlite") as cache:
        truth = None
        rule = StoppingRule(None, 0.999, (50, 100), race=True)

        def score_many(genomes):
            return score_genomes(genomes, correct_many, n, rule, 50, truth.rivals)

        truth = TrueEvaluations(score_many, energy, cache, "fp", "r", 10, n, floor=0.0, race=True)
        truth.evaluate([(1, 1)], 0, "initial")
        assert [g for g, _ in truth.rivals((2, 2))] == [(1, 1)] and truth.rivals((0, 0)) == []
        truth.evaluate([(2, 2), (0, 0)], 1, "offspring")
        worse, cheap = truth.archive[(2, 2)], truth.archive[(0, 0)]
        assert worse.stopped and worse.dominated_by == (1, 1) and worse.n_images == 50 and worse.objectives == [1, 1]
        assert not cheap.stopped and cheap.n_images == n  # cheaper than every front point: not raced
        assert [e.genome for e in truth.front()] == [(0, 0), (1, 1)]
        row = cache.get("fp", (2, 2))
        assert row.dominated_by == "1,1" and row.below_floor is None and row.n_images == 50
        assert row.answers(None, race=True) and not row.answers(None) and not row.answers(0.99)
        # a search without racing scores it in full and replaces the row; a racing stop never replaces that
        full = cache.put("fp", (2, 2), patterns[(2, 2)].mean(), 0.9, n, 1.0, "r2",
                         correct_bits=pack_correct(patterns[(2, 2)]))
        assert full.dominated_by is None and full.n_images == n
        again = cache.put("fp", (2, 2), 0.3, 0.9, 50, 1.0, "r3", dominated_by=(1, 1))
        assert again.n_images == n and again.run_id == "r2"


@pytest.fixture(scope="module")
def raced_runs(project, tmp_path_factory):
    from conftest import isolated_cwd

    from surrogate_nas import cli

    base = tmp_path_factory.mktemp("race")
    flags = ["--mode", "full", "--budget", "40", "--pop-size", "8", "--search-images", "30", "--test-images", "20",
             "--compensation", "none", "--no-early-stop", "--early-stop-looks", "10,20",
             "--early-stop-confidence", "0.6", "--out", str(base / "runs")]
    with isolated_cwd(base):
        assert cli.main(["run", *flags, "--race", "--run-id", "race"] + project.flags(cache=base / "cache")) == 0
    return base


def test_racing_fires_on_the_tiny_model_and_each_stop_lost_to_a_cheaper_complete_point(raced_runs):
    run = raced_runs / "runs" / "race"
    rows = read_csv(run / "evaluations.csv")
    by_genome = {r["genome_indices"]: r for r in rows}
    raced = [r for r in rows if r["dominated_by"]]
    assert json.loads((run / "config.json").read_text())["search"]["race"] is True
    if len({r["accuracy"] for r in rows}) == 1:  # seen: the fixture model at chance, every genome 10 %
        pytest.skip("every genome of the tiny model has the same accuracy here: nothing can lose a race")
    if not raced:  # the tiny model's quality varies between sessions; the fake-data tests always fire
        pytest.skip("no evaluation lost a race on this session's tiny model")
    front = {r["genome_indices"] for r in read_csv(run / "front.csv")}
    for r in raced:
        rival = by_genome[r["dominated_by"]]
        assert int(r["n_images"]) in (10, 20) and not r["below_floor"] and r["genome_indices"] not in front
        assert not rival["dominated_by"] and int(rival["n_images"]) == 30
        assert float(rival["energy"]) <= float(r["energy"]) and int(rival["order"]) < int(r["order"])
    summary = summarize(run)
    assert summary["stopped_by_race"] == len(raced) and summary["stopped_early"] >= len(raced)


def test_rescoring_races_on_validation_and_reuses_a_stop_only_against_the_same_rival(project, tmp_path):
    """`Context.raced_record`: a near-chance genome raced against all-exact on validation
    stops at a look, is cached as a racing stop with the bits of the images it scored, and
    is scored in full when asked again without that rival."""
    from surrogate_nas.evaluation.early_stop import StoppingRule, lost_race
    from surrogate_nas.workflows.context import Context

    ctx = Context.create(model=project.model, data=project.data, catalog=project.catalog, cache=tmp_path / "cache",
                         search_images=20, test_images=20, compensation="none")
    n_layers = len(ctx.evaluator.layers)
    exact, zero = (EXACT_INDEX,) * n_layers, (4,) * n_layers  # "zero": every product 0
    exact_right = ctx.cached_record("validation", exact, "t").correct()
    zero_right, _ = ctx.rescore_evaluator("validation").correct(zero)
    rule = StoppingRule(None, 0.5, (10, 20), race=True)  # loose: 30 validation images
    # where the sign test (checked by hand in test_lost_race_...) first shows "zero" worse
    stop = next((k for k in (10, 20) if lost_race(zero_right[:k], [(exact, exact_right)], 0.5 / 2) is not None), None)
    if stop is None:
        pytest.skip("the fixture model is too near chance on 30 images for a race to be shown")
    record = ctx.raced_record("validation", zero, "t", [(exact, exact_right)], rule)
    assert record.n_images == stop and tuple(int(v) for v in record.dominated_by.split(",")) == exact
    assert (record.correct() == zero_right[:stop]).all()
    again = ctx.raced_record("validation", zero, "t2", [(exact, exact_right)], rule)
    assert again.run_id == "t" and again.n_images == stop  # the same rival: the stop is reused
    full = ctx.raced_record("validation", zero, "t3", [], rule)  # no such rival any more: scored in full
    assert full.dominated_by is None and full.n_images == len(exact_right) and (full.correct() == zero_right).all()
