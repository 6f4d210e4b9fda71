"""Synthetic report texts with their truth, without rendering volumes (shared by the text tests)."""

from __future__ import annotations

import numpy as np

from radfinder.data.synth.anatomy import sample_anatomy
from radfinder.data.synth.cohort import plan_cohort
from radfinder.data.synth.findings import plan_findings
from radfinder.data.synth.reports import SeriesIndex, write_report
from radfinder.data.synth.study import FINDINGS, TEXT, rng_for


def text_cohort(n: int, seed: int) -> list[dict]:
    """Synthetic studies' reports and lesion truth without rendering volumes (the generator's own planning and
    report writer; the series are stand-ins with 1 mm and 5 mm slices)."""
    out = []
    for plan in plan_cohort(n, seed):
        A = sample_anatomy(rng_for(seed, 1, plan["patient_index"]))
        labels = np.array(plan["labels"], dtype=np.int8)
        lesions, _ = plan_findings(rng_for(seed, FINDINGS, plan["index"]), A, labels)
        zs = np.arange(-400.0, 50.0, 1.0)
        series = [SeriesIndex(3, zs, np.arange(1, len(zs) + 1), 1.0, "thin"),
                  SeriesIndex(4, zs[::5], np.arange(1, len(zs[::5]) + 1), 5.0, "thick")]  # fmt: skip
        meta = {k: plan[k] for k in ("age", "sex", "time", "dlp", "followup", "prior_date", "prior_date_de")}
        rep = write_report(rng_for(seed, TEXT, plan["index"]), lesions, labels, series, meta)
        texts = {
            "en": {k: rep[k] for k in ("Findings_EN", "Impressions_EN")},
            "de": {k: rep[k] for k in ("Befund", "Beurteilung")},
        }
        out.append({"study": plan["study"], "lesions": [x.to_json() for x in lesions], "texts": texts,
                    "labels": [int(x) for x in labels]})  # fmt: skip
    return out
