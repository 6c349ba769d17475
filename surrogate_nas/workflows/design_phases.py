"""`design`'s phases after the search: cost baselines, retraining race, soups, and the
final choice on the choosing images (see `workflows.design`)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from surrogate_nas.errors import UserError


def search_front(run_dir: Path) -> list[dict]:
    """The non-dominated complete evaluations of a run (search-set accuracy, energy)."""
    from surrogate_nas.results.run_folder import RunFolder

    rows = [{"genome": tuple(int(v) for v in e["genome_indices"].split(",")), "accuracy": float(e["accuracy"]),
             "energy": float(e["energy"])} for e in RunFolder(run_dir).evaluations()
            if not (e.get("below_floor") or e.get("dominated_by"))]
    return [r for r in rows if not any(o["accuracy"] >= r["accuracy"] and o["energy"] <= r["energy"]
                                       and (o["accuracy"], o["energy"]) != (r["accuracy"], r["energy"]) for o in rows)]


def choosing_images(splits, ctx):
    """The validation images the search set leaves out: the choosing images."""
    from surrogate_nas.evaluation.images import ImageSet

    search = np.asarray(ctx.evaluator.image_set.indices)
    if ctx.evaluator.image_set.split != "validation":
        raise UserError("design: the search set must be validation images")
    rest = np.setdiff1d(np.arange(len(splits.y_val)), search)
    if len(rest) == 0:
        raise UserError("--search-images: the search used every validation image; none is left for choosing")
    return search, ImageSet(splits.x_val[rest], np.asarray(splits.y_val[rest]), "validation", rest,
                            ctx.data.source_hash)


def design_splits(ctx):
    from surrogate_nas.data.splits import make_splits

    return make_splits(ctx.data, seed=0)


def design_recipe(settings):
    from surrogate_nas.network.retraining import RECIPES

    return replace(RECIPES[settings.recipe], epochs=settings.epochs, train_images=settings.train_images)


def cost_phase(ctx, settings, folder) -> dict:
    """Baselines in this process (`float_baselines`), measured once and kept in the state."""
    saved = folder.state.get("baselines")
    if saved is not None:
        return saved
    folder.state["baselines"] = float_baselines(ctx, design_recipe(settings))
    folder.save()
    return folder.state["baselines"]


def float_baselines(ctx, recipe) -> dict:
    """The float model on 2,000 validation images (best of 3), and one float training epoch
    on the retraining's images with its batch size: the yardsticks of `cost`."""
    import keras

    from surrogate_nas.data.splits import training_subset
    from surrogate_nas.network.card import load_model

    model = load_model(ctx.model_path)
    splits = design_splits(ctx)
    images = splits.x_val[:2000].astype(np.float32)
    model.predict(images[:256], verbose=0, batch_size=256)
    passes = []
    for _ in range(3):
        began = time.perf_counter()
        model.predict(images, verbose=0, batch_size=500)
        passes.append(time.perf_counter() - began)
    idx = training_subset(splits.y_train, recipe.train_images, 0)
    twin = keras.models.clone_model(model)
    twin.compile(optimizer=keras.optimizers.Adam(1e-3),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    began = time.perf_counter()
    twin.fit(splits.x_train[idx].astype(np.float32), splits.y_train[idx], batch_size=recipe.batch_size, epochs=1,
             verbose=0, shuffle=False)
    return {"float_pass_s": min(passes), "float_train_epoch_s": time.perf_counter() - began,
            "train_images": int(len(idx))}


def design_retrainer(ctx, settings, out: Path):
    from surrogate_nas.evaluation.images import calibration_set
    from surrogate_nas.workflows.design_retrain import Retrainer

    splits = design_splits(ctx)
    ev = ctx.build_evaluator("validation", settings.search_images)  # private: trained in place (tuning images)
    calibration = calibration_set(splits, ctx.data.source_hash, int(ev.card.get("seed", 0)))
    return Retrainer(ev, splits, design_recipe(settings), calibration, ctx.rule_store, out / "retraining", quiet=True)


def retraining_phase(ctx, settings, folder, candidates: list[dict], quiet: bool) -> dict:
    """Phase 4: the race within --retrain-epochs (and --retrain-hours when given: time already
    spent in earlier calls of an interrupted design counts)."""
    from surrogate_nas.workflows.design_retrain import Candidate, race

    cands = [Candidate(**{**c, "genome": tuple(c["genome"])}) for c in candidates]
    if settings.retrain_hours == 0 or settings.retrain_epochs == 0 or not cands:
        return {"candidates": {c.key: {"dropped": "no retraining budget", "histories": {}, "seeds": []} for c in cands},
                "epoch_seconds": None}
    retrainer = design_retrainer(ctx, settings, folder.out)
    deadline = float("inf")
    if settings.retrain_hours is not None:
        spent = sum(h["seconds"] for c in cands for s in range(settings.seeds) for h in retrainer.history(c, s))
        deadline = time.time() + settings.retrain_hours * 3600 - spent
    total = min(settings.retrain_epochs, len(cands) * settings.epochs * settings.seeds)
    with tqdm(total=total, desc="retraining (epochs, at most)", unit="epoch", disable=quiet or None,
              dynamic_ncols=True) as bar:
        result = race(retrainer, cands, retrainer.ev.accuracy((ctx.exact_index,) * len(retrainer.ev.layers)),
                      settings.seeds, deadline, None, bar, max_epochs=settings.retrain_epochs)
    return result


def soup_phase(ctx, settings, folder, candidates: list[dict], race: dict, quiet: bool) -> dict:
    """Phase 5: each candidate with finished retrainings becomes one network (its retraining,
    or the greedy soup of its seeds), saved as `retrained/<key>.keras` with a card."""
    from surrogate_nas.genome import genome_names
    from surrogate_nas.workflows.design_retrain import Candidate, soup_candidate
    from surrogate_nas.workflows.finetune import save_design

    done = {c["key"]: c for c in candidates if race["candidates"][c["key"]].get("seeds")}
    if not done:
        return {}
    retrainer = design_retrainer(ctx, settings, folder.out)
    out = {}
    for key, c in tqdm(done.items(), desc="soups", unit="design", disable=quiet or None, dynamic_ncols=True):
        path = folder.out / "retrained" / f"{key}.keras"
        card_path = path.with_suffix(".json")
        if path.is_file() and card_path.is_file():
            out[key] = json.loads(card_path.read_text())
            continue
        cand = Candidate(**{**c, "genome": tuple(c["genome"])})
        soup = soup_candidate(retrainer, cand, race["candidates"][key]["seeds"])
        card = {"candidate": key, "genome_indices": ",".join(map(str, cand.genome)),
                "genome": ";".join(genome_names(cand.genome, ctx.catalog)), "saving_pct": cand.saving_pct,
                "compensation": ";".join(retrainer.ev.design_labels(cand.genome)), "recipe": retrainer.recipe.to_dict(),
                **soup, "path": f"retrained/{key}.keras"}
        save_design(retrainer.ev, path, card)
        out[key] = card
    return out


def _right(predict, image_set) -> np.ndarray:
    return np.concatenate([np.argmax(np.asarray(predict(image_set.images[i:i + 500].astype(np.float32))), axis=1)
                           == np.asarray(image_set.labels[i:i + 500]) for i in range(0, len(image_set.labels), 500)])


def _loaded(path: Path):
    import keras

    import surrogate_nas.emulation.layers  # noqa: F401  (AxConv2D must be registered to load)

    model = keras.models.load_model(path, compile=False)
    return lambda x: model(x, training=False)


def _source_model(ctx, settings, folder) -> Path:
    """The model `design` started from: --model (before calibration), or the run's model with --from."""
    from surrogate_nas.config import from_record, project_root
    from surrogate_nas.evaluation.inputs import ensure_card

    if settings.model is None:
        return Path(ctx.model_path)
    path = from_record(settings.model, project_root(ctx.paths))
    ensure_card(path, ctx.data)
    return path


def choice_phase(ctx, settings, folder, run_dir: Path, soups: dict, baselines: dict, quiet: bool) -> dict:
    """Phase 6: every search-front point (un-tuned) and every retrained candidate on the
    choosing images; both rules choose; test scores only the chosen ones. Writes
    design.json, design.md, design.png and the run folder's report.html."""
    from surrogate_nas.evaluation.evaluator import Evaluator
    from surrogate_nas.evaluation.images import select_images
    from surrogate_nas.genome import genome_names
    from surrogate_nas.config import portable, project_root
    from surrogate_nas.results.design_choice import choose, entry, plot_design, write_json, write_table
    from surrogate_nas.workflows.finetune import save_design

    splits = design_splits(ctx)
    search, choosing = choosing_images(splits, ctx)
    test = select_images(splits, ctx.data.source_hash, "test", settings.test_images)
    ev = ctx.evaluator  # the search-set twin: never trained, only its circuits are set here
    exact = (ctx.exact_index,) * len(ev.layers)
    ev.set_genome(exact)
    calibrated = {"choosing_accuracy": float(_right(ev._predict, choosing).mean()),
                  "test_accuracy": float(_right(ev._predict, test).mean())}
    source = _source_model(ctx, settings, folder)
    reference = Evaluator.from_paths(source, ctx.catalog, ctx.data, "validation", settings.search_images,
                                     compensation="none", quiet=True)
    reference.set_genome(exact)
    exact_right, exact_test = _right(reference._predict, choosing), _right(reference._predict, test)
    points = []
    front = [p for p in search_front(run_dir) if p["genome"] != exact]
    for p in tqdm(front, desc="front on the choosing images", unit="design", disable=quiet or None):
        ev.set_genome(p["genome"])
        points.append({"genome": p["genome"], "saving_pct": 100 * (1 - ev.energy(p["genome"])), "retrained": False,
                       "right": _right(ev._predict, choosing)})
    for key, card in soups.items():
        genome = tuple(int(v) for v in card["genome_indices"].split(","))
        points.append({"genome": genome, "saving_pct": 100 * (1 - ev.energy(genome)), "retrained": True, "key": key,
                       "design": card["path"], "right": _right(_loaded(folder.out / card["path"]), choosing)})
    chosen = choose(points, exact_right)
    picked = {id(p): p for rule in chosen.values() for p in rule.values() if p is not None}
    for p in picked.values():
        if not p["retrained"]:  # export the un-tuned design as its own .keras file
            name = "untuned-" + "-".join(map(str, p["genome"]))
            p["design"] = f"designs/{name}.keras"
            ev.set_genome(p["genome"])
            save_design(ev, folder.out / p["design"], {"genome_indices": ",".join(map(str, p["genome"])),
                                                       "retrained": False})
        p["test_right"] = _right(_loaded(folder.out / p["design"]), test)  # the exported file itself
        p["circuits"] = genome_names(p["genome"], ctx.catalog)
    retrain = folder.state["phases"].get("retraining") or {}
    phases = dict(folder.state["seconds"])
    doc = {
        "model": ctx.evaluator.card.get("model_name") or Path(ctx.model_path).stem, "seed": settings.seed,
        "settings": folder.state["settings"],
        "reference": {"choosing_accuracy": float(exact_right.mean()), "test_accuracy": float(exact_test.mean()),
                      "test_images": int(len(test.labels)), "model": portable(source, project_root(ctx.paths)),
                      "what": "the all-exact 8-bit network of the model before calibration (its min..max input "
                              "ranges, unclipped kernels): losses are against it"},
        "calibrated_all_exact": calibrated,
        "images": {"search": [int(i) for i in search], "choosing": [int(i) for i in choosing.indices],
                   "split_of_choosing": "validation"},
        "calibration": folder.state["phases"].get("calibration"),
        "chosen": {k: entry(p, exact_test) for k, p in chosen["chosen"].items()},
        "chosen_upper": {k: entry(p, exact_test) for k, p in chosen["chosen_upper"].items()},
        "candidates": folder.state["phases"].get("candidates"),
        "race": {k: {"dropped": v.get("dropped"), "seeds": v.get("seeds"), "serves_pp": v.get("serves_pp")}
                 for k, v in (retrain.get("candidates") or {}).items()},
        "soups": soups,
        "cost": {"wall_s": sum(phases.values()), "float_pass_s": baselines["float_pass_s"],
                 "retrain_epoch_s": retrain.get("epoch_seconds"),
                 "float_train_epoch_s": baselines["float_train_epoch_s"], "phases": phases},
        "rules": {"chosen": "point estimate", "chosen_upper": "upper 95 % bound"},
    }
    write_json(folder.out / "design.json", doc)
    write_table(folder.out / "design.md", doc)
    plot_design(folder.out / "design.png", doc, points)
    try:
        from surrogate_nas.results.report_html import write_run_report

        write_run_report(run_dir, design=doc)
    except Exception as exc:  # the report is a view: a failure to draw it loses no result
        print(f"warning: report.html not written ({type(exc).__name__}: {exc})")
    return doc
