"""Task runners: a model plus a dataset in, the metric API's results out (method notes 1.7).

Each runner takes already-embedded volumes (`radfinder.eval.embed.embed_volumes`) so one embedding pass serves
every task, embeds the texts it needs with the model, and calls the model-agnostic metric functions
(`bidirectional_retrieval`, `evaluate_zero_shot`, `localization_metrics`, `pool_retrieval`,
`evaluate_radchestct_standard`). `run_tasks` runs a list of them and `write_report` turns the results into
metrics.json and the HTML report.

- retrieval: text-to-volume and volume-to-text; one query per report, a report's positives are all of its
  volumes (one per report in CT-RATE's `first_all` mode); R@1/5/10/50/100, median/mean rank, bootstrap CIs.
- zero-shot: the disease embedding against mean7 prompt pairs (embedded with the report head), per-finding and
  macro AUROC with Youden-point metrics; findings with a single class in the labels are skipped and listed.
- localization: snippet pairs (key, snippet, depth_cell); argmax over the scan's valid depth cells of the cosine
  between the snippet embedding (snippet head) and each cell embedding; middle and random baselines.
- radchestct: the zero-shot scores in the Rad-ChestCT 16-class standard protocol.
- merlin-pool: Merlin pool retrieval (pools of 32/64/128, R@1/8, 100 repeats, seed 42).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..text.findings import CTRATE_FINDINGS
from .bootstrap import DEFAULT_N_BOOT
from .classification import ClassificationResult
from .embed import EmbeddedVolumes, embed_texts
from .localization import LocalizationResult, localization_metrics
from .pool_retrieval import PoolRetrievalResult, pool_retrieval
from .radchestct import evaluate_radchestct_standard
from .retrieval import RetrievalResult, bidirectional_retrieval, positives_from_keys
from .zero_shot import MEAN7_TEMPLATES, evaluate_zero_shot, zero_shot_probabilities

TASKS = ("retrieval", "zero-shot", "localization", "radchestct", "merlin-pool")


@dataclass(frozen=True)
class SnippetPair:
    key: str
    snippet: str
    depth_cell: int
    true_z_mm: float | None = None


@dataclass
class TaskResults:
    """What the runners produced (None for tasks not run) plus skip reasons."""

    retrieval: dict[str, RetrievalResult] | None = None
    pool_retrieval: dict[str, PoolRetrievalResult] | None = None
    classification: dict[str, ClassificationResult] = field(default_factory=dict)
    localization: LocalizationResult | None = None
    localization_pairs: list[SnippetPair] = field(default_factory=list)
    localization_probs: list[np.ndarray] = field(default_factory=list)  # softmax over valid cells, per pair
    skipped: dict[str, str] = field(default_factory=dict)


def report_queries(records: Sequence[Any]) -> tuple[list[str], list[str]]:
    """(report ids, query texts): one query per distinct report, in first-seen order."""
    ids, texts, seen = [], [], set()
    for r in records:
        if r.report_id in seen or not r.has_report:
            continue
        seen.add(r.report_id)
        ids.append(r.report_id)
        texts.append(r.report_text)
    return ids, texts


def run_retrieval(
    model, records: Sequence[Any], emb: EmbeddedVolumes, *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
    ks: Sequence[int] = (1, 5, 10, 50, 100),
) -> dict[str, RetrievalResult]:
    """Text-to-volume and volume-to-text retrieval over the records' reports and volumes."""
    ids, texts = report_queries(records)
    text_emb = embed_texts(model, texts, head="report")
    positives = positives_from_keys(ids, [r.report_id for r in records])
    vol = emb.retrieval
    keep = positives.any(axis=0)  # volumes without a report cannot be retrieved by any query
    return bidirectional_retrieval(text_emb, vol[keep], positives[:, keep], ks=ks, n_boot=n_boot, seed=seed)


def prompt_embeddings(model, names: Sequence[str] = CTRATE_FINDINGS, templates=MEAN7_TEMPLATES):
    """(F, T, P) positive and negative prompt embeddings (the report head) for the mean7 protocol."""
    pos = [p.format(a=n) for n in names for p, _ in templates]
    neg = [q.format(a=n) for n in names for _, q in templates]
    shape = (len(names), len(templates), -1)
    return embed_texts(model, pos).reshape(shape), embed_texts(model, neg).reshape(shape)


def record_labels(records: Sequence[Any]) -> np.ndarray:
    return np.stack([np.asarray(r.labels, dtype=np.float32) for r in records]) if records else np.zeros((0, 18))


