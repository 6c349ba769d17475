"""Pareto racing on and off over the genomes of a finished run: images and float passes
per true evaluation, and wrong stops.

Replays the run's true evaluations, in their order, from the per-image records its cache
holds (every complete evaluation has the bits of all search images; a floor stop those of
the images it scored). Each genome goes through the project's own staged scoring
(`early_stop.score_genomes`) twice: with the run's floor only, and with the floor and
racing, where the rivals are the replay's own front so far (complete evaluations not
stopped, lower or equal energy), as `search.truth` gives them. Racing off must reproduce
the run's recorded image counts exactly: the check that the replay is faithful. The
genomes are the run's: with racing on, a search would also propose other genomes later
on (it learns partial accuracies), which a replay cannot show.

Wrong stops: a genome stopped by racing that the full scores put on the run's final front
(must be 0), and one whose full search-set accuracy is not below the rival it lost to.
Float passes: images scored times the emulated seconds per image, over the float model's
seconds for the search set, both measured in this process on sampled genomes of the run.

    python benchmarks/bench_racing.py --run experiments/library/shipped-b300 [--timed 8]
        [--out benchmarks/results/bench_racing]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from bench_early_stop import float_pass_seconds

from surrogate_nas.config import portable, resolve_paths
from surrogate_nas.evaluation.early_stop import StoppingRule, score_genomes
from surrogate_nas.evaluation.evaluator import CHUNK
from surrogate_nas.workflows.context import Context


def nondominated(points: list[tuple[tuple[int, ...], float, float]]) -> list:
    """(genome, accuracy, energy) not dominated (higher-or-equal accuracy at lower-or-equal
    energy, one strictly) by another; cheapest first."""
    return sorted((p for p in points if not any(q[1] >= p[1] and q[2] <= p[2] and (q[1], q[2]) != (p[1], p[2])
                                                for q in points)), key=lambda p: p[2])


def replay(genomes, records, energy, n: int, rule: StoppingRule) -> list[dict]:
    complete: list = []  # (genome, accuracy, energy) of the replay's complete evaluations
    rights: dict = {}
    out = []
    for g in genomes:
        right = records[g].correct()

        def count_many(tasks, right=right, g=g):
            if any(hi > len(right) for _, _, hi in tasks):
                raise SystemExit(f"replay of {g} needs images the run did not score: not the run's rule")
            return [(right[lo:hi], 0.0) for _, lo, hi in tasks]

        def rivals(genome):
            e = energy(genome)
            return [(p[0], rights[p[0]]) for p in nondominated(complete) if p[2] <= e]

        (o,) = score_genomes([g], count_many, n, rule, CHUNK, rivals=rivals)
        out.append({"genome": ",".join(map(str, g)), "images": o.n_images, "accuracy": o.accuracy,
                    "below_floor": o.below_floor is not None,
                    "dominated_by": None if o.dominated_by is None else ",".join(map(str, o.dominated_by))})
        if not o.stopped:
            complete.append((g, o.accuracy, energy(g)))
            rights[g] = right
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished run made without --race, its cache at --cache")
    parser.add_argument("--timed", type=int, default=8, help="genomes scored in full to time an image")
    parser.add_argument("--out", default="benchmarks/results/bench_racing")
    args = parser.parse_args()
    run = Path(args.run)
    rows = list(csv.DictReader(open(run / "evaluations.csv", newline="")))
    genomes = list(dict.fromkeys(tuple(int(v) for v in r["genome_indices"].split(",")) for r in rows))
    ctx, config = Context.from_run(run, resolve_paths(), quiet=True)
    if config.race:
        raise SystemExit(f"{run}: made with --race; replay a run made without it")
    record = json.loads((run / "config.json").read_text())
    ev = ctx.evaluator
    if ev.fingerprint != record["fingerprint"]:
        raise SystemExit(f"{run}: its evaluator differs from this one; cannot replay")
    n = ev.n_images
    records = ctx.cache.get_many(ev.fingerprint, genomes)
    missing = [g for g in genomes if g not in records or records[g].correct_bits is None]
    if missing:
        raise SystemExit(f"{len(missing)} of the run's genomes have no per-image record in {ctx.paths.cache}")
    floor = record["accuracy_floor"]["value"]
    off = StoppingRule(floor, config.early_stop_confidence, tuple(config.early_stop_looks))
    on = replace(off, race=True)
    replay_off = replay(genomes, records, ev.energy, n, off)
    replay_on = replay(genomes, records, ev.energy, n, on)
    unfaithful = [g for g, r in zip(genomes, replay_off) if r["images"] != records[g].n_images]

    # cost of an image against a float pass, measured here
    float_s = float_pass_seconds(ctx)
    rng = np.random.default_rng(0)
    complete = [g for g in genomes if records[g].n_images == n]
    timed = [complete[i] for i in rng.permutation(len(complete))[:args.timed]]
    ev.correct(timed[0], 0, CHUNK)  # trace
    seconds = []
    for g in timed:
        start = time.perf_counter()
        ev.correct(g, 0, n)
        seconds.append(time.perf_counter() - start)
    per_image_fp = float(np.mean(seconds)) / n / float_s  # float passes per scored image

    full = [(g, records[g].accuracy, ev.energy(g)) for g in complete]
    final_front = {p[0] for p in nondominated(full)}
    acc = {g: records[g].accuracy for g in complete}
    raced = [(g, r) for g, r in zip(genomes, replay_on) if r["dominated_by"]]
    wrong_front = [r["genome"] for g, r in raced if g in final_front]
    not_worse = [r["genome"] for g, r in raced if g in acc
                 and acc[g] >= acc[tuple(int(v) for v in r["dominated_by"].split(","))]]

    def stats(rep):
        images = np.array([r["images"] for r in rep])
        return {"images_mean": float(images.mean()), "float_passes_mean": float(images.mean() * per_image_fp),
                "stopped_below_floor": sum(r["below_floor"] for r in rep),
                "stopped_by_race": sum(bool(r["dominated_by"]) for r in rep),
                "complete": sum(not r["below_floor"] and not r["dominated_by"] for r in rep)}

    summary = {
        "run": portable(run, Path.cwd()), "genomes": len(genomes), "search_images": n, "floor": floor,
        "looks": list(off.looks), "confidence": off.confidence,
        "racing_off": stats(replay_off), "racing_on": stats(replay_on),
        "replay_off_differs_from_the_run": len(unfaithful),
        "wrong_stops_on_final_front": len(wrong_front), "wrong_stop_genomes": wrong_front,
        "raced_not_worse_than_rival_on_full_set": len(not_worse),
        "float_pass_s": float_s, "emulated_s_per_image": float(np.mean(seconds)) / n,
        "float_passes_per_image": per_image_fp, "timed_genomes": len(timed),
        "final_front_points": len(final_front),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["genome", "images_off", "images_on", "below_floor", "dominated_by", "full_accuracy"])
        for g, a, b in zip(genomes, replay_off, replay_on):
            writer.writerow([a["genome"], a["images"], b["images"], int(b["below_floor"]), b["dominated_by"] or "",
                             "" if g not in acc else f"{acc[g]:.6f}"])
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
