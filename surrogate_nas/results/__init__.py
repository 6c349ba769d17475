"""What people look at: the CSV and text tables of a run folder, its figures, and its
headline numbers (`summarize`: savings chosen on validation, reported on test).

May import: `search`, `multipliers` and the foundation modules (no TensorFlow).
"""

from surrogate_nas._lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    "run_folder": ["RunFolder"],
    "plots": ["plot_predictions", "draw_front", "plot_front", "plot_hv", "finish_front_axes"],
    "summary": ["TOLERANCES_PP", "HV_CHECKPOINTS", "choose_within", "choose_confidently", "paired_loss", "hv_at", "band_candidates", "validation_choices",
                "read_rescored", "summarize", "format_summary"],
    "tables": ["write_surrogate_log", "write_table", "write_evaluations_csv", "write_front_csv", "write_rescored_csv", "write_report"],
})
