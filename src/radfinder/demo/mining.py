"""Training labels of the demo from the rule labeler (snippet pairs come from `radfinder.data.mining`).

Training labels come from the TRAIN reports through `radfinder.text.labeler.RuleLabeler` (as in the paper,
where they come from the reports); the evaluation uses the cohort's own label table of the valid split
(the synthetic ground truth).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..text.findings import CTRATE_FINDINGS


def write_rule_labels(records: Sequence[Any], path: Path) -> dict[str, int]:
    """Label every record's report with the rule labeler; CSV with VolumeName + the 18 classes. Returns the
    positive count per finding."""
    from ..text.labeler import RuleLabeler

    labeler = RuleLabeler()
    counts: Counter[str] = Counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["VolumeName", *CTRATE_FINDINGS])
        for r in records:
            res = labeler.label(r.findings, r.impressions)
            row = [int(res.labels[f]) for f in CTRATE_FINDINGS]
            counts.update(f for f, v in zip(CTRATE_FINDINGS, row, strict=True) if v == 1)
            w.writerow([f"{r.key}.nii.gz", *row])
    tmp.replace(path)
    return {f: counts.get(f, 0) for f in CTRATE_FINDINGS}
