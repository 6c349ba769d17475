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
    result = ctx.search(budget=100, out="experiments/runs")  # surrogate-assisted NSGA-II, cached
    for point in result.front:                           # true accuracies, by energy
        print(f"{point.energy:.3f} {point.accuracy:.4f}", sn.genome_names(point.genome, catalog))

Lower down: `load_catalog`, `load_images` + `Evaluator.from_paths` (one evaluator without a
cache), `SearchConfig` + `execute` (what `ctx.search` calls), `calibrate_model`,
`build_approx_model` (the twin of a Keras model), `summarize` (a run folder's headline numbers).
Names are imported on first use, so `import surrogate_nas` stays fast.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "Context": "surrogate_nas.runner",
    "execute": "surrogate_nas.runner",
    "RunResult": "surrogate_nas.runner",
    "SearchConfig": "surrogate_nas.search",
    "Evaluator": "surrogate_nas.evaluate",
    "load_catalog": "surrogate_nas.multipliers",
    "load_images": "surrogate_nas.data",
    "make_splits": "surrogate_nas.data",
    "calibrate_model": "surrogate_nas.calibrate",
    "build_approx_model": "surrogate_nas.model",
    "approximable_layers": "surrogate_nas.model",
    "genome_names": "surrogate_nas.genome",
    "parse_genome": "surrogate_nas.genome",
    "summarize": "surrogate_nas.summary",
    "UserError": "surrogate_nas.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'surrogate_nas' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
