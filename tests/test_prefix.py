"""Reuse of shared-prefix activations (evaluation.prefix): bit-identical logits to the
whole network, reuse where genomes share first layers, never stale after a weight
change, cuts only where one tensor carries the state. Tiny real models, no mocks."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import CIRCUITS, EXACT_INDEX

from surrogate_nas.errors import UserError
from surrogate_nas.evaluation.prefix import ActivationCache, budget_bytes, model_stages


def _whole_logits(evaluator, images):
    return np.asarray(evaluator._predict(tf.constant(images)))


def test_staged_logits_equal_the_whole_network_bit_for_bit_and_reuse_prefixes(evaluator, catalog):
    stages = model_stages(evaluator.model, evaluator.layers)
    assert len(stages) == len(evaluator.layers)  # a chain: a cut before every conv but the first
    cache = ActivationCache(stages, 1 << 30)
    images = evaluator._images[:16]
    names = [c for c in CIRCUITS if c != "exact"]
    other = catalog.index(names[0])
    genomes = [(EXACT_INDEX,) * 5, (EXACT_INDEX,) * 4 + (other,), (EXACT_INDEX, other, other, EXACT_INDEX, other),
               (EXACT_INDEX, other, other, other, EXACT_INDEX), (other,) * 5]
    reused = []
    for genome in genomes:
        evaluator.set_genome(genome)
        before = cache.stages_reused
        staged = np.asarray(cache.logits(images, "batch", cache.digests()))
        reused.append(cache.stages_reused - before)
        assert np.array_equal(staged, _whole_logits(evaluator, images)), genome
    # stages skipped = length of the prefix shared with a genome scored before
    assert reused == [0, 4, 1, 3, 0]


def test_a_changed_weight_is_never_served_from_kept_activations(evaluator, catalog):
    cache = ActivationCache(model_stages(evaluator.model, evaluator.layers), 1 << 30)
    images = evaluator._images[:8]
    evaluator.set_genome((EXACT_INDEX,) * 5)
    cache.logits(images, "batch", cache.digests())
    conv1 = evaluator.layers[0]
    kept = conv1.kernel.numpy()
    try:
        conv1.kernel.assign(kept * 1.5)  # as retraining would, without telling anyone
        before = cache.stages_reused
        staged = np.asarray(cache.logits(images, "batch", cache.digests()))
        assert cache.stages_reused == before
        assert np.array_equal(staged, _whole_logits(evaluator, images))
    finally:
        conv1.kernel.assign(kept)


def test_kept_activations_stay_within_their_budget(evaluator):
    from surrogate_nas.evaluation import prefix

    stages = model_stages(evaluator.model, evaluator.layers)
    images = evaluator._images[:4]
    # the first cut's activation of 4 images, by hand from the model's shapes
    first = int(np.prod(evaluator.layers[1].input.shape[1:])) * 4 * len(images)
    held = prefix._PROCESS_BYTES[0]  # what other evaluators of this test process keep
    cache = ActivationCache(stages, held + first + 1)
    evaluator.set_genome((EXACT_INDEX,) * 5)
    cache.logits(images, "batch", cache.digests())
    assert 0 < cache._bytes <= first + 1
    cache.clear()


def test_cuts_skip_tensors_that_a_residual_branch_bypasses():
    from test_any_model import residual3

    from surrogate_nas.network.twin import build_approx_model

    twin = build_approx_model(residual3())
    convs = [layer for layer in twin.layers if type(layer).__name__ == "AxConv2D"]
    assert [c.name for c in convs] == ["stem", "res_a", "res_b"]
    stages = model_stages(twin, convs)
    # res_a's input feeds both the branch and the Add: a cut; res_b's input is bypassed
    assert len(stages) == 2
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    whole = np.asarray(tf.function(lambda v: twin(v, training=False), autograph=False)(x))  # graph, as scored
    assert np.array_equal(np.asarray(stages[1].run(stages[0].run(x))), whole)


def test_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("SURROGATE_NAS_ACTIVATION_CACHE_MB", "0")
    assert budget_bytes() == 0
    monkeypatch.setenv("SURROGATE_NAS_ACTIVATION_CACHE_MB", "1.5")
    assert budget_bytes() == 1572864
    monkeypatch.setenv("SURROGATE_NAS_ACTIVATION_CACHE_MB", "lots")
    with pytest.raises(UserError, match="SURROGATE_NAS_ACTIVATION_CACHE_MB"):
        budget_bytes()


def test_the_budget_caps_all_caches_of_a_process_together(evaluator):
    from surrogate_nas.evaluation import prefix

    stages = model_stages(evaluator.model, evaluator.layers)
    images = evaluator._images[:4]
    first = int(np.prod(evaluator.layers[1].input.shape[1:])) * 4 * len(images)
    start = prefix._PROCESS_BYTES[0]
    a, b = ActivationCache(stages, start + 3 * first), ActivationCache(stages, start + 3 * first)
    evaluator.set_genome((EXACT_INDEX,) * 5)
    a.logits(images, "batch", a.digests())
    b.logits(images, "batch", b.digests())
    assert a._bytes > 0 and prefix._PROCESS_BYTES[0] - start == a._bytes + b._bytes <= 3 * first
    a.clear()
    b.clear()
    assert prefix._PROCESS_BYTES[0] == start
