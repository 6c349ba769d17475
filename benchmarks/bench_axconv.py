"""Cost of the exact table-multiplier convolution vs TensorFlow's float conv2d.

For every circuit of the catalog, on the conv layer shapes of the project's CIFAR
AlexNet at batch 256: rank of the error table, the path used (factor / gathered),
exact-mode milliseconds for all five layers, the ratio to float `tf.nn.conv2d` on the
same shapes, and for the truncated mode (rank cut to --truncated-rank, weighted by the
code distributions in the model card when available) its ratio and max output
deviation from exact. Also peak RSS.

    python benchmarks/bench_axconv.py [--catalog DIR] [--batch 256] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from surrogate_nas.config import resolve_paths
from surrogate_nas.emulation.decomposition import decompose
from surrogate_nas.emulation.ops import GATHER_RANK_THRESHOLD, ax_conv2d
from surrogate_nas.multipliers.catalog import load_catalog
from surrogate_nas.network.architectures import DEFAULT_WIDTHS, POOL_AFTER


def layer_shapes(widths=DEFAULT_WIDTHS):
    """(H, W, Cin, Cout) of each conv layer, 3x3 SAME, 32x32x3 input."""
    size, cin, shapes = 32, 3, []
    for i, cout in enumerate(widths):
        shapes.append((size, size, cin, cout))
        cin = cout
        if i in POOL_AFTER:
            size //= 2
    return shapes


def timed(fn, repeats):
    fn()  # trace / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def random_layers(batch: int, widths=DEFAULT_WIDTHS) -> list[tuple[tf.Tensor, tf.Tensor]]:
    """(input, kernel) of each conv layer: ReLU-like inputs (half zeros), seeded."""
    rng = np.random.default_rng(0)
    layers = []
    for h, w, cin, cout in layer_shapes(widths):
        x = tf.constant(np.maximum(rng.normal(size=(batch, h, w, cin)), 0).astype(np.float32))
        layers.append((x, tf.constant((rng.normal(size=(3, 3, cin, cout)) * 0.1).astype(np.float32))))
    return layers


def float_conv_seconds(layers, repeats: int) -> float:
    """The baseline: float `tf.nn.conv2d` (SAME) on every layer, summed."""
    float_conv = tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME"))
    return sum(timed(lambda: float_conv(x, k).numpy(), repeats) for x, k in layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog")
    parser.add_argument("--model", help="model whose card gives code histograms for the truncated mode")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--truncated-rank", type=int, default=2)
    parser.add_argument("--only", help="comma-separated circuit names")
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()
    paths = resolve_paths(multipliers=args.catalog, model=args.model)
    catalog = load_catalog(paths.multipliers)
    card = None
    if paths.model and Path(paths.model).with_suffix(".json").exists():
        card = json.loads(Path(paths.model).with_suffix(".json").read_text())
    layers = random_layers(args.batch, tuple(card["widths"]) if card else DEFAULT_WIDTHS)
    float_s = float_conv_seconds(layers, args.repeats)
    print(f"float tf.nn.conv2d, 5 layers, batch {args.batch}: {1000 * float_s:.1f} ms "
          f"(gathered path above rank {GATHER_RANK_THRESHOLD})")
    print(f"{'circuit':12s} {'rank':>4s} {'path':>8s} {'exact_ms':>9s} {'ratio':>6s} {'trunc_ratio':>11s} {'trunc_maxdev':>12s}")
    rows = []
    names = args.only.split(",") if args.only else catalog.names
    for name in names:
        entry = catalog[name]
        rank = decompose(entry.lut).rank
        exact_s = sum(timed(lambda: ax_conv2d(x, k, entry.lut).numpy(), args.repeats) for x, k in layers)
        trunc_s, dev = 0.0, 0.0
        for i, (x, k) in enumerate(layers):
            trunc_s += timed(lambda: ax_conv2d(x, k, entry.lut, max_rank=args.truncated_rank).numpy(), args.repeats)
            exact = ax_conv2d(x, k, entry.lut).numpy()
            approx = ax_conv2d(x, k, entry.lut, max_rank=args.truncated_rank).numpy()
            dev = max(dev, float(np.abs(exact - approx).max() / max(np.abs(exact).max(), 1e-12)))
        row = {"circuit": name, "rank": rank, "path": "gathered" if rank > GATHER_RANK_THRESHOLD else "factor",
               "exact_ms": 1000 * exact_s, "ratio": exact_s / float_s, "trunc_ratio": trunc_s / float_s,
               "trunc_max_rel_dev": dev}
        rows.append(row)
        print(f"{name:12s} {rank:4d} {row['path']:>8s} {row['exact_ms']:9.1f} {row['ratio']:6.1f} "
              f"{row['trunc_ratio']:11.1f} {dev:12.2e}", flush=True)
    ratios = [r["ratio"] for r in rows]
    truncs = [r["trunc_ratio"] for r in rows]
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"exact ratio: median {statistics.median(ratios):.1f}x, worst {max(ratios):.1f}x; "
          f"truncated (rank {args.truncated_rank}) median {statistics.median(truncs):.1f}x; peak RSS {peak_gib:.2f} GiB")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
