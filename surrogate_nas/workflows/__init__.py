"""One command's work end to end: the `Context` (the one builder of an evaluation), the
run folder, a search run, fine-tuning and export. This is where `evaluation` and
`search` meet.

May import: every lower part (`results`, `search`, `evaluation`, `network`, ...);
never `experiments` or `cli`.
"""

from surrogate_nas._lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    "context": ["Context", "build_features", "check_image_counts"],
    "export": ["describe_design", "export_design"],
    "finetune": ["DEFAULT_EPOCHS", "DEFAULT_LR", "DEFAULT_TRAIN_IMAGES", "FinetuneResult", "finetune_design", "finetune_run", "save_design"],
    "run": ["RunResult", "execute", "run_search", "rescore_genomes", "write_outputs"],
    "run_folder": ["RUN_FILES", "new_run_id", "load_run_config", "check_saved_run"],
})
