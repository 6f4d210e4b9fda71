"""Anatomy-level zero-shot classification (fVLM's protocol): each finding is scored on the embedding of the anatomy it
belongs to, with one short prompt pair ("Emphysema." vs "Not Emphysema."), softmax over the pair.

Findings map to anatomies by `radfinder.text.anatomy.FINDING_ANATOMY` (fVLM's released evaluation: 16 of the 18
CT-RATE findings; Medical material and Lymphadenopathy have no anatomy and are not scored). For study n, finding f
in anatomy a(f):

    p(f | n) = softmax( [cos(img[n, a], neg_f), cos(img[n, a], pos_f)] / temperature )[1]
             = sigmoid( (cos_pos - cos_neg) / temperature )

The temperature only rescales (AUROC does not depend on it). Per-finding AUROC, macro AUROC over the scored
findings and the Youden-J metrics come from `radfinder.eval.classification.evaluate_scores`.

Which studies count: every study whose anatomy a(f) has voxels (`valid`); fVLM's release scores every such study
(it crops a window around the organ's mask rather than dropping an organ the field of view cuts). A cut anatomy is
embedded from its visible part. With `cut` given, the result also holds the same figures over the uncut studies
alone (`AnatomyZeroShotResult.uncut`), so the effect of the cut ones shows.

Prompt wording: the pairs of fVLM's released evaluation, "{name}." / "Not {name}." with the finding's name except
for Atelectasis ("Atelectatic."), Lung nodule ("Nodule.") and Lung opacity ("Opacity."); `PROMPT_NAMES` holds the
exceptions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from radfinder.eval._common import EvalInputError, as_numpy, check_finite, clean_number, l2_normalize
from radfinder.eval.bootstrap import DEFAULT_N_BOOT
from radfinder.eval.classification import ClassificationResult, evaluate_scores
from radfinder.text.anatomy import FINDING_ANATOMY
from radfinder.text.findings import CTRATE_FINDINGS

ANATOMIES: tuple[str, ...] = ("lung", "heart", "esophagus", "aorta")
# fVLM's released wording where it is not the finding's CT-RATE name (its evaluation prompts the lung anatomy,
# so "Lung" is dropped from two of them).
PROMPT_NAMES: dict[str, str] = {"Atelectasis": "Atelectatic", "Lung nodule": "Nodule", "Lung opacity": "Opacity"}


@dataclass(frozen=True)
class AnatomyPrompt:
    finding: str
    anatomy: str
    positive: str
    negative: str


def anatomy_prompts(
    findings: Sequence[str] = CTRATE_FINDINGS, mapping: dict[str, str | None] | None = None
) -> list[AnatomyPrompt]:
    """The prompt pair of every finding that has an anatomy, in the order of `findings`."""
    mapping = FINDING_ANATOMY if mapping is None else mapping
    out = []
    for f in findings:
        a = mapping.get(f)
        if a:
            name = PROMPT_NAMES.get(f, f)
            out.append(AnatomyPrompt(f, a, f"{name}.", f"Not {name}."))
    return out


def unmapped_findings(
    findings: Sequence[str] = CTRATE_FINDINGS, mapping: dict[str, str | None] | None = None
) -> list[str]:
    """Findings without an anatomy (not scored): Medical material and Lymphadenopathy for the CT-RATE 18."""
    mapping = FINDING_ANATOMY if mapping is None else mapping
    return [f for f in findings if not mapping.get(f)]


def anatomy_zero_shot_probabilities(
    image_emb: Any, pos_emb: Any, neg_emb: Any, finding_anatomy: Sequence[int], temperature: float = 1.0
) -> np.ndarray:
    """(N, F) p(positive) from anatomy image embeddings (N, A, D), prompt embeddings (F, D) each, and the anatomy
    index (into A) of each of the F findings."""
    img = as_numpy(image_emb, name="anatomy image embeddings")
    pos = as_numpy(pos_emb, name="positive prompt embeddings")
    neg = as_numpy(neg_emb, name="negative prompt embeddings")
    idx = np.asarray(finding_anatomy, dtype=np.int64)
    if img.ndim != 3 or pos.ndim != 2 or pos.shape != neg.shape or pos.shape[1] != img.shape[2]:
        raise EvalInputError(f"shape mismatch: images {img.shape} (N, A, D), prompts {pos.shape} / {neg.shape} (F, D)")
    if idx.shape != (pos.shape[0],) or (idx.size and (idx.min() < 0 or idx.max() >= img.shape[1])):
        raise EvalInputError(f"finding_anatomy must hold {pos.shape[0]} indices into {img.shape[1]} anatomies")
    if not temperature > 0:
        raise EvalInputError(f"temperature must be > 0, got {temperature}")
    for arr, name in ((img, "image embeddings"), (pos, "positive prompts"), (neg, "negative prompts")):
        check_finite(arr, name)
    img, pos, neg = l2_normalize(img), l2_normalize(pos), l2_normalize(neg)
    sel = img[:, idx, :]  # (N, F, D): each finding's anatomy embedding
    diff = (np.einsum("nfd,fd->nf", sel, pos) - np.einsum("nfd,fd->nf", sel, neg)) / temperature
    return 1.0 / (1.0 + np.exp(-diff))


@dataclass
class AnatomyZeroShotResult:
    """classification: over every study whose anatomy has voxels; uncut: the same over the studies whose anatomy
    is not cut (None when no cut flags were given)."""

    classification: ClassificationResult
    prompts: list[AnatomyPrompt]
    unmapped: list[str]
    uncut: ClassificationResult | None = None

    @property
    def macro_auroc(self) -> float:
        return self.classification.macro_auroc

    def per_finding_auroc(self) -> dict[str, float]:
        return {n: m.auroc for n, m in self.classification.findings.items()}

    def to_dict(self) -> dict[str, Any]:
        d = self.classification.to_dict()
        d["unmapped"] = list(self.unmapped)
        d["anatomy_of"] = {p.finding: p.anatomy for p in self.prompts}
        d["macro_auroc"] = clean_number(self.macro_auroc)
        if self.uncut is not None:
            u = self.uncut.to_dict()
            d["uncut"] = {"macro_auroc": clean_number(self.uncut.macro_auroc), "macro_auroc_ci": u["macro_auroc_ci"],
                          "n_findings": u["n_findings"],
                          "per_finding": {k: {"n": v["n"], "n_pos": v["n_pos"], "n_neg": v["n_neg"],
                                              "auroc": v["auroc"], "auroc_ci": v["auroc_ci"]}
                                          for k, v in u["per_finding"].items()},
                          "skipped": u["skipped"]}  # fmt: skip
        return d


def evaluate_anatomy_zero_shot(
    image_emb: Any,
    pos_emb: Any,
    neg_emb: Any,
    labels: Any,
    *,
    anatomies: Sequence[str] = ANATOMIES,
    valid: Any = None,
    cut: Any = None,
    findings: Sequence[str] = CTRATE_FINDINGS,
    mapping: dict[str, str | None] | None = None,
    temperature: float = 1.0,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    ci_level: float = 0.95,
) -> AnatomyZeroShotResult:
    """Per-finding and macro AUROC of anatomy-level zero-shot scores.

    image_emb: (N, A, D) anatomy embeddings in the order of `anatomies`; pos_emb / neg_emb: (F, D) embeddings of
    `anatomy_prompts(findings, mapping)` (F = mapped findings, in that order); labels: (N, len(findings)) 1/0/-1
    for every finding (unmapped columns are ignored); valid: (N, A) bool, False = the anatomy has no voxels (those
    studies are left out of the findings of that anatomy); cut: (N, A) bool, True = the anatomy is cut (still
    scored; with it the result's `uncut` leaves those studies out as well).
    """
    prompts = anatomy_prompts(findings, mapping)
    a_index = {a: i for i, a in enumerate(anatomies)}
    missing = sorted({p.anatomy for p in prompts} - set(a_index))
    if missing:
        raise EvalInputError(f"findings map to anatomies not in the embeddings: {missing}")
    y = as_numpy(labels, name="labels")
    img = as_numpy(image_emb, name="anatomy image embeddings")
    if y.ndim != 2 or y.shape[1] != len(findings) or y.shape[0] != img.shape[0]:
        raise EvalInputError(f"labels must be ({img.shape[0]}, {len(findings)}), got {y.shape}")
    cols = [list(findings).index(p.finding) for p in prompts]
    idx = [a_index[p.anatomy] for p in prompts]
    probs = anatomy_zero_shot_probabilities(img, pos_emb, neg_emb, idx, temperature)
    y = y[:, cols].copy()
    names = [p.finding for p in prompts]
    if valid is not None:
        y[~_flags(valid, "valid", img.shape[:2])[:, idx]] = -1
    res = evaluate_scores(probs, y, names, n_boot=n_boot, seed=seed, ci_level=ci_level)
    uncut = None
    if cut is not None:
        y_uncut = y.copy()
        y_uncut[_flags(cut, "cut", img.shape[:2])[:, idx]] = -1
        uncut = evaluate_scores(probs, y_uncut, names, n_boot=n_boot, seed=seed, ci_level=ci_level)
    return AnatomyZeroShotResult(res, prompts, unmapped_findings(findings, mapping), uncut)


def _flags(x: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    v = np.asarray(x, dtype=bool)
    if v.shape != tuple(shape):
        raise EvalInputError(f"{name} must be {tuple(shape)} (N, A), got {v.shape}")
    return v
