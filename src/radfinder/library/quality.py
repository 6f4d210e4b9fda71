"""`finding_precision`: does searching the library for a finding's sentence rank the studies that have it first?

For each finding with at least one positive and one negative labelled study, the query is the finding's first
positive zero-shot prompt sentence (e.g. "Lung nodule."), searched as `Library.search` does (over the scans: the
finding's zero-shot score; over the reports: similarity to the stored reports' embeddings); precision@k is the
share of the top k results whose label for that finding is 1. The chance level is the share of labelled-positive
studies among all labelled studies (the expected precision of a random ranking). Studies whose label is unknown
(-1) are left out of both (they are neither hits nor misses). `split` restricts the ranking to the library's
studies of one split (e.g. the held-out split, when the library also holds the model's training studies).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..text.prompts import load_prompt_bank
from .search import Library


def finding_precision(library: Library, findings: list[str] | None = None, k: int = 10, over: str = "image",
                      split: str | None = None, prompt_bank=None) -> dict[str, Any]:
    """Per-finding precision@k of a sentence search and its chance level; means over the findings scored."""
    bank = load_prompt_bank(prompt_bank)
    names = list(findings) if findings else list(library.findings)
    ids, _ = library.store.vectors("retrieval", library.dim)
    rows = {r.id: r for r in library.store.rows([int(i) for i in ids], embeddings=False)}
    if split is not None:
        rows = {i: r for i, r in rows.items() if r.split == split}
    per = {}
    for name in names:
        col = library.findings.index(name)
        labels = {i: r.labels[col] for i, r in rows.items() if r.labels[col] >= 0}
        n_pos = sum(1 for v in labels.values() if v == 1)
        if n_pos == 0 or n_pos == len(labels):
            continue
        sentence = bank.zero_shot_pairs(name)[0][0]
        hits, _ = library.rank(sentence, over, None, [])
        ranked = [i for i, _ in hits if i in labels]  # every study, best first
        kk = min(k, len(labels))
        prec = float(np.mean([labels[i] == 1 for i in ranked[:kk]]))
        per[name] = {"sentence": sentence, "k": kk, "precision": prec, "chance": n_pos / len(labels),
                     "positives": n_pos, "labelled": len(labels)}  # fmt: skip
    vals = [v["precision"] for v in per.values()]
    chance = [v["chance"] for v in per.values()]
    return {"k": k, "over": over, "split": split, "findings": per,
            "mean_precision": float(np.mean(vals)) if vals else None,
            "mean_chance": float(np.mean(chance)) if chance else None}  # fmt: skip
