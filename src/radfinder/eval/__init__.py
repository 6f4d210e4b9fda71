"""Evaluation: metrics and tasks on plain arrays (numpy or torch), plus metrics.json and the HTML report.

Tasks (model-agnostic; callers supply embeddings, scores and labels):
- `retrieval`: text-to-volume / volume-to-text recall@k, ranks, chance levels, bootstrap CIs;
- `pool_retrieval`: Merlin-style recall@k inside random pools;
- `zero_shot` / `classification`: mean7 prompt scoring and per-finding / macro AUROC with Youden-J metrics;
- `radchestct`: the Rad-ChestCT label mapping and 16-class standard protocol;
- `localization`: snippet depth localization with middle and random baselines;
- `anatomy_zero_shot`: fVLM's anatomy-level zero-shot protocol (short prompt pairs on anatomy embeddings).
Figures and reports (`plots`, `grounding`, `report`) import matplotlib and are not re-exported here.
"""

from radfinder.eval._common import EvalInputError
from radfinder.eval.anatomy_zero_shot import anatomy_prompts, evaluate_anatomy_zero_shot
from radfinder.eval.classification import ClassificationResult, evaluate_scores
from radfinder.eval.localization import LocalizationResult, localization_metrics
from radfinder.eval.pool_retrieval import PoolRetrievalResult, pool_retrieval
from radfinder.eval.radchestct import (
    RADCHESTCT_STANDARD_FINDINGS,
    RADCHESTCT_TO_CTRATE18,
    evaluate_radchestct_standard,
    radchestct_to_ctrate18,
)
from radfinder.eval.retrieval import RetrievalResult, bidirectional_retrieval, retrieval_metrics
from radfinder.eval.zero_shot import evaluate_zero_shot, zero_shot_probabilities

__all__ = [
    "RADCHESTCT_STANDARD_FINDINGS",
    "RADCHESTCT_TO_CTRATE18",
    "ClassificationResult",
    "EvalInputError",
    "LocalizationResult",
    "PoolRetrievalResult",
    "RetrievalResult",
    "anatomy_prompts",
    "bidirectional_retrieval",
    "evaluate_anatomy_zero_shot",
    "evaluate_radchestct_standard",
    "evaluate_scores",
    "evaluate_zero_shot",
    "localization_metrics",
    "pool_retrieval",
    "radchestct_to_ctrate18",
    "retrieval_metrics",
    "zero_shot_probabilities",
]
