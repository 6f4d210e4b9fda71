"""Writing one report from the model's outputs for a scan and a fitted `GeneratorBank` (the `model` generator).

For a scan the writer gets the model's zero-shot probability of each finding, its depth-cell embeddings and,
where a segmentation was given, the anatomy classes present in each depth cell. Then:

1. **Findings called present**: probability >= the bank's training-split threshold.
2. **Sentence per present finding**: among the bank's training sentences for that finding (preferring those that
   state no finding called absent), the one whose snippet embedding has the highest cosine with one of the scan's
   depth cells. That cell is where the finding is placed (`world_z_mm`); with a segmentation only cells holding the
   finding's anatomy are candidates, and the classes found in the chosen cell are reported beside it. A sentence
   that also states another present finding covers it.
3. **Absent findings and normal anatomy**: the bank's common sentences of absence whose findings are all called
   absent, and its normal sentences, except beside a present finding that excludes them; an anatomy with no
   present finding and no sentence gets its most common normal sentence.
4. **Order**: every sentence at its mean relative position in the training reports.
5. **Impression**: one numbered item per present finding (the bank's impression item chosen as in 2), or the
   bank's normal impression.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...text.anatomy import FINDING_ANATOMY
from .bank import BankError, GeneratorBank

EmbedFn = Callable[[Sequence[str]], np.ndarray]  # texts -> (N, P) snippet-head embeddings


@dataclass
class ScanOutputs:
    """What the model says about one scan (inputs of `ReportWriter.write`).

    probabilities (F,): zero-shot p(finding) in the bank's finding order. depth (C, P): depth-cell embeddings;
    depth_valid (C,): cells holding scan data; depth_z_mm (C,): world z of each cell's centre (None: unknown).
    cell_classes: per cell, {anatomy: [segmentation class names present]} from `--seg` (None without one).
    """

    probabilities: np.ndarray
    depth: np.ndarray
    depth_valid: np.ndarray
    depth_z_mm: np.ndarray | None = None
    cell_classes: list[dict[str, list[str]]] | None = None


@dataclass
class GeneratedReport:
    findings: str
    impression: str
    present: list[dict[str, Any]] = field(default_factory=list)
    probabilities: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float | None] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """Findings then impression, the form the report-generation metrics score."""
        return f"{self.findings}\n{self.impression}"

    def as_dict(self) -> dict[str, Any]:
        return {"findings": self.findings, "impression": self.impression, "present": self.present,
                "probabilities": self.probabilities, "thresholds": self.thresholds}  # fmt: skip


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)


class ReportWriter:
    """`ReportWriter(bank, embed_fn).write(outputs)`: `embed_fn` embeds sentences with the model's snippet head
    (the same model whose zero-shot scores fitted the bank's thresholds); each bank sentence is embedded once."""

    def __init__(self, bank: GeneratorBank, embed_fn: EmbedFn):
        self.bank = bank
        texts = sorted({v["text"] for f in bank.findings
                        for v in bank.positive.get(f, []) + bank.impression.get(f, [])})  # fmt: skip
        self._emb = dict(zip(texts, _unit(embed_fn(texts)), strict=True)) if texts else {}

    def _choose(self, variants: list[dict[str, Any]], present: set[str], cells: np.ndarray, cand: np.ndarray):
        """(variant, cell, cosine) of the best-grounded variant; variants stating an absent finding only when no
        other exists."""
        clean = [v for v in variants if set(v["affirmed"]) <= present] or variants
        best = None
        for v in clean:
            cos = cells[cand] @ self._emb[v["text"]]
            i = int(np.argmax(cos))
            if best is None or cos[i] > best[2]:
                best = (v, int(cand[i]), float(cos[i]))
        return best

    def write(self, out: ScanOutputs) -> GeneratedReport:
        bank = self.bank
        p = np.asarray(out.probabilities, dtype=np.float64)
        if p.shape != (len(bank.findings),):
            raise BankError(f"{p.shape[0] if p.ndim else 0} probabilities for a bank of {len(bank.findings)} findings")
        valid = np.asarray(out.depth_valid, bool)
        if not valid.any():
            raise BankError("the scan has no valid depth cell")
        cells = _unit(out.depth)
        probs = {f: float(v) for f, v in zip(bank.findings, p, strict=True)}
        present = {f for f in bank.findings if bank.thresholds.get(f) is not None and probs[f] >= bank.thresholds[f]}
        order = sorted(present, key=lambda f: -probs[f])
        lines: list[tuple[float, str]] = []
        items: list[tuple[float, str]] = []
        covered: set[str] = set()
        details = []
        for f in order:
            if f in covered or not bank.positive.get(f):
                continue
            cand = np.flatnonzero(valid)
            anatomy = FINDING_ANATOMY.get(f)
            if out.cell_classes is not None and anatomy is not None:
                with_anatomy = [c for c in cand if out.cell_classes[c].get(anatomy)]
                cand = np.asarray(with_anatomy or cand)
            v, cell, cos = self._choose(bank.positive[f], present, cells, cand)
            covered |= {f, *(set(v["affirmed"]) & present)}
            lines.append((v["position"], v["text"]))
            entry = {"finding": f, "probability": probs[f], "threshold": bank.thresholds[f], "sentence": v["text"],
                     "also_states": [g for g in v["affirmed"] if g != f], "cell": cell, "cosine": cos,
                     "world_z_mm": None if out.depth_z_mm is None else float(out.depth_z_mm[cell])}  # fmt: skip
            if out.cell_classes is not None:
                entry["anatomy"] = anatomy
                entry["classes_in_cell"] = out.cell_classes[cell].get(anatomy, []) if anatomy else []
            if bank.impression.get(f):
                iv, _, _ = self._choose(bank.impression[f], present, cells, np.asarray([cell]))
                if iv["text"] not in {t for _, t in items}:
                    items.append((iv["position"], iv["text"]))
                entry["impression_item"] = iv["text"]
            details.append(entry)
        said_anatomy = {v["anatomy"] for f in covered for v in bank.positive.get(f, [])[:1]}
        for row in bank.absent:
            if not (set(row["negated"]) & present) and not (set(row.get("excluded_by", ())) & present):
                lines.append((row["position"], row["text"]))
                said_anatomy.add(row["anatomy"])
        for a, row in bank.anatomy_normal.items():
            if a not in said_anatomy and not any(FINDING_ANATOMY.get(f) == a for f in present) and not (
                set(row["negated"]) & present or set(row.get("excluded_by", ())) & present
            ):
                lines.append((row["position"], row["text"]))
        seen: set[str] = set()
        text = [t for _, t in sorted(lines, key=lambda x: x[0]) if not (t in seen or seen.add(t))]
        if items:
            impression = " ".join(f"{i + 1}. {t}" for i, (_, t) in enumerate(sorted(items, key=lambda x: x[0])))
        else:
            impression = bank.normal_impression
        return GeneratedReport(" ".join(text), impression, details, probs, dict(bank.thresholds))
