"""The settings of a search run: every knob that changes its results lives here, so that
`config.json`, `--resume` checks and the CLI flags all read one definition."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import NamedTuple

from surrogate_nas.errors import UserError
from surrogate_nas.genome import APPROXIMATE
from surrogate_nas.multipliers.compensation import CHOICES
from surrogate_nas.multipliers.pruning import AUTO_PRUNE_ABOVE, AUTO_PRUNE_K


def setting(default, help: str, flag: str | None = None, parse=None):
    """A field of `SearchConfig` with what its command-line flag needs: the help text, a
    flag name when it is not `--field-name` (booleans that default to True are turned
    off by `--no-...`), and a parser when the type is not that of the default."""
    return field(default=default, metadata={"help": help, "flag": flag, "parse": parse})


DEFAULT_POINTS = "0.5,1,2,5,10"


class Band(NamedTuple):
    """Retraining candidates across the saving band, lo to hi percent in steps of width.
    kind 'accurate': the most accurate front point in each band [lo + k width, + width);
    'quiet': at each saving lo, lo + width, ..., hi, the design adding the least output
    noise (`evaluation.quiet`), whatever its accuracy before retraining."""

    lo: float
    hi: float
    width: float
    kind: str = "accurate"


def parse_points(text: str, flag: str = "--points") -> tuple[list[float], Band | None]:
    """Which finished-run points to retrain: comma-separated tolerances in pp, or
    band[:LO-HI/WIDTH] or quiet[:LO-HI/STEP] (saving in %; a design poor before retraining
    can be the best after it). Returns (tolerances, None) or ([], Band)."""
    import re

    text = text.strip()
    for kind, word, default in (("accurate", "band", (35.0, 70.0, 5.0)), ("quiet", "quiet", (45.0, 65.0, 5.0))):
        if text.startswith(word):
            m = re.fullmatch(word + r"(?::(\d+(?:\.\d*)?)-(\d+(?:\.\d*)?)/(\d+(?:\.\d*)?))?", text)
            band = None if m is None else tuple(float(v) for v in m.groups()) if m.group(1) else default
            ordered = band is not None and (band[0] < band[1] or (kind == "quiet" and band[0] == band[1]))
            if not ordered or not 0 <= band[0] <= band[1] <= 100 or not band[2] > 0:
                lo_hi = "LO <= HI" if kind == "quiet" else "LO < HI"
                raise UserError(f"{flag}: expected {word} or {word}:LO-HI/WIDTH with 0 <= {lo_hi} <= 100 and WIDTH > 0 "
                                f"(saving in %), got {text!r}")
            return [], Band(*band, kind)
    try:
        tolerances = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"{flag}: expected comma-separated numbers of pp, band or quiet, got {text!r}") from None
    if not tolerances or min(tolerances) < 0:
        raise UserError(f"{flag}: expected non-negative tolerances in pp, got {text!r}")
    return tolerances, None


def int_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


@dataclass
class SearchConfig:
    """Everything that determines a run's results (written to config.json; `--resume`
    refuses other values). The command-line flags are made from these fields."""

    mode: str = setting("surrogate", "surrogate (default) or full (every offspring truly evaluated)")
    budget: int = setting(300, "distinct genomes with a true accuracy (default 300)")
    pop_size: int = setting(20, "NSGA-II population size (default 20)")
    generations: int | None = setting(None, "stop after this many generations (default: budget only)", parse=int)
    crossover_prob: float = setting(1.0, "probability that a mating recombines (default 1.0)")
    crossover_eta: float = setting(3.0, "SBX distribution index (default 3)")
    sbx_prob_var: float = setting(0.5, "SBX: probability that a gene is recombined (default 0.5)")
    mutation_prob: float = setting(0.5, "per-gene mutation probability (default 0.5)")
    mutation_eta: float = setting(3.0, "polynomial mutation index (default 3)")
    seed: int = setting(0, "seed of every random choice of the search (default 0)")
    stall_generations: int = setting(50, "give up after this many generations without a new genome (default 50)")
    search_images: int = setting(2000, "validation images scored per genome (default 2000)")
    test_images: int | None = setting(None, "test images for the final front (default: all 10,000)", parse=int)
    evaluate_test: bool = setting(True, "skip re-scoring the front on all validation images and the test set",
                                  flag="--no-test")
    accuracy_floor: float | None = setting(
        None, "accuracy below which a design is of no use, e.g. 0.68: the HV reference, where early stopping cuts, "
              "and which front points are re-scored (default: all-exact search-set accuracy - --floor-below-exact)",
        parse=float)
    floor_below_exact: float = setting(0.15, "default floor: this far below all-exact search-set accuracy (default 0.15)")
    early_stop: bool = setting(True, "score every search image of every genome, even one shown below the floor",
                               flag="--no-early-stop")
    early_stop_looks: tuple[int, ...] = setting((250, 500, 1000), "images after which an evaluation may stop "
                                                "(default 250,500,1000)", parse=int_tuple)
    early_stop_confidence: float = setting(0.999, "one-sided confidence of a stop, Bonferroni over the looks "
                                                  "(default 0.999)")
    race: bool = setting(False, "Pareto racing: at the early-stop looks, also stop a genome shown worse (paired sign "
                                "test at --early-stop-confidence) than a front point of lower or equal energy "
                                "(default off)")
    rescore: str = setting("floor", "which front points get re-scored: floor (default: those at or above the "
                                    "accuracy floor on all validation images, and on test only all-exact and the "
                                    "points the summary chooses) or all (every front point on validation and test)")
    initial: str = setting("exact+random", "full mode's initial population: exact+random (default) or seed-set "
                                           "(surrogate mode's)")
    compensation: str = setting("auto", "error compensation per layer: none, bias, tune, alwann, tune+bias, or auto "
                                        "(per layer and circuit, the method measured best on training images; default)")
    rule_images: int = setting(512, "calibration images the auto rule scores per candidate (default 512)")
    prune_k: int | None = setting(None, "auto rule: per layer, measure only circuits dominated in (power, residual "
                                        "error) by fewer than K others; the rest get bias (0: measure all; default: "
                                        f"0 up to {AUTO_PRUNE_ABOVE} circuits, {AUTO_PRUNE_K} above)", parse=int)
    approximate: str = setting("conv", "which layers get a multiplier (one gene each): conv (default) or conv+dense")
    max_distinct: int | None = setting(None, "every design uses at most K distinct circuits, as hardware shares "
                                             "multipliers (default: no limit)", parse=int)
    finetune_top: int = setting(0, "retrain K points at the end, as --finetune-points says (default 0)")
    finetune_points: str = setting(DEFAULT_POINTS, "which points --finetune-top K retrains: tolerances in pp (the "
                                                   "validation choices within the first K) or band[:LO-HI/WIDTH] (the "
                                                   "most accurate front point in each WIDTH %% band of saving from "
                                                   "LO to HI %%, band = band:35-70/5; the K highest-saving bands) "
                                                   "or quiet[:LO-HI/STEP] (the least-noise design at each saving, "
                                                   "quiet = quiet:45-65/5; the K highest savings) "
                                                   f"(default {DEFAULT_POINTS})")
    finetune_recipe: str | None = setting(None, "with --finetune-top: retrain with this recipe of `finetune --recipe` "
                                                "(kd-adam1e-3-cos, kd-sgd2e-2-cos, ce-adam1e-4, ...) instead of the plain "
                                                "fine-tuning (default: plain)", parse=str)
    # surrogate mode
    seed_fraction: float = setting(0.15, "surrogate mode: share of the budget for the seed set (default 0.15)")
    seed_set_size: int | None = setting(None, "genomes in the seed set (default: seed-fraction x budget, at least "
                                              "a population)", parse=int)
    offspring_factor: int = setting(10, "surrogate mode: offspring per generation / population (default 10)")
    true_per_generation: int | None = setting(None, "surrogate mode: screened offspring truly evaluated per "
                                                    "generation (default: population / 4)", parse=int)
    kappa: float = setting(1.0, "surrogate mode: optimism of the screening, mean + kappa * std (default 1)")
    ensemble_size: int = setting(8, "surrogate mode: bootstrap members of the surrogate (default 8)")
    drift_every: int = setting(3, "surrogate mode: every this many generations, also evaluate random offspring "
                                  "(default 3; 0: never)")
    drift_samples: int = setting(2, "surrogate mode: random offspring evaluated then (default 2)")

    def __post_init__(self):
        self.early_stop_looks = tuple(int(v) for v in self.early_stop_looks)

    def validate(self) -> None:
        def bad(flag: str, why: str):
            raise UserError(f"--{flag}: {why}")

        if self.mode not in ("full", "surrogate"):
            bad("mode", f"expected 'full' or 'surrogate', got {self.mode!r}")
        if self.budget < 1:
            bad("budget", f"must be a positive number of evaluations, got {self.budget}")
        if self.pop_size < 2:
            bad("pop-size", f"must be at least 2, got {self.pop_size}")
        if self.generations is not None and self.generations < 1:
            bad("generations", f"must be at least 1, got {self.generations}")
        for flag, value in (("crossover-prob", self.crossover_prob), ("mutation-prob", self.mutation_prob)):
            if not 0.0 <= value <= 1.0:
                bad(flag, f"must be a probability in [0, 1], got {value}")
        for flag, value in (("crossover-eta", self.crossover_eta), ("mutation-eta", self.mutation_eta)):
            if not 0 < value < float("inf"):
                bad(flag, f"must be > 0 and finite, got {value}")
        if self.seed < 0:
            bad("seed", f"must be >= 0, got {self.seed}")
        if self.search_images < 1:
            bad("search-images", f"must be positive, got {self.search_images}")
        if self.test_images is not None and self.test_images < 1:
            bad("test-images", f"must be positive (leave it out for the whole test set), got {self.test_images}")
        if not 0.0 < self.seed_fraction < 1.0:
            bad("seed-fraction", f"must be in (0, 1), got {self.seed_fraction}")
        if self.compensation not in CHOICES:
            bad("compensation", f"expected one of {', '.join(CHOICES)}, got {self.compensation!r}")
        if self.approximate not in APPROXIMATE:
            bad("approximate", f"expected one of {', '.join(APPROXIMATE)}, got {self.approximate!r}")
        if self.accuracy_floor is not None and not 0.0 <= self.accuracy_floor < 1.0:
            bad("accuracy-floor", f"must be an accuracy in [0, 1) such as 0.68, got {self.accuracy_floor}")
        if self.initial not in ("exact+random", "seed-set"):
            bad("initial", f"expected 'exact+random' or 'seed-set', got {self.initial!r}")
        if self.rescore not in ("floor", "all"):
            bad("rescore", f"expected 'floor' or 'all', got {self.rescore!r}")
        if self.finetune_top < 0:
            bad("finetune-top", f"must be >= 0, got {self.finetune_top}")
        parse_points(self.finetune_points, "--finetune-points")
        if self.finetune_recipe is not None:
            from surrogate_nas.network.retraining import RECIPES

            if self.finetune_recipe not in RECIPES:
                bad("finetune-recipe", f"expected one of {', '.join(RECIPES)}, got {self.finetune_recipe!r}")
        if self.max_distinct is not None and self.max_distinct < 1:
            bad("max-distinct", f"must be between 1 and the number of approximable layers, got {self.max_distinct}")
        if self.prune_k is not None and self.prune_k < 0:
            bad("prune-k", f"must be >= 0 (0: no pruning), got {self.prune_k}")
        if self.seed_set_size is not None and self.seed_set_size < 1:
            bad("seed-set-size", f"must be >= 1, got {self.seed_set_size}")
        if self.offspring_factor < 1:
            bad("offspring-factor", f"must be >= 1, got {self.offspring_factor}")
        if self.true_per_generation is not None and self.true_per_generation < 1:
            bad("true-per-generation", f"must be >= 1, got {self.true_per_generation}")
        if not self.kappa >= 0:
            bad("kappa", f"must be >= 0, got {self.kappa}")
        if self.ensemble_size < 1:
            bad("ensemble-size", f"must be >= 1, got {self.ensemble_size}")
        if not 0.0 <= self.sbx_prob_var <= 1.0:
            bad("sbx-prob-var", f"must be a probability in [0, 1], got {self.sbx_prob_var}")
        if self.stall_generations < 1:
            bad("stall-generations", f"must be >= 1, got {self.stall_generations}")
        if not self.early_stop_looks or any(b <= a for a, b in zip(self.early_stop_looks, self.early_stop_looks[1:])) \
                or self.early_stop_looks[0] < 1:
            bad("early-stop-looks", f"must be increasing positive image counts, got {self.early_stop_looks}")
        if not 0.5 < self.early_stop_confidence < 1.0:
            bad("early-stop-confidence", f"must be in (0.5, 1), got {self.early_stop_confidence}")
        if not 0.0 <= self.floor_below_exact < 1.0:
            bad("floor-below-exact", f"must be in [0, 1), got {self.floor_below_exact}")
        if self.rule_images < 1:
            bad("rule-images", f"must be >= 1, got {self.rule_images}")
        if self.drift_every < 0 or self.drift_samples < 0:
            bad("drift_every/drift_samples", f"must be >= 0, got {self.drift_every}/{self.drift_samples}")

    @property
    def n_seed(self) -> int:
        """Genomes in the seed set (surrogate mode; full mode with `initial` "seed-set")."""
        if self.seed_set_size is not None:
            return min(self.budget, self.seed_set_size)
        return min(self.budget, max(self.pop_size, int(round(self.seed_fraction * self.budget))))

    def as_dict(self) -> dict:
        return asdict(self)
