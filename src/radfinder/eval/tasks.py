"""Task runners: a model plus a dataset in, the metric API's results out (method notes 1.7).

Each runner takes already-embedded volumes (`radfinder.eval.embed.embed_volumes`) so one embedding pass serves
every task, embeds the texts it needs with the model, and calls the model-agnostic metric functions
(`bidirectional_retrieval`, `evaluate_zero_shot`, `localization_metrics`, `pool_retrieval`,
`evaluate_radchestct_standard`). `radfinder.eval.builtin_tasks` registers them as evaluation tasks
(`radfinder.eval.registry`); `run_tasks` runs a list of them and `write_report` turns the results into
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

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.pairs import PairRow
from ..data.pairs import read_pairs as _read_pairs_file
from ..text.findings import CTRATE_FINDINGS
from .bootstrap import DEFAULT_N_BOOT
from .classification import ClassificationResult
from .embed import EmbeddedVolumes, embed_texts
from .localization import LocalizationResult, localization_metrics
from .pool_retrieval import PoolRetrievalResult, pool_retrieval
from .radchestct import evaluate_radchestct_standard
from .retrieval import RetrievalResult, bidirectional_retrieval, positives_from_keys
from .zero_shot import MEAN7_TEMPLATES, evaluate_zero_shot, zero_shot_probabilities

SnippetPair = PairRow  # one line of pairs.jsonl (`radfinder.data.pairs`)


@dataclass
class TaskResults:
    """What the runners produced (None for tasks not run) plus skip reasons."""

    retrieval: dict[str, RetrievalResult] | None = None
    pool_retrieval: dict[str, PoolRetrievalResult] | None = None
    classification: dict[str, ClassificationResult] = field(default_factory=dict)
    localization: LocalizationResult | None = None
    localization_pairs: list[SnippetPair] = field(default_factory=list)  # one per scored snippet (first line)
    localization_probs: list[np.ndarray] = field(default_factory=list)  # softmax over candidate cells, per snippet
    localization_per_line: LocalizationResult | None = None  # every pairs line scored alone (labelled figure)
    localization_counts: dict[str, int] = field(default_factory=dict)  # pairs read / used / dropped and why
    skipped: dict[str, str] = field(default_factory=dict)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)  # registered tasks' metrics, by task name


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


def read_pairs(path: str | Path, keys: Sequence[str] | None = None, *,
               spec_hash: str | None = None) -> list[SnippetPair]:
    """pairs.jsonl -> snippet pairs (restricted to `keys` when given); `radfinder.data.pairs.read_pairs`."""
    return _read_pairs_file(path, keys, spec_hash=spec_hash, what="the evaluated model").rows


def _candidates(emb: EmbeddedVolumes, i: int) -> np.ndarray:
    """Candidate cells of volume i: its valid cells that hold scan data (never padding)."""
    n = len(emb.depth[i])
    inside = emb.cell_in_scan[i] if i < len(emb.cell_in_scan) else None
    return np.arange(n) if inside is None else np.flatnonzero(inside)


def run_localization(
    model, emb: EmbeddedVolumes, pairs: Sequence[SnippetPair], *, cell_mm: float | None = None,
    one_per_scan: bool = False, seed: int = 0,
) -> tuple[LocalizationResult, list[SnippetPair], list[np.ndarray]]:
    """Localize every snippet in its own scan (module doc of `radfinder.eval.localization` for the protocol).

    Candidates are the scan's cells that hold scan data (never padding). Lines of one reference citing several images
    (same `reference`) are one snippet, scored against the nearest of its true cells. Lines whose scan is missing or
    whose cell is not a candidate are dropped and counted (`localization_counts` via `run_localization_full`).
    `one_per_scan`: keep the first snippet of each scan (the released evaluation's choice); default all.
    Returns (result, the first line of each scored snippet, softmax profile over the candidates per snippet)."""
    full = run_localization_full(model, emb, pairs, cell_mm=cell_mm, one_per_scan=one_per_scan, seed=seed)
    return full.localization, full.localization_pairs, full.localization_probs


def run_localization_full(
    model, emb: EmbeddedVolumes, pairs: Sequence[SnippetPair], *, cell_mm: float | None = None,
    one_per_scan: bool = False, seed: int = 0,
) -> TaskResults:
    """`run_localization` with the per-line figure and the counts of dropped pairs (a `TaskResults`)."""
    from .embed import EvalSetupError

    idx = emb.index()
    counts = {"lines": len(pairs), "dropped_missing_scan": 0, "dropped_cell_outside_scan": 0}
    groups: dict[str, list[SnippetPair]] = {}
    cand: dict[str, np.ndarray] = {}
    for p in pairs:
        if p.key not in idx:
            counts["dropped_missing_scan"] += 1
            continue
        if p.key not in cand:
            cand[p.key] = _candidates(emb, idx[p.key])
        if p.depth_cell not in cand[p.key]:
            counts["dropped_cell_outside_scan"] += 1
            continue
        groups.setdefault(p.reference or f"{p.key}|{p.line}|{p.snippet}", []).append(p)
    snippets = list(groups.values())
    if one_per_scan:
        first: dict[str, list[SnippetPair]] = {}
        for g in snippets:
            first.setdefault(g[0].key, g)
        snippets = list(first.values())
    if not snippets:
        raise EvalSetupError("no snippet pair refers to an evaluated scan with a depth cell inside the scan")
    snip = embed_texts(model, [g[0].snippet for g in snippets], head="snippet")
    snip /= np.linalg.norm(snip, axis=1, keepdims=True).clip(1e-12)
    tau = float(getattr(model.config, "localization_tau", 0.1))
    scores, probs = [], []
    for g, s in zip(snippets, snip, strict=True):
        cells = emb.depth[idx[g[0].key]]
        cos = cells @ s / np.linalg.norm(cells, axis=1).clip(1e-12)
        row = np.full(len(cos), -np.inf)
        keep = cand[g[0].key]
        row[keep] = cos[keep]
        scores.append(row)
        z = np.where(np.isfinite(row), (row - row[keep].max()) / tau, -np.inf)
        probs.append(np.exp(z) / np.exp(z).sum())
    cmm = cell_mm if cell_mm is not None else model.preprocess_spec.depth_cell_mm
    with_mm = all(p.depth_mm is not None for g in snippets for p in g)
    truth_mm = [[p.depth_mm for p in g] for g in snippets] if with_mm else None
    scan_ids = [g[0].key for g in snippets]
    result = localization_metrics(scores, [[p.depth_cell for p in g] for g in snippets], scan_ids, cell_mm=cmm,
                                  true_depth_mm=truth_mm, seed=seed)
    lines = [(i, p) for i, g in enumerate(snippets) for p in g]
    per_line = localization_metrics([scores[i] for i, _ in lines], [p.depth_cell for _, p in lines],
                                    [p.key for _, p in lines], cell_mm=cmm, seed=seed,
                                    true_depth_mm=[p.depth_mm for _, p in lines] if with_mm else None)
    counts.update(snippets=len(snippets), lines_used=len(lines))
    return TaskResults(localization=result, localization_pairs=[g[0] for g in snippets], localization_probs=probs,
                       localization_per_line=per_line, localization_counts=counts)
