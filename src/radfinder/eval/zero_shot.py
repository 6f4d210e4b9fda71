"""Zero-shot binary classification with positive/negative prompt pairs (the CT-RATE "mean7" protocol).

For every finding, the 7 positive prompt embeddings are L2-normalised, averaged and renormalised, and the same
for the 7 negative ones. The probability of the finding for image x is the softmax over the two cosines with no
temperature: p = exp(cos(x, pos)) / (exp(cos(x, pos)) + exp(cos(x, neg))) = sigmoid(cos_pos - cos_neg).
The probabilities are then evaluated with `radfinder.eval.classification.evaluate_scores`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from radfinder.eval._common import EvalInputError, as_numpy, check_finite, l2_normalize
from radfinder.eval.bootstrap import DEFAULT_N_BOOT
from radfinder.eval.classification import ClassificationResult, evaluate_scores

# (positive, negative) templates; {a} is the finding name exactly as in CT-RATE's label columns.
MEAN7_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("{a}.", "No {a}."),
    ("Findings are compatible with {a}.", "Findings are not compatible with {a}."),
    ("There is {a}.", "There is no {a}."),
    ("{a} is seen.", "{a} is not seen."),
    ("{a}.", "Not {a}."),
    ("{a} is observed.", "{a} is not observed."),
    ("{a} is present.", "{a} is not present."),
)


def mean7_prompts(finding: str) -> tuple[list[str], list[str]]:
    """The 7 positive and 7 negative prompt strings for one finding name."""
    return [p.format(a=finding) for p, _ in MEAN7_TEMPLATES], [n.format(a=finding) for _, n in MEAN7_TEMPLATES]


def mean_prompt_embeddings(prompt_emb: Any) -> np.ndarray:
    """(F, T, D) prompt embeddings -> (F, D): normalise each, average over T, renormalise. (F, D) passes
    through (normalised)."""
    e = as_numpy(prompt_emb, name="prompt embeddings")
    check_finite(e, "prompt embeddings")
    if e.ndim == 2:
        return l2_normalize(e)
    if e.ndim != 3:
        raise EvalInputError(f"prompt embeddings must be (findings, templates, dim) or (findings, dim), got {e.shape}")
    return l2_normalize(l2_normalize(e).mean(axis=1))


def zero_shot_probabilities(image_emb: Any, pos_emb: Any, neg_emb: Any) -> np.ndarray:
    """(N, F) p(positive) from image embeddings (N, D) and positive/negative prompt embeddings, each (F, T, D)
    (averaged as mean7) or already-averaged (F, D)."""
    img = l2_normalize(as_numpy(image_emb, name="image embeddings"))
    check_finite(img, "image embeddings")
    pos = mean_prompt_embeddings(pos_emb)
    neg = mean_prompt_embeddings(neg_emb)
    if img.ndim != 2 or pos.shape != neg.shape or pos.shape[1] != img.shape[1]:
        raise EvalInputError(
            f"shape mismatch: image {img.shape}, positive prompts {pos.shape}, negative prompts {neg.shape}"
        )
    diff = img @ pos.T - img @ neg.T
    return 1.0 / (1.0 + np.exp(-diff))


def evaluate_zero_shot(
    image_emb: Any,
    pos_emb: Any,
    neg_emb: Any,
    labels: Any,
    names: Sequence[str] | None = None,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    ci_level: float = 0.95,
) -> ClassificationResult:
    """Zero-shot probabilities (see `zero_shot_probabilities`) evaluated against 1/0/-1 labels (N, F)."""
    probs = zero_shot_probabilities(image_emb, pos_emb, neg_emb)
    return evaluate_scores(probs, labels, names, n_boot=n_boot, seed=seed, ci_level=ci_level)
