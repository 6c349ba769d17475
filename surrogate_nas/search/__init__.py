"""NSGA-II over genomes (pymoo's Problem/Algorithm split): the run's settings, the budgeted
true evaluations it asks for, hypervolume, seeding, the surrogate and the
surrogate-assisted loop. It sees an evaluation only through the callables it is given.

May import: `multipliers` and the foundation modules; never `evaluation`, `network`
or `emulation` (no TensorFlow).
"""

from surrogate_nas._lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    "config": ["SearchConfig"],
    "pareto": ["LEGACY_HV_REFERENCE", "hv_reference", "hypervolume"],
    "nsga2": ["run_full"],
    "problem": ["AssignmentProblem", "SeededSampling", "make_algorithm", "SpaceWatch"],
    "seeding": ["seed_genomes", "seed_population"],
    "surrogate": ["feature_names", "GenomeFeatures", "AccuracySurrogate", "select_kind", "prediction_quality"],
    "surrogate_nsga2": ["pick_for_truth", "run_surrogate"],
    "truth": ["BudgetExhausted", "Evaluation", "TrueEvaluations"],
})
