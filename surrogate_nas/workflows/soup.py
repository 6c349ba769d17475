"""A weight average ("model soup", Wortsman et al., ICML 2022) of several retrainings of one design.

Retrainings of the same design from the same start (other seeds, epochs or schedules) end in
one basin of the loss, each at a different noisy point; the mean of their weights often beats
every one of them, at no cost in hardware or at inference. The greedy soup takes the
retrainings in order of their accuracy on the tuning images (the run's search set) and keeps
each one only when the average with it is not less accurate there. All validation images then
keep the soup only when it beats the un-tuned design (keep-the-better); test only reports.
Energy is the design's: the circuits do not change.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from surrogate_nas.errors import UserError

# What every ingredient must share: the same design of the same network, searched on the same run.
SAME = ("source_run", "model", "weights_sha256", "genome_indices", "compensation")


def read_cards(design_paths) -> list[dict]:
    """The cards (`.json` beside each `.keras`) of the retrained designs; one-line errors for
    a missing file or designs that are not retrainings of one design."""
    cards = []
    for path in map(Path, design_paths):
        card_path = path.with_suffix(".json")
        if path.suffix != ".keras" or not path.is_file():
            raise UserError(f"{path}: not a retrained design (expected a .keras file written by finetune)")
        try:
            card = json.loads(card_path.read_text())
            missing = [k for k in SAME if k not in card]
        except (OSError, ValueError) as exc:
            raise UserError(f"{card_path}: unreadable design card ({exc})") from None
        if missing:
            raise UserError(f"{card_path}: not a finetune design card (no {', '.join(missing)})")
        if cards:
            other = next((k for k in SAME if card[k] != cards[0][k]), None)
            if other:
                raise UserError(f"{path}: another {other} than {design_paths[0]} ({card[other]} vs "
                                f"{cards[0][other]}): a soup averages retrainings of one design")
        cards.append(card)
    if len(cards) < 2:
        raise UserError("soup: give at least two retrained designs (.keras) of the same design")
    return cards


def trained_weights(path: Path, like) -> list[np.ndarray]:
    """The trainable weights of a saved design, in the order of `like` (a model's trainable variables)."""
    import keras

    import surrogate_nas.emulation.layers  # noqa: F401  (AxConv2D must be registered to load)

    weights = [np.asarray(v.numpy()) for v in keras.models.load_model(path, compile=False).trainable_variables]
    if [w.shape for w in weights] != [tuple(v.shape) for v in like]:
        raise UserError(f"{path}: its weights do not fit the network of its card")
    return weights


def mean_weights(weight_sets: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [np.mean(np.stack(ws).astype(np.float64), axis=0).astype(ws[0].dtype) for ws in zip(*weight_sets)]


def install(evaluator, genome, weights: list[np.ndarray], calibration) -> bool:
    """Put `weights` into the evaluator's network with the design's compensation as searched
    (the offsets every retraining trained with), then re-fit it when that lowers the
    cross-entropy on the calibration images (training split). Returns whether it re-fitted."""
    from surrogate_nas.workflows.retrain import choose_refit, restore_untuned

    restore_untuned(evaluator, genome, {f"v{i}": w for i, w in enumerate(weights)})
    return choose_refit(evaluator, genome, evaluator.design_labels(genome), calibration)


def greedy_soup(evaluator, genome, weight_sets, calibration, quiet: bool = True, score=None) -> dict:
    """Wortsman et al.'s greedy soup, scored by `score()` (higher is better; default: the
    evaluator's accuracy on its images, the tuning images). Returns each ingredient's own
    accuracy, the order tried, which were added and the accuracy of the soup after each try;
    the evaluator is left holding the soup."""
    score = score or (lambda: evaluator.accuracy(genome))
    own = []
    for i, ws in enumerate(weight_sets):
        install(evaluator, genome, ws, calibration)
        own.append(score())
        if not quiet:
            print(f"ingredient {i + 1}: tuning accuracy {own[-1]:.4f}", flush=True)
    order = sorted(range(len(weight_sets)), key=lambda i: (-own[i], i))
    added, best, trace = [order[0]], own[order[0]], [own[order[0]]]
    holds, refit = None, None  # which ingredients the evaluator holds the average of, and its re-fit
    for i in order[1:]:
        holds, refit = added + [i], install(evaluator, genome, mean_weights([weight_sets[j] for j in added + [i]]),
                                            calibration)
        accuracy = score()
        trace.append(accuracy)
        if not quiet:
            print(f"+ ingredient {i + 1}: tuning accuracy {accuracy:.4f} "
                  f"({'added' if accuracy >= best else 'left out'})", flush=True)
        if accuracy >= best:
            added, best = added + [i], accuracy
    if holds != added:  # the last average tried was left out: put the soup back
        refit = install(evaluator, genome, mean_weights([weight_sets[j] for j in added]), calibration)
    return {"own_accuracy": own, "order": order, "added": sorted(added), "trace": trace, "tuning_accuracy": best,
            "compensation_refit": refit}


def soup_designs(paths, design_paths, out: Path, quiet: bool = False) -> dict:
    """Average the retrainings `design_paths` (finetune's `.keras` designs of one genome) by
    the greedy soup; writes `out/soup.keras` and its card `out/soup.json` (with every
    ingredient's tuning accuracy) and returns the card."""
    from surrogate_nas.config import from_record, portable, project_root
    from surrogate_nas.data.splits import make_splits
    from surrogate_nas.evaluation.images import calibration_set, select_images
    from surrogate_nas.genome import genome_names
    from surrogate_nas.workflows.context import Context
    from surrogate_nas.workflows.finetune import save_design
    from surrogate_nas.workflows.retrain import _get, keep_better

    began = time.time()
    cards = read_cards(design_paths)
    first, root = cards[0], project_root(paths)
    run_dir, model = from_record(first["source_run"], root), from_record(first["model"], root)
    if paths.model is not None and "model" not in paths.from_config_file and paths.model.resolve() != model.resolve():
        raise UserError(f"--model {paths.model}: the designs were retrained from {first['model']}")
    ctx, _ = Context.from_run(run_dir, replace(paths, model=model), quiet=quiet,
                              compensation=first.get("compensation_method"))
    ev = ctx.evaluator  # the run's search set: the tuning images; private to this call, trained weights go in
    if ev.card.get("weights_sha256") != first["weights_sha256"]:
        raise UserError(f"{first['model']}: its weights are not those the designs were retrained from")
    splits = make_splits(ctx.data, seed=0)
    calibration = calibration_set(splits, ctx.data.source_hash, int(ev.card.get("seed", 0)))
    choosing = select_images(splits, ctx.data.source_hash, "validation", None)
    test = select_images(splits, ctx.data.source_hash, "test", first.get("test_images"))

    genome = tuple(int(v) for v in first["genome_indices"].split(","))
    ev.set_genome(genome)
    if ";".join(ev.design_labels(genome)) != first["compensation"]:
        raise UserError(f"{design_paths[0]}: compensation {first['compensation']} is not what the run's "
                        f"evaluator gives ({';'.join(ev.design_labels(genome))})")
    untuned = _get(ev.model.trainable_variables)
    weight_sets = [trained_weights(Path(p), ev.model.trainable_variables) for p in design_paths]
    soup = greedy_soup(ev, genome, weight_sets, calibration, quiet)
    before, after, kept = keep_better(ev, genome, untuned, choosing)
    card = {key: first[key] for key in SAME} | {
        "genome": ";".join(genome_names(genome, ctx.catalog)),
        "energy": ev.energy(genome), "energy_saving_pct": 100 * (1 - ev.energy(genome)),
        "rule": "greedy soup (Wortsman et al. 2022) on the run's search set; kept only when more accurate than the "
                "un-tuned design on all validation images; test only reported",
        "ingredients": [{"path": portable(p, root), "recipe": (c.get("recipe") or {}).get("name"),
                         "seed": c.get("seed"), "epochs": c.get("epochs"),
                         "validation_after": c.get("validation_after"), "test_after": c.get("test_after"),
                         "tuning_accuracy": soup["own_accuracy"][i], "added": i in soup["added"]}
                        for i, (p, c) in enumerate(zip(design_paths, cards))],
        "tuning_order": [i + 1 for i in soup["order"]], "tuning_trace": soup["trace"],
        "tuning_accuracy": soup["tuning_accuracy"], "compensation_refit": soup["compensation_refit"],
        "validation_before": before, "validation_after": max(before, after), "soup_validation": after, "kept": kept,
        "test_images": len(test.labels), "test_after": ev.top1(test.images, test.labels),
        "test_before": first.get("test_before"), "seconds": time.time() - began,
    }
    save_design(ev, Path(out) / "soup.keras", card)
    return card


def format_soup(card: dict) -> str:
    lines = ["ingredient  tuning   validation  test     added"]
    for i, c in enumerate(card["ingredients"], start=1):
        lines.append(f"{i:>10}  {c['tuning_accuracy']:.4f}   {c['validation_after'] or float('nan'):.4f}      "
                     f"{c['test_after'] or float('nan'):.4f}   {'yes' if c['added'] else 'no'}")
    lines.append(f"soup: tuning {card['tuning_accuracy']:.4f}, validation {card['soup_validation']:.4f} "
                 f"(un-tuned {card['validation_before']:.4f}; kept: {card['kept']}), test {card['test_after']:.4f}; "
                 f"saving {card['energy_saving_pct']:.1f} % (unchanged by retraining)")
    return "\n".join(lines)
