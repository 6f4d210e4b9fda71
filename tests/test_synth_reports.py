"""Report writing over many random lesion sets (no rendering): every phrase path runs, spans are exact,
references name the slice through the lesion, and both languages carry the same references."""

from __future__ import annotations

import re

import numpy as np

from radfinder.data.synth import find_other
from radfinder.data.synth.anatomy import sample_anatomy
from radfinder.data.synth.findings import plan_findings
from radfinder.data.synth.priors import sample_labels
from radfinder.data.synth.reports import SeriesIndex, write_report

META = {"age": 61, "sex": "F", "date": "20200101", "time": "12:30", "dlp": 250, "followup": True,
        "prior_date": "03/14/2019", "prior_date_de": "14.03.2019", "kernel": {"thin": "B70f", "thick": "B31f"}}


def _series(A, order_thin: str) -> list[SeriesIndex]:
    z = np.arange(A.z_dome_l - 90, A.z_apex + 20, 2.5)
    n = len(z)
    thin_inst = np.arange(1, n + 1) if order_thin == "ascending" else np.arange(n, 0, -1)
    zt = z[: n // 2 * 2].reshape(-1, 2).mean(1)
    return [SeriesIndex(3, z, thin_inst, 2.5, "thin"), SeriesIndex(5, zt, np.arange(1, len(zt) + 1), 5.0, "thick")]


def test_reports_over_random_lesion_sets():
    seen_forms = set()
    for seed in range(14):
        rng = np.random.default_rng(seed)
        A = sample_anatomy(rng)
        labels = np.ones(18, int) if seed % 3 == 0 else sample_labels(rng, 1)[0]
        lesions, _ = plan_findings(rng, A, labels)
        series = _series(A, "descending" if seed % 2 else "ascending")
        rep = write_report(np.random.default_rng(100 + seed), lesions, labels, series, META)
        by_no = {s.number: s for s in series}
        for ref in rep["refs"]:
            fld = rep[ref["field"]]
            assert fld[ref["start"] : ref["end"]] == ref["text"]
            s = by_no[ref["series"]]
            for img, les in zip(ref["images"], ref["lesions"], strict=True):
                k = int(np.nonzero(s.instances == img)[0][0])
                assert abs(s.zs[k] - lesions[les].center[2]) <= s.spacing / 2 + 1e-6
            seen_forms.add(re.sub(r"\d+", "N", ref["text"]))
        en = sorted((r["series"], tuple(r["images"])) for r in rep["refs"] if r["lang"] == "en")
        de = sorted((r["series"], tuple(r["images"])) for r in rep["refs"] if r["lang"] == "de")
        assert en == de
        assert "⟦" not in "".join(str(v) for v in rep.values())
    # The miner has to face the whole variety of forms, in both languages.
    forms = ("series N, image N", "Se N, Im N", "image N of series N", "N:N", "serial N image N", "Serie N, Bild N")
    for form in forms:
        assert form in seen_forms, form


def test_every_device_kind_is_worded():
    kinds = set()
    rng = np.random.default_rng(0)
    A = sample_anatomy(rng)
    labels = np.zeros(18, int)
    labels[0] = 1
    for seed in range(40):
        les, _ = find_other.medical_material(np.random.default_rng(seed), A)
        kinds.add(les[0].kind)
        rep = write_report(np.random.default_rng(seed), les, labels, _series(A, "ascending"), META)
        assert rep["Findings_EN"] and rep["Befund"]
    assert kinds == {"port catheter", "pacemaker", "central venous catheter", "sternotomy wires"}
