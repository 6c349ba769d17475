"""A genome's true accuracy and energy: scored images, the evaluator, per-layer designs
(compensation and the `auto` rule), early stopping, workers and the on-disk cache, and
the inputs (catalog, data, model, card) they are built from.

May import: `network`, `emulation`, `multipliers`, `data` and the foundation modules;
never `search` (its sibling: only `workflows` joins the two).
"""

from surrogate_nas._lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    "bits": ["pack_correct", "unpack_correct", "popcount", "check_bits"],
    "cache": ["SCHEMA_VERSION", "CACHE_FILE_NAME", "default_cache_file", "fingerprint", "Record", "EvalCache"],
    "designs": ["RULE_IMAGES", "RULE_VERSION", "LayerDesigns"],
    "early_stop": ["LOOKS", "CONFIDENCE", "upper_bound", "lost_race", "StoppingRule", "Outcome", "score_genomes"],
    "energy": ["EnergyModel"],
    "evaluator": ["CHUNK", "ORDER_SEED", "EMULATION_VERSION", "Score", "Evaluator"],
    "images": ["SCORED_SPLITS", "ImageSet", "select_images", "calibration_set"],
    "inputs": ["load_catalog_from", "load_data_from", "ensure_model", "ensure_card"],
    "workers": ["EvaluatorSpec", "InProcess", "JoblibWorkers", "threads_per_worker"],
})
