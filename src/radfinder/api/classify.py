"""`classify`: zero-shot per-finding probabilities with the CT-RATE "mean7" prompt protocol.

For each finding the 7 positive and 7 negative template sentences of the prompt bank are embedded with
`projection_text`, L2-normalised, averaged and renormalised (`radfinder.eval.zero_shot.mean_prompt_embeddings`).
With x the scan's disease embedding (`projection_image_copy`), cos_pos / cos_neg its cosines with the two
averages, the probability is the softmax over the two cosines with no temperature:
p = sigmoid(cos_pos - cos_neg) (`zero_shot_probabilities`, the evaluation protocol); `margin` = cos_pos - cos_neg.
(The official single-prompt example instead scales the margin by exp(t); `margin` lets a caller do that.)

When the checkpoint carries a calibration (`calibration.json`, fitted on a train split's reports:
`radfinder.models.calibration`), `probability` is the calibrated sigmoid(scale * margin + bias) of the finding and
`calibrated` is True; without one it is the raw sigmoid(margin) above, which for a trained model sits near 0.5 for
every finding and says little on its own (`calibrated` False). The ranking of scans by either is the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .encode import VolumeEncoding, encode_text, encode_volume
from .model import ScanInput

BUILTIN_BANK = "built-in prompt bank"  # `PromptBank.source` of the bank a calibration is fitted with


@dataclass(frozen=True)
class PromptEmbeddings:
    """mean7 prompt embeddings of some findings: positive / negative (F, P), each L2-normalised."""

    findings: tuple[str, ...]
    positive: np.ndarray
    negative: np.ndarray
    source: str


@dataclass(frozen=True)
class FindingScore:
    finding: str
    probability: float  # p(finding present): calibrated when `calibrated`, else sigmoid(margin)
    margin: float  # cos_positive - cos_negative
    cos_positive: float
    cos_negative: float
    calibrated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _findings(findings: Sequence[str] | None, model=None) -> tuple[str, ...]:
    from ..text.findings import CTRATE_FINDINGS

    if findings is None:  # the model's label vocabulary (ctrate18 unless it was trained with another)
        vocab = getattr(model, "label_vocabulary", None)
        return tuple(vocab.findings) if vocab is not None else CTRATE_FINDINGS
    names = tuple(str(f).strip() for f in ([findings] if isinstance(findings, str) else findings))
    if not names or any(not n for n in names):
        raise ConfigError("findings must be non-empty names")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"finding(s) given twice: {', '.join(dupes)}")
    return names


def prompt_embeddings(model, findings: Sequence[str] | None = None, prompt_bank=None) -> PromptEmbeddings:
    """Embed the mean7 prompts of `findings` (default the model's label vocabulary, the 18 CT-RATE findings unless it
    was trained with another) once; pass the result to `classify`
    as `prompts=` to score many scans without re-encoding text. `prompt_bank`: a `PromptBank`, a YAML path
    merged over the built-in bank, or None for the built-in bank."""
    from ..eval.zero_shot import mean_prompt_embeddings
    from ..text.prompts import PromptBank, load_prompt_bank

    names = _findings(findings, model)
    bank = prompt_bank if isinstance(prompt_bank, PromptBank) else load_prompt_bank(prompt_bank)
    pairs = [bank.zero_shot_pairs(f) for f in names]
    n_t = len(pairs[0])
    texts = [p for fp in pairs for p, _ in fp] + [n for fp in pairs for _, n in fp]
    emb = encode_text(model, texts)
    half = len(names) * n_t
    pos = emb[:half].reshape(len(names), n_t, -1)
    neg = emb[half:].reshape(len(names), n_t, -1)
    return PromptEmbeddings(names, mean_prompt_embeddings(pos), mean_prompt_embeddings(neg), bank.source)


def classify(
    model,
    scan: ScanInput | VolumeEncoding,
    findings: Sequence[str] | None = None,
    prompt_bank: str | Path | Any | None = None,
    *,
    prompts: PromptEmbeddings | None = None,
    chunk_size: int = 8,
) -> list[FindingScore]:
    """Per-finding zero-shot probabilities for one scan (path, `Volume`, `Preprocessed`, or a `VolumeEncoding`
    from `encode_volume`), in the order of `findings` (default the model's label vocabulary). See the module doc."""
    from ..eval._common import l2_normalize
    from ..eval.zero_shot import zero_shot_probabilities

    if prompts is None:
        prompts = prompt_embeddings(model, findings, prompt_bank)
    elif findings is not None and tuple(_findings(findings, model)) != prompts.findings:
        raise ConfigError("findings differ from those of the given prompt embeddings")
    enc = scan if isinstance(scan, VolumeEncoding) else encode_volume(model, scan, chunk_size=chunk_size)
    img = l2_normalize(enc.disease[None].astype(np.float64))[0]
    cos_pos = prompts.positive @ img
    cos_neg = prompts.negative @ img
    # the calibration was fitted on the built-in prompts' margins: other prompts get raw probabilities
    cal = finding_calibration(model, prompts.findings) if prompts.source == BUILTIN_BANK else None
    if cal is not None:
        probs = cal.probabilities(cos_pos - cos_neg, prompts.findings)
    else:
        probs = zero_shot_probabilities(enc.disease[None], prompts.positive, prompts.negative)[0]
    return [
        FindingScore(name, float(p), float(cp - cn), float(cp), float(cn), cal is not None)
        for name, p, cp, cn in zip(prompts.findings, probs, cos_pos, cos_neg, strict=True)
    ]


def finding_calibration(model, findings: Sequence[str]):
    """The model's `FindingCalibration` when it covers every one of `findings`, else None (raw probabilities)."""
    cal = getattr(model, "calibration", None)
    return cal if cal is not None and cal.covers(findings) else None


def calibrated_logits(model, margins: np.ndarray, findings: Sequence[str]) -> tuple[np.ndarray, bool]:
    """(logits, calibrated) for zero-shot margins (..., F) of the built-in prompts of `findings`: scale * margin +
    bias of the model's calibration where it has one covering them, else the margin itself (the raw protocol's
    logit). The probability is sigmoid(logit) either way (`models.calibration.sigmoid`)."""
    cal = finding_calibration(model, findings)
    m = np.asarray(margins, np.float64)
    return (m, False) if cal is None else (cal.logits(m, findings), True)
