"""surrogate_nas: pick an approximate 8-bit multiplier for each conv (optionally dense)
layer of any Keras CNN, trading accuracy against multiplication energy.

The command line (`python -m surrogate_nas ...`) is a thin layer over these objects; from
Python, e.g. in a notebook (a model without a card is calibrated first)::

    import surrogate_nas as sn

    ctx = sn.Context.create(model="models/alexnet_cifar10.keras", data="../shared/datasets/cifar10-jpeg.tar.gz",
                            catalog="multipliers/evoapprox8b", cache="cache", search_images=500)
    catalog, evaluator = ctx.catalog, ctx.evaluator      # the circuits; the approximate twin
    print(evaluator.layer_names)                         # one gene per approximable layer
    genome = [catalog.index("mul8u_1JFF")] * len(evaluator.layers)
    print(evaluator.score(genome))                       # accuracy on the search set, relative energy
    result = sn.run_search(ctx, budget=100, out="experiments/runs")  # surrogate-assisted NSGA-II, cached
    for point in result.front:                           # true accuracies, by energy
        print(f"{point.energy:.3f} {point.accuracy:.4f}", sn.genome_names(point.genome, catalog))

Lower down: `load_catalog`, `load_images` + `Evaluator.from_paths` (one evaluator without a
cache), `SearchConfig` + `execute` (what `run_search` calls), `calibrate_model`,
`build_approx_model` (the twin of a Keras model), `summarize` (a run folder's headline numbers).
Names are imported on first use, so `import surrogate_nas` stays fast.
"""

__version__ = "0.1.0"

from surrogate_nas._lazy import lazy_face

__getattr__, __dir__, _names = lazy_face(__name__, {
    "workflows.context": ["Context"],
    "workflows.run": ["execute", "run_search", "RunResult"],
    "search.config": ["SearchConfig"],
    "evaluation.evaluator": ["Evaluator"],
    "multipliers.catalog": ["load_catalog"],
    "data.datasets": ["load_images"],
    "data.splits": ["make_splits"],
    "network.calibrate": ["calibrate_model"],
    "network.twin": ["build_approx_model"],
    "network.layers": ["approximable_layers"],
    "genome": ["genome_names", "parse_genome"],
    "results.summary": ["summarize"],
    "errors": ["UserError"],
})
__all__ = ["__version__", *_names]

import sys as _sys

if "keras" in _sys.modules:  # `import keras` came first: a user loading saved designs, register their layers
    from surrogate_nas.emulation import layers as _layers  # noqa: F401
