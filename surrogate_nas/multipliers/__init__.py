"""Approximate multipliers as data: 256x256 product tables, their error metrics, the
catalog that names them with their power, importers (.bin, C models, Python callables)
and the numpy maths of error compensation.

May import: `surrogate_nas.errors`, `genome`, `config` only (no TensorFlow).
"""

from surrogate_nas._lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    "catalog": ["CATALOG_CSV", "REQUIRED_COLUMNS", "UnknownMultiplierError", "Multiplier", "Catalog", "load_catalog"],
    "compensation": ["METHODS", "AUTO_CANDIDATES", "CHOICES", "Compensation", "check_method", "tuned_weight_map", "bias_offsets", "residual_statistics", "design_catalog"],
    "importers": ["import_catalog"],
    "metrics": ["METRIC_COLUMNS", "CatalogMetricWarning", "Metrics", "compute_metrics"],
    "tables": ["LUT_SIZE", "LUT_BYTES", "exact_table", "error_table", "load_lut"],
})
