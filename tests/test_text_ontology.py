"""The finding ontology and the soft-target weights built from it: coverage of the 18 CT-RATE findings, structure,
no invented codes, weighted Jaccard against a brute-force count, and the assembled soft targets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from radfinder.errors import ConfigError
from radfinder.losses import LossInputError
from radfinder.losses.soft_targets import report_soft_targets, set_jaccard, soft_targets, spatial_similarity
from radfinder.text.anatomy import FINDING_ANATOMY
from radfinder.text.findings import CTRATE_FINDINGS
from radfinder.text.ontology import knowledge_similarity, load_ontology, weighted_jaccard


def test_covers_ctrate_findings_with_hierarchy_and_synonyms():
    o = load_ontology()
    assert set(o.findings) == set(CTRATE_FINDINGS)
    for f in CTRATE_FINDINGS:
        c = o.concepts[f]
        assert c.radlex is None and c.snomed is None  # no unverified external codes
        assert o.synonyms(f, "en") and o.synonyms(f, "de")
        h = o.hierarchy(f)
        assert h["categories"], f  # finding -> category
        assert o.fvlm_anatomy(f) == FINDING_ANATOMY[f], f  # agrees with fVLM's grouping
    assert o.hierarchy("Lung nodule") == {"categories": ["pulmonary lesion"], "anatomies": ["lung"]}
    assert o.hierarchy("Pleural effusion")["anatomies"] == ["pleura", "lung"]
    assert o.hierarchy("Lymphadenopathy")["anatomies"] == ["lymph nodes"]
    assert o.hierarchy("Medical material")["anatomies"] == []


def test_bad_ontologies_are_refused(tmp_path):
    p = tmp_path / "o.yaml"
    p.write_text("concepts:\n  root: {kind: root, parents: []}\n  a: {kind: category, parents: [b]}\n"
                 "  b: {kind: category, parents: [a]}\n")  # fmt: skip
    with pytest.raises(ConfigError, match="cycle"):
        load_ontology(p)
    p.write_text("concepts:\n  root: {kind: root, parents: []}\n  a: {kind: finding, parents: [nowhere]}\n")
    with pytest.raises(ConfigError, match="unknown parent"):
        load_ontology(p)
    p.write_text("concepts:\n  root: {kind: root, parents: []}\n  a: {kind: finding, parents: [root], snomed: 123}\n")
    with pytest.raises(ConfigError, match="snomed"):
        load_ontology(p)


def _brute_weighted_jaccard(o, fa, fb, empty=1.0):
    """Concept sets by walking parents to the root, weights = longest path length to the root."""

    def up(n):
        seen, todo = set(), [n]
        while todo:
            x = todo.pop()
            if x not in seen:
                seen.add(x)
                todo += list(o.concepts[x].parents)
        return {x for x in seen if o.concepts[x].parents}  # drop the root

    def depth(n):
        ps = o.concepts[n].parents
        return 0 if not ps else 1 + max(depth(p) for p in ps)

    a = set().union(*[up(f) for f in fa]) if fa else set()
    b = set().union(*[up(f) for f in fb]) if fb else set()
    if not a and not b:
        return empty
    return sum(depth(c) for c in a & b) / sum(depth(c) for c in a | b)


def test_knowledge_similarity_against_brute_force():
    o = load_ontology()
    rng = np.random.default_rng(0)
    y = (rng.random((12, 18)) < 0.15).astype(int)
    y[0] = 0
    y[1] = 0
    y[2, 3] = -1  # unknown counts as not positive
    k = knowledge_similarity(y, CTRATE_FINDINGS, o)
    for i, j in itertools.product(range(12), repeat=2):
        fa = [f for f, v in zip(CTRATE_FINDINGS, y[i], strict=True) if v == 1]
        fb = [f for f, v in zip(CTRATE_FINDINGS, y[j], strict=True) if v == 1]
        assert k[i, j] == pytest.approx(_brute_weighted_jaccard(o, fa, fb), abs=1e-12)
    assert np.allclose(k, k.T) and np.allclose(np.diag(k), 1.0) and k[0, 1] == 1.0
    # related findings are closer than unrelated ones
    one = lambda f: np.array([[int(x == f) for x in CTRATE_FINDINGS]])  # noqa: E731
    sim = lambda f, g: knowledge_similarity(np.vstack([one(f), one(g)]), CTRATE_FINDINGS, o)[0, 1]  # noqa: E731
    assert (
        sim("Lung opacity", "Consolidation") > sim("Lung opacity", "Lung nodule") > sim("Lung opacity", "Cardiomegaly")
    )
    assert sim("Lung opacity", "Cardiomegaly") == 0.0
    assert weighted_jaccard(frozenset(), frozenset(), o, empty=0.25) == 0.25


def test_soft_targets():
    flags = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], bool)
    s = spatial_similarity(flags)
    assert s[0, 1] == 0.5 and s[2, 3] == 1.0 and s[0, 2] == 0.0
    assert np.array_equal(set_jaccard(flags, empty=0.0)[2, 3], 0.0)
    k = np.full((4, 4), 0.2)
    w = soft_targets(4, alpha=0.5, beta=0.5, gamma=2.0, spatial=s, knowledge=k)
    assert w.dtype == torch.float64
    m = 0.5 * s + 0.4
    np.fill_diagonal(m, 0.0)
    np.testing.assert_allclose(w.numpy(), 0.5 * np.eye(4) + 0.5 * m / m.sum(1, keepdims=True))
    with pytest.raises(LossInputError):
        soft_targets(4, alpha=0.5, beta=1.0)
    with pytest.raises(LossInputError):
        soft_targets(4, alpha=-1.0)
    y = np.zeros((4, 18), int)
    y[0, 9] = y[1, 9] = 1
    r, r_t2i = report_soft_targets(y, CTRATE_FINDINGS, flags)
    assert r.shape == (4, 4) and r[0, 1] > r[0, 2] and torch.allclose(r, r_t2i)
