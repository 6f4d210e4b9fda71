"""Fitting the per-finding zero-shot calibration (`radfinder.models.calibration`) of a trained model.

The margins are the zero-shot protocol's own (mean7 prompts, `eval.zero_shot`), computed on a TRAINING split's
volumes; the targets are the labels the rule labeler reads from those volumes' own reports (or report-derived
labels passed in), never ground truth and never the split the model is evaluated on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..models.calibration import FindingCalibration
from ..text.findings import CTRATE_FINDINGS
from ._common import l2_normalize
from .embed import EmbeddedVolumes
from .zero_shot import mean_prompt_embeddings


def zero_shot_margins(disease: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """(N, F) cos(x, mean positive prompt) - cos(x, mean negative prompt); sigmoid of it is the raw probability of
    `eval.zero_shot.zero_shot_probabilities`."""
    img = l2_normalize(np.asarray(disease, np.float64))
    return img @ mean_prompt_embeddings(pos).T - img @ mean_prompt_embeddings(neg).T


def calibration_inputs(
    model, train_records: Sequence[Any], *, features=None, labels: np.ndarray | None = None,
    emb: EmbeddedVolumes | None = None, findings: Sequence[str] | None = None, show_progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[str], list[Any]]:
    """(margins (N, F), labels (N, F), findings, records used) of `fit_calibration`."""
    from .generation.fit import embed_records, report_labels
    from .tasks import prompt_embeddings

    names = list(findings) if findings is not None else list(
        getattr(getattr(model, "label_vocabulary", None), "findings", None) or CTRATE_FINDINGS)
    recs = [r for r in train_records if r.has_report] if labels is None else list(train_records)
    if not recs:
        raise ValueError("no training record with a report to calibrate on")
    if emb is None or len(emb.keys) != len(recs):
        emb = embed_records(model, recs, features, show_progress)
    y = report_labels(recs, findings=names) if labels is None else np.asarray(labels, np.float64)
    pos, neg = prompt_embeddings(model, names)
    return zero_shot_margins(emb.disease, pos, neg), y, names, recs


def fit_calibration(
    model, train_records: Sequence[Any], *, features=None, labels: np.ndarray | None = None,
    emb: EmbeddedVolumes | None = None, findings: Sequence[str] | None = None, show_progress: bool = False,
) -> FindingCalibration:
    """Platt scale and bias per finding on `train_records` (see the module doc). `labels`: (N, F) 1/0/-1 labels
    derived from these records' reports (default: the rule labeler on each record's findings and impressions);
    `emb`: their embeddings when already computed; `features`: a feature cache to embed from."""
    from .generation.fit import model_hash

    margins, y, names, recs = calibration_inputs(model, train_records, features=features, labels=labels, emb=emb,
                                                 findings=findings, show_progress=show_progress)  # fmt: skip
    meta = {"model_hash": model_hash(model), "model_source": str(getattr(model, "source", "") or ""),
            "splits": sorted({str(r.split) for r in recs}), "prompts": "mean7",
            "labels": "rule labeler on each record's own report" if labels is None else "given (report-derived)"}
    return FindingCalibration.fit(margins, y, names, meta)
