"""Many runs at once: the surrogate-vs-baselines comparison (NSGA-II, random search,
Optuna) and parameter studies.

May import: `workflows` and everything below it; never `cli`.
"""

from surrogate_nas._lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    "compare": ["CHECKPOINTS", "evaluations_to_reach", "plot_comparison"],
    "methods": ["METHODS", "MethodRun", "run_random", "run_optuna", "run_nsga"],
    "study": ["load_study", "study_configs", "run_studies", "plot_study_fronts"],
})
