"""Turn a per-genome accuracy function into TrueEvaluations' batch scorer."""

from surrogate_nas.evaluation.early_stop import Outcome


def many(scorer, n_images: int = 20):
    """`scorer(genome) -> (accuracy, seconds)` as `score_many(genomes) -> [Outcome]`."""

    def score_many(genomes):
        outcomes = []
        for genome in genomes:
            accuracy, seconds = scorer(genome)
            outcomes.append(Outcome(round(accuracy * n_images), n_images, seconds))
        return outcomes

    return score_many
