"""Keras models: architectures, which layers get a gene, the approximate twin of a float
model, measurements on it (input ranges, code histograms, top-1), its card,
calibration and training.

May import: `emulation`, `multipliers`, `data` and the foundation modules.
"""

from surrogate_nas._lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    "architectures": ["DEFAULT_WIDTHS", "CONV_NAMES", "build_model", "build_resnet8", "ARCHITECTURES", "build_architecture"],
    "calibrate": ["calibrate_model", "format_card"],
    "card": ["card_path", "write_card", "read_card", "card_entries", "load_model", "check_card"],
    "layers": ["LayerInfo", "approximable_layers", "approx_layers", "layer_info"],
    "measure": ["calibrate_input_ranges", "code_histograms", "channel_code_histograms", "EVAL_BATCH", "top1", "check_model_data"],
    "training": ["train_and_save", "augment_dataset", "train"],
    "twin": ["batchnorm_followers", "folded_weights", "build_approx_model"],
})
