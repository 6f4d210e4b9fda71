"""The built-in synthetic CT cohort: randomised chest phantoms with rendered CT-RATE findings, written as DICOM
and CT-RATE-layout NIfTI, with English and German reports that reference slices, and exact ground truth.

Entry point: ``make_cohort(out, n_studies, seed, res="demo")`` (CLI: ``radfinder synth``).
"""

from .cohort import make_cohort, plan_cohort
from .priors import PREVALENCE, sample_labels

__all__ = ["PREVALENCE", "make_cohort", "plan_cohort", "sample_labels"]
