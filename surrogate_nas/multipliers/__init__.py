"""Approximate multipliers as data: 256x256 product tables, their error metrics, the
catalog that names them with their power and exact reference, importers (.bin, C models,
Python callables) and unions of them, the numpy maths of error compensation, and the
per-layer pruning of large libraries.

May import: `surrogate_nas.errors`, `genome`, `config` only (no TensorFlow).
"""

from surrogate_nas._lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    "catalog": ["CATALOG_CSV", "REQUIRED_COLUMNS", "EXACT_COLUMN", "POWER_SOURCE_COLUMN", "UnknownMultiplierError",
                "Multiplier", "Catalog", "load_catalog"],
    "compensation": ["METHODS", "AUTO_CANDIDATES", "CHOICES", "Compensation", "check_method", "tuned_weight_map", "bias_offsets", "residual_statistics", "design_catalog"],
    "importers": ["import_catalog"],
    "pruning": ["PRUNED_METHOD", "effective_k", "output_error", "dominated_counts", "keep_mask"],
    "metrics": ["METRIC_COLUMNS", "CatalogMetricWarning", "Metrics", "compute_metrics"],
    "tables": ["LUT_SIZE", "LUT_BYTES", "exact_table", "error_table", "load_lut"],
})
