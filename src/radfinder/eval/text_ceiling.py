"""The text side's ceiling: zero-shot scored on each volume's own report instead of its image.

Every image-side zero-shot figure is bounded by how well the text tower separates a finding's positive prompts from
its negative ones in the reports' own language. `text_ceiling` replaces each volume's image embedding by its own
report's embedding and scores the same mean7 prompt pairs against the same labels: a model whose image embedding
matched its report perfectly would reach this figure, and no better. `space="report"` measures the model as it is
used (text tower + report head); `space="tower"` the tower's pooled features alone (no head), which is how a text
tower that nothing was trained on, e.g. the bundled MiniLM, reads the reports.

`negation_probe` gives the cosine of a few sentence / negated-sentence pairs: a tower that reads negation puts them
far apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..text.findings import CTRATE_FINDINGS
from .bootstrap import DEFAULT_N_BOOT
from .classification import ClassificationResult
from .embed import embed_texts
from .zero_shot import MEAN7_TEMPLATES, evaluate_zero_shot

NEGATION_PAIRS: tuple[tuple[str, str], ...] = (
    ("Pleural effusion is present.", "No pleural effusion."),
    ("Emphysema.", "No emphysema."),
)
SPACES = ("report", "tower")


@torch.no_grad()
def tower_features(model, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """(n, hidden) pooled text-tower features, no projection head."""
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        tok = model.tokenize(list(texts[i : i + batch_size]))
        out.append(model.text_features(tok["input_ids"], tok["attention_mask"]).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, int(model.config.text.hidden_size)), np.float32)


def embed(model, texts: Sequence[str], space: str) -> np.ndarray:
    if space == "report":
        return embed_texts(model, texts)
    if space == "tower":
        return tower_features(model, texts)
    raise ValueError(f"space must be one of {SPACES}, got {space!r}")


def text_ceiling(model, records: Sequence[Any], labels: np.ndarray | None = None,
                 names: Sequence[str] = CTRATE_FINDINGS, *, space: str = "report", n_boot: int = DEFAULT_N_BOOT,
                 seed: int = 0) -> ClassificationResult:
    """Mean7 zero-shot of each record's own report text (in `space`) against `labels` (N, F; default the records'
    own)."""
    names = list(names)
    reports = embed(model, [r.report_text for r in records], space)
    pos = [p.format(a=n) for n in names for p, _ in MEAN7_TEMPLATES]
    neg = [q.format(a=n) for n in names for _, q in MEAN7_TEMPLATES]
    shape = (len(names), len(MEAN7_TEMPLATES), -1)
    y = np.stack([np.asarray(r.labels) for r in records]) if labels is None else np.asarray(labels)
    return evaluate_zero_shot(reports, embed(model, pos, space).reshape(shape), embed(model, neg, space).reshape(shape),
                              y, names, n_boot=n_boot, seed=seed)


def negation_probe(model, space: str = "report", pairs=NEGATION_PAIRS) -> dict[str, float]:
    """{"<a> | <b>": cosine} for each (sentence, negated sentence) pair."""
    out = {}
    for a, b in pairs:
        e = embed(model, [a, b], space).astype(np.float64)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        out[f"{a} | {b}"] = round(float(e[0] @ e[1]), 4)
    return out
