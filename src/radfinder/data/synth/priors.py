"""How often each CT-RATE abnormality occurs and which ones travel together, as constants.

Derivation (run once offline; the source CSV is CC BY-NC-SA and is not shipped, so only these summary numbers
live here): CT-RATE ``train_predicted_labels.csv`` (47,149 volumes) was collapsed to 24,128 studies (volumes of
one study never disagree). ``PREVALENCE`` is the per-study positive rate. For every pair of findings the
tetrachoric correlation (bivariate-normal latent correlation that reproduces the observed joint positive rate)
was solved for, and a 4-factor Gaussian model ``z = L f + e`` was fitted to that 18 x 18 matrix by least squares
on the off-diagonal (RMSE 0.048; e.g. arterial and coronary calcification 0.93 observed). Sampling ``z`` and
thresholding at ``Phi^-1(1 - p)`` reproduces each prevalence exactly and the pairwise co-occurrence closely.
Patients: 17,362 of 19,998 train patients have one study; the rest mostly 2 (1,864), 3 (434) or more.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from ...text.findings import CTRATE_FINDINGS

PREVALENCE: dict[str, float] = dict(
    zip(
        CTRATE_FINDINGS,
        (
            0.1196,
            0.2777,
            0.1072,
            0.0705,
            0.2475,
            0.1420,
            0.2534,
            0.1938,
            0.2557,
            0.4548,
            0.3666,
            0.2672,
            0.1185,
            0.0744,
            0.1034,
            0.1755,
            0.0999,
            0.0788,
        ),
        strict=True,
    )
)

# Factor loadings, rows in CTRATE_FINDINGS order. Factor 1 reads as overall disease burden / age, factor 2 as
# chronic airway disease (emphysema, nodules, scarring), factor 3 as acute airspace disease, factor 4 splits
# fluid (effusions) from calcification.
LOADINGS = np.array(
    [
        (+0.482, -0.110, -0.090, +0.185),
        (+0.849, +0.306, -0.089, -0.271),
        (+0.727, -0.174, -0.299, -0.184),
        (+0.522, -0.207, -0.068, +0.276),
        (+0.800, +0.251, -0.132, -0.255),
        (+0.343, +0.250, +0.026, -0.159),
        (+0.511, -0.048, +0.150, -0.023),
        (+0.358, +0.461, +0.149, +0.177),
        (+0.485, +0.018, -0.172, +0.236),
        (+0.088, +0.454, -0.025, +0.114),
        (+0.307, -0.458, +0.526, -0.343),
        (+0.182, +0.434, +0.109, -0.052),
        (+0.741, -0.434, -0.127, +0.443),
        (+0.400, +0.076, -0.348, -0.199),
        (+0.491, +0.277, +0.306, +0.168),
        (+0.360, -0.467, +0.381, -0.046),
        (+0.211, +0.454, +0.516, +0.182),
        (+0.524, -0.302, +0.152, -0.050),
    ],
    dtype=np.float64,
)

# Studies per patient beyond the first (CT-RATE train: 86.8 % single-study patients).
STUDIES_PER_PATIENT = {1: 0.868, 2: 0.093, 3: 0.022, 4: 0.009, 5: 0.008}

# Within a patient, follow-up studies keep most chronic findings: each label of a follow-up is resampled with
# this probability, otherwise copied from the patient's first study (our choice; CT-RATE gives no pairing data).
FOLLOWUP_RESAMPLE = 0.35


def sample_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """Draw ``n`` label vectors (n, 18) of 0/1 from the latent-factor model."""
    p = np.array([PREVALENCE[f] for f in CTRATE_FINDINGS])
    unique = np.clip(1.0 - (LOADINGS**2).sum(1), 0.02, 1.0)
    f = rng.standard_normal((n, LOADINGS.shape[1]))
    z = f @ LOADINGS.T + rng.standard_normal((n, len(p))) * np.sqrt(unique)
    # Normalise to unit variance so the threshold reproduces the prevalence even where communality was clipped.
    z /= np.sqrt((LOADINGS**2).sum(1) + unique)
    return (z > norm.ppf(1.0 - p)).astype(np.int8)


def sample_studies_per_patient(rng: np.random.Generator) -> int:
    k = np.array(list(STUDIES_PER_PATIENT))
    w = np.array(list(STUDIES_PER_PATIENT.values()))
    return int(rng.choice(k, p=w / w.sum()))
