"""Seconds per true evaluation (accuracy of one genome on the search set).

Float model, all-exact-table model, and random genomes; median over the random ones;
peak RSS. Uses the configured model, catalog and data (surrogate_nas.toml / flags).

    python benchmarks/bench_evaluate.py [--genomes 10] [--images 2000] [--seed 0] [--compensation none]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from surrogate_nas.config import resolve_paths
from surrogate_nas.evaluation.evaluator import Evaluator
from surrogate_nas.evaluation.inputs import (
    ensure_model,
    load_catalog_from,
    load_data_from,
)
from surrogate_nas.network.measure import top1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genomes", type=int, default=10)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model")
    parser.add_argument("--compensation", default="none", help="none (default), bias, tune, tune+bias, auto, ...")
    args = parser.parse_args()
    paths = resolve_paths(model=args.model)
    catalog = load_catalog_from(paths, args.compensation)
    evaluator = Evaluator.from_paths(ensure_model(paths), catalog, load_data_from(paths), "validation", args.images,
                                     compensation=args.compensation, rule_store=Path(paths.cache))
    images, labels = evaluator.image_set.images.astype(np.float32), evaluator.image_set.labels

    import keras

    float_model = keras.models.load_model(ensure_model(paths), compile=False)
    float_fn = tf.function(lambda x: float_model(x, training=False), input_signature=[tf.TensorSpec([None, 32, 32, 3])])
    top1(float_fn, images, labels)
    start = time.perf_counter()
    float_acc = top1(float_fn, images, labels)
    print(f"float model: {time.perf_counter() - start:.2f} s, accuracy {float_acc:.4f} ({len(labels)} images)")

    exact = (catalog.exact_index,) * 5
    evaluator.score(exact)  # trace
    s = evaluator.score(exact)
    print(f"all-exact tables: {s.seconds:.2f} s, accuracy {s.accuracy:.4f}")

    rng = np.random.default_rng(args.seed)
    times = []
    print(f"{'genome':60s} {'ranks':>22s} {'s':>6s} {'acc':>7s}")
    for _ in range(args.genomes):
        genome = tuple(int(g) for g in rng.integers(0, len(catalog), 5))
        s = evaluator.score(genome)
        times.append(s.seconds)
        ranks = ",".join(str(layer.rank) for layer in evaluator.layers)
        print(f"{','.join(catalog[g].name for g in genome):60s} {ranks:>22s} {s.seconds:6.2f} {s.accuracy:7.4f}", flush=True)
    print(f"random genomes: median {statistics.median(times):.2f} s, min {min(times):.2f}, max {max(times):.2f}; "
          f"retraces {evaluator._predict.experimental_get_tracing_count() - 1}; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
