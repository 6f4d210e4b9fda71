"""The `model` generator on datasets: fit a bank on the training split with a trained model, write reports for
other records. Model outputs come from `eval.embed` (feature cache or raw scans) and the mean7 zero-shot protocol
(`eval.zero_shot`), the same numbers `radfinder evaluate` scores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...features.store import state_dict_hash
from ...text.findings import CTRATE_FINDINGS
from ...text.labeler import RuleLabeler
from ..embed import EmbeddedVolumes, embed_texts, embed_volumes, open_matching_store
from ..tasks import prompt_embeddings
from ..zero_shot import zero_shot_probabilities
from .bank import BankError, GeneratorBank, fit_bank
from .writer import GeneratedReport, ReportWriter, ScanOutputs


def model_hash(model) -> str:
    """Content hash of every weight of the model: a bank's thresholds belong to exactly these weights."""
    return state_dict_hash(model)


def zero_shot_scores(model, disease: np.ndarray, findings: Sequence[str] = CTRATE_FINDINGS,
                     prompts: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """(N, F) mean7 zero-shot probabilities of disease embeddings (N, P); `prompts`: (positive, negative) prompt
    embeddings from `eval.tasks.prompt_embeddings` to reuse."""
    pos, neg = prompts if prompts is not None else prompt_embeddings(model, list(findings))
    return zero_shot_probabilities(disease, pos, neg)


def report_labels(records: Sequence[Any], labeler: RuleLabeler | None = None,
                  findings: Sequence[str] = CTRATE_FINDINGS) -> np.ndarray:
    """(N, F) labels the rule labeler reads from each record's own report (1/0/-1)."""
    lab = labeler or RuleLabeler()
    return np.array([[lab.label(r.findings, r.impressions).labels[f] for f in findings] for r in records], np.float32)


def embed_records(model, records: Sequence[Any], features: str | Path | None = None,
                  show_progress: bool = False) -> EmbeddedVolumes:
    store = open_matching_store(features, model) if features is not None else None
    return embed_volumes(model, records, features=store, depth=True, show_progress=show_progress)


def fit_generator_bank(
    model, train_records: Sequence[Any], *, features: str | Path | None = None, labels: np.ndarray | None = None,
    emb: EmbeddedVolumes | None = None, min_df: float = 0.2, max_variants: int = 32, show_progress: bool = False,
) -> GeneratorBank:
    """A bank fitted on `train_records` (their reports, and the model's zero-shot scores on their volumes against
    the reports' own rule-labeler labels, or `labels` when given: report-derived labels, never ground truth)."""
    recs = [r for r in train_records if r.has_report]
    if not recs:
        raise BankError("no training record with a report")
    if emb is None or len(emb.keys) != len(recs):
        emb = embed_records(model, recs, features, show_progress)
    y = report_labels(recs) if labels is None else np.asarray(labels)
    scores = zero_shot_scores(model, emb.disease)
    return fit_bank(
        [(r.findings, r.impressions) for r in recs], scores, y, report_ids=[r.report_id for r in recs],
        min_df=min_df, max_variants=max_variants, show_progress=show_progress,
        meta={"model_hash": model_hash(model), "model_source": str(getattr(model, "source", "") or ""),
              "train_split": sorted({str(r.split) for r in recs}), "prompts": "mean7"},
    )  # fmt: skip


def check_bank_model(bank: GeneratorBank, model, where: str = "generator bank") -> None:
    want = bank.meta.get("model_hash")
    have = model_hash(model)
    if want and want != have:
        raise BankError(f"{where} was fitted for model {want}, this checkpoint is {have}: fit a bank for it "
                        "(`radfinder generate-fit`)")


def writer_for(model, bank: GeneratorBank, check: bool = True) -> ReportWriter:
    if check:
        check_bank_model(bank, model)
    return ReportWriter(bank, lambda texts: embed_texts(model, texts, head="snippet"))


def generate_for_records(
    model, bank: GeneratorBank, records: Sequence[Any], *, features: str | Path | None = None,
    emb: EmbeddedVolumes | None = None, show_progress: bool = False,
) -> list[GeneratedReport]:
    """One generated report per record (from the feature cache when given, else the raw scans)."""
    if emb is None:
        emb = embed_records(model, records, features, show_progress)
    writer = writer_for(model, bank)
    probs = zero_shot_scores(model, emb.disease, bank.findings)
    out = []
    for i in range(len(records)):
        inside = emb.cell_in_scan[i] if i < len(emb.cell_in_scan) and emb.cell_in_scan[i] is not None else None
        valid = np.ones(len(emb.depth[i]), bool) if inside is None else np.asarray(inside, bool)
        out.append(writer.write(ScanOutputs(probs[i], emb.depth[i], valid, emb.cell_z_mm[i])))
    return out
