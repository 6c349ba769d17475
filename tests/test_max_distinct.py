"""`--max-distinct K`: every design uses at most K distinct circuits. The repair operator on
its own (hand-worked examples, counts against brute force), inside pymoo's NSGA-II, in the
seed set, and in whole runs through the CLI (real model, catalog, SQLite cache)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from conftest import EXACT_INDEX, POWERS, isolated_cwd, read_csv
from pymoo.core.termination import NoTermination

from surrogate_nas.errors import UserError
from surrogate_nas.search.config import SearchConfig
from surrogate_nas.search.distinct import CircuitLimit, DistinctRepair, circuit_ids
from surrogate_nas.search.problem import AssignmentProblem, make_algorithm
from surrogate_nas.search.seeding import seed_genomes

MACS = [100, 50, 10, 5, 1]
POWER = [0.40, 0.30, 0.22, 0.36, 0.01]


def n_distinct(genome) -> int:
    return len(set(genome))


# --------------------------------------------------------------------------- the repair


def test_repair_keeps_the_circuits_covering_most_macs_and_moves_the_rest_to_the_nearest_power():
    two = CircuitLimit(2, MACS, POWER)
    # circuits 0 (100 MACs) and 1 (50) stay; 0.22 and 0.01 go to 0.30, 0.36 to 0.40
    assert two.repair_one((0, 1, 2, 3, 4)) == (0, 1, 1, 0, 1)
    one = CircuitLimit(1, MACS, POWER)
    assert one.repair_one((0, 1, 2, 3, 4)) == (0,) * 5
    # circuit 4 covers layers 0 and 4 (101 MACs), more than circuit 1 in layers 1-3 (65)
    assert one.repair_one((4, 1, 1, 1, 4)) == (4,) * 5
    # equal MACs: the circuit used first is kept
    assert CircuitLimit(1, [1, 1], POWER).repair_one((3, 2)) == (3, 3)


def test_repair_bounds_distinct_circuits_keeps_feasible_genomes_and_is_deterministic():
    rng = np.random.default_rng(0)
    genomes = [tuple(int(v) for v in rng.integers(0, 5, 5)) for _ in range(300)]
    for k in range(1, 6):
        limit = CircuitLimit(k, MACS, POWER)
        repaired = [limit.repair_one(g) for g in genomes]
        assert repaired == [limit.repair_one(g) for g in genomes]  # deterministic
        for g, r in zip(genomes, repaired):
            assert n_distinct(r) <= k
            assert set(r) <= set(g)  # only circuits the genome already used
            if n_distinct(g) <= k:
                assert r == g  # a feasible genome is left as it is
    X = np.array(genomes[:20], dtype=float)
    out = DistinctRepair(CircuitLimit(2, MACS, POWER))._do(None, X)
    assert out.dtype == X.dtype and out.shape == X.shape
    assert [tuple(int(v) for v in row) for row in out] == [CircuitLimit(2, MACS, POWER).repair_one(g) for g in genomes[:20]]


@pytest.mark.parametrize("k, n_layers, groups", [(1, 5, [0, 1, 2, 3, 4]), (2, 4, [0, 1, 2, 3, 4]),
                                                 (2, 4, [0, 0, 1, 1, 1, 2]), (3, 3, [0, 1, 1])])
def test_feasible_space_is_counted_and_listed_exactly(k, n_layers, groups):
    limit = CircuitLimit(k, [1] * n_layers, np.linspace(0.1, 0.5, len(groups)), groups)
    brute = [g for g in itertools.product(range(len(groups)), repeat=n_layers)
             if len({groups[v] for v in g}) <= k]
    assert limit.space() == len(brute)
    assert list(limit.genomes()) == brute


def test_designs_of_one_circuit_count_as_one(catalog):
    from surrogate_nas.multipliers.compensation import design_catalog

    designs = design_catalog(catalog)
    ids = circuit_ids(designs)
    base = [name.split("+")[0] for name in designs.names]
    assert len(set(ids)) == len(catalog)
    for i, j in itertools.combinations(range(len(designs)), 2):
        assert (ids[i] == ids[j]) == (base[i] == base[j])
    limit = CircuitLimit.of(1, designs, MACS)
    g = (designs.index("trunc+bias"), designs.index("trunc"), designs.index("trunc+tune"), 0, 0)
    assert limit.distinct(g) == 1 and limit.repair_one(g) == g
    assert circuit_ids(catalog).tolist() == list(range(len(catalog)))
    assert CircuitLimit.of(None, catalog, MACS) is None


# --------------------------------------------------------------------------- in pymoo and the seed set


def test_nsga2_samples_and_breeds_only_feasible_genomes():
    n_layers, n_choices = 5, 36
    corners = [tuple(int(b) * (n_choices - 1) for b in np.binary_repr(i, n_layers)) for i in range(2**n_layers)]
    limit = CircuitLimit(2, [9, 7, 5, 3, 1], np.linspace(0.01, 0.5, n_choices))

    def two_generations(limit):
        config = SearchConfig(pop_size=24, seed=0)
        algorithm = make_algorithm(config, corners[:8], n_offsprings=100, limit=limit)
        algorithm.setup(AssignmentProblem(n_layers, n_choices), termination=NoTermination(), seed=0)
        pop = algorithm.ask()
        initial = np.asarray(pop.get("X")).round().astype(int)
        pop.set("F", np.column_stack([initial.mean(axis=1), -initial.std(axis=1)]))
        algorithm.tell(infills=pop)
        offspring = np.asarray(algorithm.ask().get("X")).round().astype(int)
        return [tuple(g) for g in initial], [tuple(g) for g in offspring]

    initial, offspring = two_generations(limit)
    assert len(initial) == 24 and len(set(initial)) == 24 and len(offspring) > 50
    assert max(n_distinct(g) for g in initial + offspring) <= 2
    free_initial, free_offspring = two_generations(None)  # the repair is what keeps them there
    assert max(n_distinct(g) for g in free_initial + free_offspring) > 2


def test_seed_set_is_feasible():
    powers = np.array([POWERS[n] for n in ("trunc", "exact", "lowbits", "noisy", "zero")])
    for k in (1, 2, 3):
        limit = CircuitLimit(k, MACS, powers)
        seeds = seed_genomes(40, 5, EXACT_INDEX, powers, np.random.default_rng(0), 5, limit)
        assert len(seeds) == len(set(seeds)) == min(40, limit.space())
        assert seeds[0] == (EXACT_INDEX,) * 5 and all(n_distinct(g) <= k for g in seeds)
    # one circuit per design leaves 5 genomes: the seed set is all of them
    assert sorted(seed_genomes(12, 5, EXACT_INDEX, powers, np.random.default_rng(0), 5, CircuitLimit(1, MACS, powers))) \
        == [(c,) * 5 for c in range(5)]


def test_config_refuses_k_below_one():
    with pytest.raises(UserError, match=r"^--max-distinct: must be between 1 and the number of approximable layers"):
        SearchConfig(max_distinct=0).validate()
    SearchConfig(max_distinct=1).validate()
    assert SearchConfig().max_distinct is None


# --------------------------------------------------------------------------- whole runs


@pytest.fixture(scope="module")
def limited_runs(project, tmp_path_factory):
    """On one cache: a surrogate run with one circuit per design, a full run over
    `--compensation search` designs with at most two circuits, and a default run."""
    from surrogate_nas import cli

    base = tmp_path_factory.mktemp("distinct")
    out, cache = base / "runs", base / "cache"
    tiny = ["--budget", "12", "--pop-size", "4", "--search-images", "20", "--test-images", "20", "--out", str(out)]
    argvs = {"one": ["run", "--max-distinct", "1", "--run-id", "one"],
             "two": ["run", "--mode", "full", "--compensation", "search", "--max-distinct", "2", "--run-id", "two"],
             "free": ["run", "--mode", "full", "--budget", "8", "--no-test", "--compensation", "none",
                      "--run-id", "free"]}
    with isolated_cwd(base):
        rc = {name: cli.main(argv + tiny + project.flags(cache=cache)) for name, argv in argvs.items()}
    return {"out": out, "cache": cache, "rc": rc}


def circuits_of(row: dict) -> set[str]:
    """The circuits of a CSV row: its `genome` names them (`compensation` says how each is compensated)."""
    return set(row["genome"].split(";"))


def test_max_distinct_1_gives_a_front_of_one_circuit_designs(limited_runs, catalog):
    assert limited_runs["rc"]["one"] == 0
    run = limited_runs["out"] / "one"
    rows = read_csv(run / "evaluations.csv")
    # one circuit in all five layers leaves five designs: the run scores them all, then stops
    assert sorted(r["genome"] for r in rows) == sorted(";".join([name] * 5) for name in catalog.names)
    front = read_csv(run / "front.csv")
    assert front and all(len(circuits_of(p)) == 1 for p in front)
    assert json.loads((run / "config.json").read_text())["search"]["max_distinct"] == 1
    assert "at most 1 distinct circuit (--max-distinct 1)" in (run / "report.txt").read_text().splitlines()[0]
    assert json.loads((run / "summary.json").read_text())["max_distinct"] == 1


def test_max_distinct_2_holds_for_every_evaluation_of_a_full_search_over_designs(limited_runs):
    assert limited_runs["rc"]["two"] == 0
    run = limited_runs["out"] / "two"
    rows = read_csv(run / "evaluations.csv")
    assert len(rows) == 12 and {r["reason"] for r in rows} == {"initial", "offspring"}
    assert all(len(circuits_of(r)) <= 2 for r in rows)
    designs = [set(zip(r["genome"].split(";"), r["compensation"].split(";"))) for r in rows]
    assert max(len(d) for d in designs) > 2  # designs (circuit, compensation) of one circuit count once
    front = read_csv(run / "front.csv")
    assert front and all(len(circuits_of(p)) <= 2 for p in front)


@pytest.mark.parametrize("k, allowed", [("0", "between 1 and the number of approximable layers"),
                                        ("99", "between 1 and 5 (the approximable layers of")])
def test_k_out_of_range_is_one_error_line(cli, tmp_path, k, allowed):
    out = tmp_path / "runs"
    r = cli("run", "--max-distinct", k, "--budget", "12", "--search-images", "20", "--out", out, "--run-id", "bad",
            cache=tmp_path / "c")
    assert r.rc == 2 and len(r.err_lines) == 1, r.err
    assert r.err_lines[0].startswith(f"error: --max-distinct: must be {allowed}"), r.err_lines[0]
    assert r.err_lines[0].endswith(f"got {k}")
    assert not (out / "bad").exists()  # a mistake leaves no run folder behind


def test_a_run_recorded_before_the_setting_loads_and_resumes(limited_runs, cli):
    from surrogate_nas.workflows.run_folder import load_run_config

    assert limited_runs["rc"]["free"] == 0
    out, run = limited_runs["out"], limited_runs["out"] / "free"
    doc = json.loads((run / "config.json").read_text())
    assert doc["search"]["max_distinct"] is None
    del doc["search"]["max_distinct"]  # as config.json was written before --max-distinct existed
    (run / "config.json").write_text(json.dumps(doc))
    before = read_csv(run / "evaluations.csv")
    assert load_run_config(run).max_distinct is None
    r = cli("run", "--resume", "free", "--out", out, cache=limited_runs["cache"])
    assert r.rc == 0, r.err
    keep = ("genome_indices", "accuracy", "energy", "reason", "generation")
    assert [{k: x[k] for k in keep} for x in read_csv(run / "evaluations.csv")] == [{k: x[k] for k in keep} for x in before]
    assert "at most" not in (run / "report.txt").read_text().splitlines()[0]


def test_compare_repairs_the_random_and_optuna_arms_too(cli, tmp_path):
    """compare's baselines keep the limit as NSGA-II does: each sampled genome is repaired."""
    pytest.importorskip("optuna")
    out = tmp_path / "cmp"
    r = cli("compare", "--methods", "random,optuna", "--budget", "8", "--seeds", "1", "--search-images", "20",
            "--no-test", "--compensation", "none", "--max-distinct", "2", "--out", out, cache=tmp_path / "c")
    assert r.rc == 0, r.err
    for method in ("random", "optuna"):
        rows = read_csv(out / "runs" / f"cmp-{method}-b8-s0" / "evaluations.csv")
        assert len(rows) == 8 and len({x["genome"] for x in rows}) == 8
        assert all(len(circuits_of(x)) <= 2 for x in rows), method
        assert any(len(circuits_of(x)) == 2 for x in rows), method  # repaired, not only uniform designs
