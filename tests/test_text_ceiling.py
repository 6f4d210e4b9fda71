"""`text_ceiling`: zero-shot on each record's own report, checked against a hand computation with scikit-learn."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from radfinder.eval.text_ceiling import negation_probe, text_ceiling
from radfinder.eval.zero_shot import MEAN7_TEMPLATES

FINDINGS = ["Emphysema", "Pleural effusion"]


class _Config:
    projection_dim = 3

    class text:  # noqa: N801 - mirrors model.config.text
        hidden_size = 3


class BagModel:
    """A text 'model' whose embedding is readable by hand: one axis per finding, +1 when a text names it, -1 when
    it names it negated ("no"/"not" before or after it), plus a small constant axis; the report head doubles it."""

    config = _Config()

    def eval(self):
        return self

    def tokenize(self, texts):
        return {"input_ids": list(texts), "attention_mask": None}

    def text_features(self, input_ids, attention_mask):
        rows = []
        for t in input_ids:
            t = t.lower()
            v = [0.0, 0.0, 0.1]
            for j, f in enumerate(FINDINGS):
                for m in re.finditer(f.lower(), t):
                    window = t[max(0, m.start() - 12) : m.end() + 12]
                    v[j] += -1.0 if re.search(r"\bno\b|\bnot\b", window) else 1.0
            rows.append(v)
        return torch.tensor(rows, dtype=torch.float64)

    def encode_text(self, input_ids, attention_mask):
        return 2.0 * self.text_features(input_ids, attention_mask)


@dataclass
class Rec:
    report_text: str
    labels: np.ndarray


def _reference(model_embed, records, labels):
    """mean7 probabilities from scratch: normalised prompt means, sigmoid of the cosine difference, sklearn AUROC."""
    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    aucs = []
    reports = unit(model_embed([r.report_text for r in records]))
    for j, f in enumerate(FINDINGS):
        pos = unit(unit(model_embed([p.format(a=f) for p, _ in MEAN7_TEMPLATES])).mean(0))
        neg = unit(unit(model_embed([q.format(a=f) for _, q in MEAN7_TEMPLATES])).mean(0))
        p = 1 / (1 + np.exp(-(reports @ pos - reports @ neg)))
        aucs.append(roc_auc_score(labels[:, j], p))
    return float(np.mean(aucs)), aucs


@pytest.mark.parametrize("space", ["report", "tower"])
def test_text_ceiling_matches_a_hand_computation(space):
    rng = np.random.default_rng(0)
    records = []
    for _ in range(40):
        y = (rng.random(2) < 0.4).astype(int)
        parts = [("Emphysema is seen." if y[0] else "No emphysema."),
                 ("Pleural effusion." if y[1] else "There is no pleural effusion.")]
        if rng.random() < 0.25:  # a report that contradicts its label now and then: the AUROC is not 1
            parts[0] = "No emphysema." if y[0] else "Emphysema is seen."
        records.append(Rec(" ".join(parts), y))
    labels = np.stack([r.labels for r in records])
    model = BagModel()
    res = text_ceiling(model, records, names=FINDINGS, space=space, n_boot=0)
    fn = model.encode_text if space == "report" else model.text_features
    want, per = _reference(lambda ts: fn(ts, None).numpy(), records, labels)
    assert res.macro_auroc == pytest.approx(want, abs=1e-12)
    assert [res.findings[f].auroc for f in FINDINGS] == pytest.approx(per, abs=1e-12)
    assert 0.5 < per[0] < 1.0 and per[1] == pytest.approx(1.0)


def test_negation_probe_cosines():
    got = negation_probe(BagModel(), "tower")
    # [0, 1, .1] vs [0, -1, .1]: cos = (-1 + .01) / 1.01
    assert got["Pleural effusion is present. | No pleural effusion."] == pytest.approx(-0.99 / 1.01, abs=1e-4)
    assert got["Emphysema. | No emphysema."] == pytest.approx(-0.99 / 1.01, abs=1e-4)
