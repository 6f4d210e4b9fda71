"""Report-generation metrics: BLEU-1/4, ROUGE-L, BERTScore and clinical efficacy of generated vs reference reports.

- **BLEU-n** (corpus level, Papineni et al.): clipped n-gram precisions pooled over the corpus, geometric mean of
  orders 1..n with uniform weights, brevity penalty exp(1 - r / c) when the candidates are shorter than the
  references (one reference per candidate), no smoothing (0 when an order has no match). Tokens: lowercased words
  and single punctuation marks (`tokenize`).
- **ROUGE-L**: the `rouge-score` package's LCS F-measure, mean over report pairs (its default tokenizer for
  English; for other languages a tokenizer that keeps non-ASCII letters, since the default drops them).
- **BERTScore** (Zhang et al.), with the rules of the `bert-score` package (0.3.13) at `idf=False`, no baseline
  rescaling (tested against it on edge cases): greedy cosine matching of contextual token embeddings; every word
  piece is scored except the tokenizer's [CLS] and [SEP] (an unknown piece, [UNK], is scored like any other), and
  every piece including [CLS] and [SEP] is a match target; precision = recall = F1 = 0 when either text has no
  scored piece (empty or blank); F1 = 0 where precision + recall = 0. Each text is truncated to the tokenizer's
  `model_max_length` word pieces (512 for MiniLM and at most 512 here), [CLS] and [SEP] included, the end dropped,
  as `bert-score` truncates. Unlike `bert-score`, pairs are not padded to their batch's longest text (its padding
  has similarity 0 and caps a negative best match at 0): ours equals `bert-score` with `batch_size=1`. The model
  is the offline all-MiniLM-L6-v2 bundled with radfinder (its last layer): values are *not* comparable with
  published BERTScores (RoBERTa-large, rescaled), only between systems scored here.
- **Clinical efficacy**: the rule labeler's 18 findings on generated and reference reports; per-finding precision,
  recall and F1 of the generated labels against the reference labels, macro F1 over the findings with at least one
  positive reference in the evaluated set (the others are listed as skipped). A reference whose labeler output is
  unknown (-1) is left out for that finding; an unknown generated label counts as negative.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radfinder.eval._common import EvalInputError, as_numpy, check_finite, clean_number, l2_normalize
from radfinder.text.findings import CTRATE_FINDINGS
from radfinder.text.labeler import RuleLabeler

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Lowercased words and single punctuation marks."""
    return _TOKEN.findall((text or "").lower())


def _check_pairs(candidates: Sequence[str], references: Sequence[str]) -> None:
    if len(candidates) != len(references):
        raise EvalInputError(f"{len(candidates)} candidates but {len(references)} references")
    if not candidates:
        raise EvalInputError("no reports to evaluate")


def corpus_bleu(candidates: Sequence[str], references: Sequence[str], max_n: int = 4) -> float:
    """Corpus BLEU with orders 1..max_n (uniform weights), one reference per candidate (see module doc)."""
    _check_pairs(candidates, references)
    matches = [0] * max_n
    totals = [0] * max_n
    c_len = r_len = 0
    for cand, ref in zip(candidates, references, strict=True):
        c, r = tokenize(cand), tokenize(ref)
        c_len += len(c)
        r_len += len(r)
        for n in range(1, max_n + 1):
            cg = Counter(tuple(c[i : i + n]) for i in range(len(c) - n + 1))
            rg = Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1))
            matches[n - 1] += sum(min(v, rg[g]) for g, v in cg.items())
            totals[n - 1] += max(0, len(c) - n + 1)
    if c_len == 0 or any(m == 0 for m in matches):
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(matches, totals, strict=True)) / max_n
    bp = 1.0 if c_len > r_len else math.exp(1.0 - r_len / c_len)
    return bp * math.exp(log_p)


