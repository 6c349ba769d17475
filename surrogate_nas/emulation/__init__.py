"""tf-approximate's approximate convolution on stock TensorFlow: 8-bit quantization,
the exact-plus-error decomposition of a table, the ops, and the Keras layers
(`AxConv2D`, `AxDense`, `FoldedBatchNorm`, registered as `surrogate_nas>...`).

May import: `surrogate_nas.multipliers.tables` and the foundation modules.
"""

from surrogate_nas._lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    "decomposition": ["Decomposition", "as_lut", "decompose"],
    "layers": ["QUANTIZATION_MODES", "AxConv2D", "AxDense", "FoldedBatchNorm"],
    "ops": ["GATHER_RANK_THRESHOLD", "approx_conv_core", "factor_error", "per_tap_table", "gathered_error", "ax_conv2d", "exact_float32", "cpu_vector_isa"],
    "quantization": ["QMAX", "nudge", "quantize_codes", "output_geometry"],
})
