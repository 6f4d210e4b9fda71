"""Retrieval ranks, recalls, chance levels, bootstrap CIs and pool retrieval on constructed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import top_k_accuracy_score

from radfinder.eval._common import EvalInputError
from radfinder.eval.pool_retrieval import pool_retrieval
from radfinder.eval.retrieval import (
    bidirectional_retrieval,
    chance_recall,
    cosine_similarity,
    positives_from_keys,
    recall_curve,
    retrieval_metrics,
    retrieval_ranks,
)


def test_ranks_on_constructed_similarity():
    sim = np.array(
        [
            [0.9, 0.1, 0.2, 0.0],  # own item best -> rank 1
            [0.8, 0.5, 0.7, 0.1],  # two items above -> rank 3
            [0.3, 0.3, 0.3, 0.3],  # all tied -> pessimistic rank 4
            [0.1, 0.9, 0.2, 0.5],  # one above -> rank 2
        ]
    )
    np.testing.assert_array_equal(retrieval_ranks(sim), [1, 3, 4, 2])
    res = retrieval_metrics(np.eye(4), np.eye(4), ks=(1, 2), n_boot=0)  # identity embeddings: all rank 1
    assert res.recall == {1: 1.0, 2: 1.0}


def test_many_to_one_positives_take_best_positive():
    sim = np.array([[0.1, 0.9, 0.5, 0.4], [0.2, 0.3, 0.6, 0.8]])
    # query 0 matches items {2, 3}: best positive 0.5, one negative above -> rank 2
    # query 1 matches item 0 only: three negatives above -> rank 4
    np.testing.assert_array_equal(retrieval_ranks(sim, [[2, 3], 0]), [2, 4])
    pos = positives_from_keys(["a", "b"], ["b", "x", "a", "a"])
    np.testing.assert_array_equal(retrieval_ranks(sim, pos), [2, 4])
    np.testing.assert_array_equal(retrieval_ranks(sim, torch.from_numpy(pos)), [2, 4])
    with pytest.raises(EvalInputError):
        retrieval_ranks(sim)  # not square and no positives
    with pytest.raises(EvalInputError):
        retrieval_ranks(sim, [[2], []])


def test_recall_matches_sklearn_top_k_and_hand_values():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(60, 16))
    txt = img + rng.normal(size=(60, 16)) * 1.5
    res = retrieval_metrics(torch.tensor(txt, dtype=torch.float32), img, ks=(1, 5, 10), n_boot=0)
    sim = cosine_similarity(txt.astype(np.float32), img)
    for k in (1, 5, 10):
        want = top_k_accuracy_score(np.arange(60), sim, k=k, labels=np.arange(60))
        assert res.recall[k] == pytest.approx(want)
    ranks = retrieval_ranks(sim)
    assert res.median_rank == np.median(ranks)
    assert res.mean_rank == pytest.approx(ranks.mean())
    k, curve = recall_curve(ranks, 10)
    assert curve[0] == pytest.approx(res.recall[1]) and curve[4] == pytest.approx(res.recall[5])


def test_chance_recall():
    assert chance_recall(100, 1) == pytest.approx(0.01)
    assert chance_recall(100, 10) == pytest.approx(0.1)
    # two positives among 10, k = 3: 1 - C(8,3)/C(10,3)
    assert chance_recall(10, 3, 2) == pytest.approx(1 - math.comb(8, 3) / math.comb(10, 3))
    assert chance_recall(10, 20) == 1.0


def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(150, 32))
    txt = img + rng.normal(size=(150, 32)) * 2.0
    a = retrieval_metrics(txt, img, ks=(1, 5, 10), n_boot=2000, seed=7)
    b = retrieval_metrics(txt, img, ks=(1, 5, 10), n_boot=2000, seed=7)
    c = retrieval_metrics(txt, img, ks=(1, 5, 10), n_boot=2000, seed=8)
    assert a.ci == b.ci
    assert a.ci != c.ci
    for k in (1, 5, 10):
        lo, hi = a.ci[f"R@{k}"]
        assert lo <= a.recall[k] <= hi and lo < hi
    lo, hi = a.ci["mean_rank"]
    assert lo <= a.mean_rank <= hi
    lo, hi = a.ci["median_rank"]
    assert lo <= a.median_rank <= hi


def test_bidirectional_uses_transposed_positives():
    rng = np.random.default_rng(2)
    vol = rng.normal(size=(6, 8))
    txt = vol[[0, 2, 4]] + 0.01 * rng.normal(size=(3, 8))  # 3 reports, 6 volumes: report i <-> volumes 2i, 2i+1
    pos = [[0, 1], [2, 3], [4, 5]]
    out = bidirectional_retrieval(txt, vol, pos, ks=(1,), n_boot=0)
    assert out["text_to_volume"].recall[1] == 1.0
    assert out["text_to_volume"].n_gallery == 6
    v2t = out["volume_to_text"]
    assert v2t.n_queries == 6 and v2t.n_gallery == 3
    assert v2t.chance[1] == pytest.approx(1 / 3)


def test_pool_retrieval_identity_and_random():
    eye = np.eye(256)
    res = pool_retrieval(eye, eye, pool_sizes=(32, 128), n_repeats=5)
    for s in (32, 128):
        assert res.mean(s, 1) == 1.0 and res.std(s, 1) == 0.0
    d = res.to_dict()
    assert d["pools"]["32"]["n_pools"] == 8 and d["pools"]["128"]["chance"]["R@8"] == pytest.approx(8 / 128)
    rng = np.random.default_rng(3)
    r = pool_retrieval(rng.normal(size=(512, 16)), rng.normal(size=(512, 16)), pool_sizes=(32,), n_repeats=20)
    assert abs(r.mean(32, 8) - 8 / 32) < 0.06  # unrelated embeddings: near chance
    again = pool_retrieval(rng.normal(size=(64, 4)), rng.normal(size=(64, 4)), pool_sizes=(32,), n_repeats=3, seed=42)
    assert again.per_repeat[32].shape == (3, 2)


def test_pool_retrieval_is_seeded():
    rng = np.random.default_rng(4)
    t, v = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    a = pool_retrieval(t, v, pool_sizes=(32, 64), n_repeats=10)
    b = pool_retrieval(t, v, pool_sizes=(64,), n_repeats=10)
    np.testing.assert_array_equal(a.per_repeat[64], b.per_repeat[64])