class _UnicodeTokenizer:
    """For rouge-score: lowercased \\w+ tokens, keeping letters such as ä, ö, ü, ß."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"\w+", (text or "").lower(), re.UNICODE)


def rouge_l(candidates: Sequence[str], references: Sequence[str], lang: str = "en") -> float:
    """Mean ROUGE-L F-measure over report pairs (rouge-score package)."""
    from rouge_score import rouge_scorer

    _check_pairs(candidates, references)
    tok = None if lang == "en" else _UnicodeTokenizer()
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=tok)
    return float(np.mean([scorer.score(r, c)["rougeL"].fmeasure for c, r in zip(candidates, references, strict=True)]))


class BertScorer:
    """BERTScore with a local Hugging Face encoder (default: the bundled all-MiniLM-L6-v2, its last layer)."""

    def __init__(
        self, model_dir: str | Path | None = None, layer: int | None = None, batch_size: int = 16, device: str = "cpu"
    ):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from radfinder.models.text import minilm_dir

        path = str(model_dir or minilm_dir())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        n_layers = int(self.model.config.num_hidden_layers)
        self.layer = n_layers if layer is None else int(layer)
        if not 0 <= self.layer <= n_layers:
            raise EvalInputError(f"layer must be in [0, {n_layers}], got {self.layer}")
        self.batch_size = batch_size
        self.device = device
        self.max_length = min(int(getattr(self.tokenizer, "model_max_length", 512) or 512), 512)
        self._torch = torch

    def _embed(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per text: (tokens, D) unit embeddings and a (tokens,) bool mask of the scored (non-special) tokens."""
        torch = self._torch
        out = []
        # bert-score gives [CLS] and [SEP] weight 0 and every other piece weight 1 (idf=False), [UNK] included
        special = {self.tokenizer.cls_token_id, self.tokenizer.sep_token_id} - {None}
        for s in range(0, len(texts), self.batch_size):
            chunk = [t.strip() for t in texts[s : s + self.batch_size]]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            with torch.no_grad():
                hs = self.model(**enc.to(self.device), output_hidden_states=True).hidden_states[self.layer]
            hs = torch.nn.functional.normalize(hs.double(), dim=-1).cpu().numpy()
            for k in range(len(chunk)):
                n = int(enc["attention_mask"][k].sum())
                ids = enc["input_ids"][k][:n].tolist()
                out.append((hs[k, :n], np.array([i not in special for i in ids])))
        return out

    def score(self, candidates: Sequence[str], references: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(precision, recall, F1) per pair."""
        _check_pairs(candidates, references)
        ce = self._embed(list(candidates))
        re_ = self._embed(list(references))
        p, r, f = [], [], []
        for (hc, mc), (hr, mr) in zip(ce, re_, strict=True):
            if not mc.any() or not mr.any():  # a side without a scored piece: all three are 0 (as bert-score)
                p.append(0.0)
                r.append(0.0)
                f.append(0.0)
                continue
            sim = hc @ hr.T  # every token of each text, [CLS] and [SEP] included as match targets
            prec = float(sim.max(1)[mc].mean())
            rec = float(sim.max(0)[mr].mean())
            p.append(prec)
            r.append(rec)
            f.append(2 * prec * rec / (prec + rec) if prec + rec != 0 else 0.0)
        return np.array(p), np.array(r), np.array(f)


def clinical_efficacy(
    candidates: Sequence[str],
    references: Sequence[str],
    labeler: RuleLabeler | None = None,
    findings: Sequence[str] = CTRATE_FINDINGS,
) -> dict[str, Any]:
    """Per-finding precision/recall/F1 of labels extracted from generated vs reference reports, and the macro F1
    over the findings with a positive reference (see module doc)."""
    _check_pairs(candidates, references)
    lab = labeler or RuleLabeler()
    g = np.array([[lab.label(c).labels[f] for f in findings] for c in candidates])
    r = np.array([[lab.label(x).labels[f] for f in findings] for x in references])
    per: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for k, f in enumerate(findings):
        keep = r[:, k] >= 0
        y, p = r[keep, k] == 1, g[keep, k] == 1
        if not y.any():
            skipped.append(f)
            continue
        tp, fp, fn = int((y & p).sum()), int((~y & p).sum()), int((y & ~p).sum())
        per[f] = {
            "n_pos": int(y.sum()),
            "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn),
            "f1": 2 * tp / (2 * tp + fp + fn),
        }
    macro = float(np.mean([v["f1"] for v in per.values()])) if per else float("nan")
    return {"ce_macro_f1": macro, "per_finding": per, "skipped": skipped}


def nearest_report(query_emb: Any, train_emb: Any, train_reports: Sequence[str]) -> list[str]:
    """Baseline `nearest_report`: for each query volume, the report of the training study whose volume embedding is
    nearest by cosine (ties: the first such study)."""
    q = l2_normalize(as_numpy(query_emb, name="query embeddings"))
    t = l2_normalize(as_numpy(train_emb, name="training embeddings"))
    if q.ndim != 2 or t.ndim != 2 or q.shape[1] != t.shape[1] or len(t) != len(train_reports) or not len(t):
        raise EvalInputError(f"shapes: queries {q.shape}, training {t.shape}, {len(train_reports)} training reports")
    check_finite(q, "query embeddings")
    check_finite(t, "training embeddings")
    return [train_reports[i] for i in np.argmax(q @ t.T, axis=1)]


def most_common_report(train_reports: Sequence[str], train_labels: Any) -> str:
    """Baseline `most_common_report`: the training report whose finding-label vector is the most frequent one in the
    training set, ties between vectors and between reports broken by the shortest report (then the first)."""
    y = np.asarray(train_labels)
    if y.ndim != 2 or len(y) != len(train_reports) or not len(y):
        raise EvalInputError(f"train_labels must be ({len(train_reports)}, F), got {y.shape}")
    counts = Counter(map(tuple, y.tolist()))
    top = max(counts.values())
    candidates = [i for i, row in enumerate(map(tuple, y.tolist())) if counts[row] == top]
    return train_reports[min(candidates, key=lambda i: (len(train_reports[i]), i))]


def report_generation_metrics(
    candidates: Sequence[str],
    references: Sequence[str],
    *,
    lang: str = "en",
    bert_scorer: BertScorer | None = None,
    bertscore: bool = True,
    labeler: RuleLabeler | None = None,
) -> dict[str, Any]:
    """Every metric of the module for one generator: bleu1, bleu4, rouge_l, bertscore_{p,r,f1}, ce_macro_f1 and
    per-finding clinical efficacy. `bertscore=False` skips the encoder (no model load)."""
    out: dict[str, Any] = {
        "n": len(candidates),
        "bleu1": corpus_bleu(candidates, references, 1),
        "bleu4": corpus_bleu(candidates, references, 4),
        "rouge_l": rouge_l(candidates, references, lang),
    }
    if bertscore:
        p, r, f = (bert_scorer or BertScorer()).score(candidates, references)
        out.update({"bertscore_p": float(p.mean()), "bertscore_r": float(r.mean()), "bertscore_f1": float(f.mean())})
    ce = clinical_efficacy(candidates, references, labeler)
    out["ce_macro_f1"] = ce["ce_macro_f1"]
    out["ce_per_finding"] = ce["per_finding"]
    out["ce_skipped"] = ce["skipped"]
    return {k: clean_number(v) if not isinstance(v, (dict, list)) else v for k, v in out.items()}
