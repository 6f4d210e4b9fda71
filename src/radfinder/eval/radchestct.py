"""Rad-ChestCT "standard" zero-shot protocol: native labels -> CT-RATE-18 -> 16 classes.

Native ``abnormality*location`` labels are mapped to the 18 CT-RATE classes by
`radfinder.text.radchestct_labels` (the mapping table and its provenance live there). Protocol (CT-CLIP standard):
the prediction for Arterial wall calcification becomes max(arterial, coronary); Coronary artery wall
calcification and Mosaic attenuation pattern are dropped, leaving 16 classes; macro AUROC.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from radfinder.eval._common import EvalInputError, as_numpy
from radfinder.eval.bootstrap import DEFAULT_N_BOOT
from radfinder.eval.classification import ClassificationResult, evaluate_scores
from radfinder.text.findings import CTRATE_FINDINGS
from radfinder.text.radchestct_labels import (  # noqa: F401  (re-exported: the protocol's public vocabulary)
    ARTERIAL,
    CORONARY,
    INFERRED_ONE_TO_ONE,
    MOSAIC,
    RADCHESTCT_STANDARD_FINDINGS,
    RADCHESTCT_TO_CTRATE18,
    LabelMapError,
    radchestct_to_ctrate18,
)


def radchestct_standard_scores(scores18: Any) -> np.ndarray:
    """(N, 18) CT-RATE-ordered scores -> (N, 16): arterial := max(arterial, coronary); coronary, mosaic dropped."""
    s = as_numpy(scores18, name="scores")
    if s.ndim != 2 or s.shape[1] != len(CTRATE_FINDINGS):
        raise EvalInputError(f"scores must be (N, {len(CTRATE_FINDINGS)}) in CT-RATE order, got {s.shape}")
    s = s.copy()
    a, c = CTRATE_FINDINGS.index(ARTERIAL), CTRATE_FINDINGS.index(CORONARY)
    s[:, a] = np.maximum(s[:, a], s[:, c])
    return s[:, _standard_columns()]


def radchestct_standard_labels(labels18: Any) -> np.ndarray:
    """(N, 18) CT-RATE-ordered labels -> the 16 protocol classes."""
    y = as_numpy(labels18, name="labels")
    if y.ndim != 2 or y.shape[1] != len(CTRATE_FINDINGS):
        raise EvalInputError(f"labels must be (N, {len(CTRATE_FINDINGS)}) in CT-RATE order, got {y.shape}")
    return y[:, _standard_columns()]


def _standard_columns() -> list[int]:
    return [CTRATE_FINDINGS.index(f) for f in RADCHESTCT_STANDARD_FINDINGS]


def evaluate_radchestct_standard(
    scores18: Any,
    labels18: Any,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    ci_level: float = 0.95,
) -> ClassificationResult:
    """The 16-class Rad-ChestCT standard protocol on CT-RATE-ordered scores and (mapped) labels."""
    return evaluate_scores(
        radchestct_standard_scores(scores18),
        radchestct_standard_labels(labels18),
        RADCHESTCT_STANDARD_FINDINGS,
        n_boot=n_boot,
        seed=seed,
        ci_level=ci_level,
    )