def run_zero_shot(
    model, emb: EmbeddedVolumes, labels: np.ndarray, *, names: Sequence[str] = CTRATE_FINDINGS,
    n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
) -> ClassificationResult:
    pos, neg = prompt_embeddings(model, names)
    return evaluate_zero_shot(emb.disease, pos, neg, labels, list(names), n_boot=n_boot, seed=seed)


def run_radchestct(model, emb: EmbeddedVolumes, labels: np.ndarray, *, n_boot: int = DEFAULT_N_BOOT,
                   seed: int = 0) -> ClassificationResult:
    """Rad-ChestCT standard protocol: 18 zero-shot scores -> 16 classes, macro AUROC."""
    pos, neg = prompt_embeddings(model, CTRATE_FINDINGS)
    probs = zero_shot_probabilities(emb.disease, pos, neg)
    return evaluate_radchestct_standard(probs, labels, n_boot=n_boot, seed=seed)


def run_merlin_pool(model, records: Sequence[Any], emb: EmbeddedVolumes, *, n_repeats: int = 100,
                    seed: int = 42) -> dict[str, PoolRetrievalResult]:
    """Merlin pool retrieval for the full report, the findings and the impressions (where present)."""
    out: dict[str, PoolRetrievalResult] = {}
    sections = {
        "Full report": [r.report_text for r in records],
        "Findings": [r.findings for r in records],
        "Impressions": [r.impressions for r in records],
    }
    for name, texts in sections.items():
        keep = [i for i, t in enumerate(texts) if t.strip()]
        if len(keep) < 2:
            continue
        text_emb = embed_texts(model, [texts[i] for i in keep])
        sizes = [s for s in (32, 64, 128) if s <= len(keep)] or [len(keep)]
        out[name] = pool_retrieval(text_emb, emb.retrieval[keep], pool_sizes=sizes, n_repeats=n_repeats, seed=seed)
    return out


def read_pairs(path: str | Path, keys: Sequence[str] | None = None) -> list[SnippetPair]:
    """pairs.jsonl -> snippet pairs (restricted to `keys` when given)."""
    wanted = set(keys) if keys is not None else None
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pair = SnippetPair(str(row["key"]), str(row["snippet"]), int(row["depth_cell"]),
                               None if row.get("true_z_mm") is None else float(row["true_z_mm"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            from .embed import EvalSetupError

            raise EvalSetupError(f"{path}:{n}: need key, snippet, depth_cell ({exc})") from exc
        if (wanted is None or pair.key in wanted) and pair.snippet.strip():
            out.append(pair)
    return out


def run_localization(
    model, emb: EmbeddedVolumes, pairs: Sequence[SnippetPair], *, cell_mm: float | None = None,
    one_per_scan: bool = False, seed: int = 0,
) -> tuple[LocalizationResult, list[SnippetPair], list[np.ndarray]]:
    """Localize every snippet in its own scan. Pairs whose scan is missing or whose cell lies outside the scan's
    valid cells are dropped (the caller reports how many). `one_per_scan`: keep the first snippet of each scan
    (the released evaluation's choice); default all. Returns (result, pairs used, softmax profile per pair)."""
    idx = emb.index()
    used = [p for p in pairs if p.key in idx and 0 <= p.depth_cell < len(emb.depth[idx[p.key]])]
    if one_per_scan:
        first: dict[str, SnippetPair] = {}
        for p in used:
            first.setdefault(p.key, p)
        used = list(first.values())
    if not used:
        from .embed import EvalSetupError

        raise EvalSetupError("no snippet pair refers to an evaluated scan with a valid depth cell")
    snip = embed_texts(model, [p.snippet for p in used], head="snippet")
    snip /= np.linalg.norm(snip, axis=1, keepdims=True).clip(1e-12)
    scores, probs = [], []
    tau = float(getattr(model.config, "localization_tau", 0.1))
    for p, s in zip(used, snip, strict=True):
        cells = emb.depth[idx[p.key]]
        cos = cells @ s / np.linalg.norm(cells, axis=1).clip(1e-12)
        scores.append(cos)
        z = (cos - cos.max()) / tau
        probs.append(np.exp(z) / np.exp(z).sum())
    cmm = cell_mm if cell_mm is not None else model.preprocess_spec.depth_cell_mm
    result = localization_metrics(scores, [p.depth_cell for p in used], [p.key for p in used], cell_mm=cmm,
                                  seed=seed)
    return result, used, probs
