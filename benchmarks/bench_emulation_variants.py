"""Other ways to compute the exact table convolution, against the one the project uses.

Issue 17 asked to try XLA compilation of the factor and gathered paths, layer fusion and
any exact reformulation, and to keep what is exact and faster. Tried here, on the shipped
AlexNet's five conv shapes (batch 256, ReLU-like inputs as in bench_axconv.py):

- factor path and gathered path as shipped (`ops.ax_conv2d`);
- the factor path as one static-rank convolution (no chunking loop), without XLA;
- the same core compiled by XLA (`jit_compile=True`; the factor path as one static-rank
  convolution, since XLA wants static shapes);
- gathered path that skips zero-point taps (ReLU zeros and padding): their error rows are
  subtracted from the table, so the skipped taps add a constant per output channel;
  exact for integer tables (every partial sum is an integer below 2**24).
Layer fusion (the whole emulated model under XLA) needs both paths to compile; the
gathered one does not (XLA has no kernel for its sparse segment sum), see its row.

Each row: milliseconds for the five layers (best of --repeats), the ratio to float
`tf.nn.conv2d` on the same shapes measured in the same run, and the largest deviation
from the shipped path (0 = bit-identical).

    python benchmarks/bench_emulation_variants.py [--circuits mul8u_EXZ,mul8u_KEM,mul8u_PKY] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from bench_axconv import float_conv_seconds, random_layers, timed

from surrogate_nas.config import resolve_paths
from surrogate_nas.emulation.decomposition import decompose
from surrogate_nas.emulation.ops import (
    GATHER_RANK_THRESHOLD,
    _conv,
    approx_conv_core,
    ax_conv2d,
    gathered_error,
    per_tap_table,
)
from surrogate_nas.multipliers.catalog import load_catalog
from surrogate_nas.multipliers.tables import error_table


def skip_zero_error(a, err, wc, conv_strides, zero_code):
    """Gathered error sum that leaves out the taps whose input code is `zero_code`."""
    kh, kw, cin, cout = wc.shape
    taps = kh * kw * cin
    skip = tf.cast(zero_code, tf.int32)
    relative = err - tf.gather(err, skip)[None, :]  # E[a, w] - E[zero, w]: 0 on the zero row
    table = per_tap_table(relative, wc)
    offset = tf.reduce_sum(tf.gather(tf.gather(err, skip), tf.cast(wc, tf.int32)), axis=[0, 1, 2])
    patches = tf.image.extract_patches(a, [1, kh, kw, 1], conv_strides, [1, 1, 1, 1], "VALID")
    out_shape = tf.shape(patches)[:3]
    codes = tf.reshape(tf.cast(patches, tf.int32), [-1, taps])
    keep = tf.not_equal(codes, skip)
    rows = tf.cast(tf.where(keep)[:, 0], tf.int32)
    idx = tf.boolean_mask(codes + tf.range(taps, dtype=tf.int32) * 256, keep)
    total = tf.sparse.segment_sum(table, idx, rows, num_segments=tf.reduce_prod(out_shape))
    return tf.reshape(total, tf.concat([out_shape, [cout]], 0)) + offset


def variants(lut: np.ndarray) -> dict:
    """name -> fn(x, kernel) for one circuit."""
    dec = decompose(lut)
    gathered = dec.rank > GATHER_RANK_THRESHOLD
    err = tf.constant(error_table(lut).astype(np.float32))
    u, v = tf.constant(dec.u), tf.constant(dec.v)

    def core(x, kernel, error_fn):
        ranges = (tf.reduce_min(x), tf.reduce_max(x)), (tf.reduce_min(kernel), tf.reduce_max(kernel))
        return approx_conv_core(x, kernel, *ranges, (1, 1), "SAME", error_fn)

    def static_factor(a, wc, strides):
        kh, kw, cin, cout = wc.shape
        feats = tf.reshape(tf.gather(u, tf.cast(a, tf.int32)), [*a.shape[:3], -1])
        kern = tf.transpose(tf.gather(v, tf.cast(wc, tf.int32)), [0, 1, 2, 4, 3])
        return _conv(feats, tf.reshape(kern, [kh, kw, -1, cout]), strides)

    def gathered_fn(a, wc, strides):
        return gathered_error(a, per_tap_table(err, wc), wc.shape, strides)

    out = {"shipped": lambda x, k: ax_conv2d(x, k, lut)}
    xla_error = gathered_fn if gathered else static_factor
    if not gathered:  # the one static-rank convolution without XLA: what XLA itself adds
        out["static"] = tf.function(lambda x, k: core(x, k, static_factor))
    out["xla"] = tf.function(lambda x, k: core(x, k, xla_error), jit_compile=True)
    if gathered:
        def skip_core(x, kernel):
            lo, hi = tf.reduce_min(x), tf.reduce_max(x)
            from surrogate_nas.emulation.quantization import nudge

            zero_code = nudge(lo, hi)[3]
            return core(x, kernel, lambda a, wc, s: skip_zero_error(a, err, wc, s, zero_code))

        out["skip-zero"] = tf.function(skip_core)
    return out, dec.rank, "gathered" if gathered else "factor"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog")
    parser.add_argument("--circuits", default="mul8u_EXZ,mul8u_KEM,mul8u_PKY,mul8u_185Q")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()
    catalog = load_catalog(resolve_paths(multipliers=args.catalog).multipliers)
    layers = random_layers(args.batch)
    float_s = float_conv_seconds(layers, args.repeats)
    print(f"float tf.nn.conv2d, 5 layers, batch {args.batch}: {1000 * float_s:.1f} ms; "
          f"zero-point taps of the inputs: {np.mean([np.mean(x.numpy() == 0) for x, _ in layers]):.0%}")
    print(f"{'circuit':12s} {'rank':>4s} {'path':>8s} {'variant':>10s} {'ms':>8s} {'ratio':>6s} {'max_dev':>9s}")
    rows = []
    for name in args.circuits.split(","):
        fns, rank, path = variants(catalog[name].lut)
        reference = [fns["shipped"](x, k).numpy() for x, k in layers]
        for variant, fn in fns.items():
            try:
                seconds = sum(timed(lambda: fn(x, k).numpy(), args.repeats) for x, k in layers)
                dev = max(float(np.abs(fn(x, k).numpy() - ref).max()) for (x, k), ref in zip(layers, reference))
            except Exception as exc:  # an XLA compile failure is a result too
                print(f"{name:12s} {rank:4d} {path:>8s} {variant:>10s} failed: {type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:120]}")
                rows.append({"circuit": name, "rank": rank, "path": path, "variant": variant, "error": type(exc).__name__})
                continue
            row = {"circuit": name, "rank": rank, "path": path, "variant": variant, "ms": 1000 * seconds,
                   "ratio": seconds / float_s, "max_abs_dev": dev}
            rows.append(row)
            print(f"{name:12s} {rank:4d} {path:>8s} {variant:>10s} {row['ms']:8.1f} {row['ratio']:6.1f} {dev:9.2e}",
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"float_conv_ms": 1000 * float_s, "batch": args.batch, "rows": rows},
                                              indent=1) + "\n")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.0f} s)")
