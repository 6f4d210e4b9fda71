"""Label prevalence and co-occurrence of the generator follow the constants derived from CT-RATE."""

from __future__ import annotations

import numpy as np

from radfinder.data.synth import PREVALENCE, plan_cohort, sample_labels
from radfinder.text.findings import CTRATE_FINDINGS


def test_sampled_prevalence_matches_constants():
    y = sample_labels(np.random.default_rng(0), 40000)
    p = np.array([PREVALENCE[f] for f in CTRATE_FINDINGS])
    np.testing.assert_allclose(y.mean(0), p, atol=0.012)


def test_calcifications_travel_together_and_effusions_with_cardiomegaly():
    y = sample_labels(np.random.default_rng(1), 40000).astype(float)
    c = np.corrcoef(y.T)
    i = {f: n for n, f in enumerate(CTRATE_FINDINGS)}
    # In CT-RATE arterial and coronary calcification are nearly always reported together.
    assert c[i["Arterial wall calcification"], i["Coronary artery wall calcification"]] > 0.45
    assert c[i["Pleural effusion"], i["Cardiomegaly"]] > 0.15
    assert abs(c[i["Lung nodule"], i["Consolidation"]]) < 0.15


def test_cohort_plan_prevalence_roughly_follows_constants():
    plans = plan_cohort(600, 3)
    y = np.array([p["labels"] for p in plans])
    p = np.array([PREVALENCE[f] for f in CTRATE_FINDINGS])
    # Follow-ups copy most labels of the patient's first study, so the effective sample is smaller.
    assert np.all(np.abs(y.mean(0) - p) < 0.07)
