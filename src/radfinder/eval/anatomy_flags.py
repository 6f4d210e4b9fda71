"""Do per-anatomy normal flags contradict manual finding labels? (fVLM's normal flag, on real labelled reports.)

fVLM treats two studies whose anatomy texts are both flagged normal as a positive pair, so an anatomy flagged
normal although the study has a labelled finding of it is a wrong positive. `normal_flag_check` counts, over the
(study, finding) pairs whose finding is labelled 1 and maps to an anatomy (`FINDING_ANATOMY`: e.g. Pericardial
effusion and Coronary artery wall calcification -> heart), how often that anatomy is NOT flagged normal (the target
is close to 1), and, because a flagger that never says "normal" would pass that, how often an anatomy without any
labelled finding is flagged normal (no truth: reports also describe abnormalities outside the 18 findings, so this
rate is a guard against lost normals, not an accuracy).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import RadfinderError
from ..text.anatomy import FINDING_ANATOMY, SentenceAssigner, anatomy_texts
from ..text.findings import CTRATE_FINDINGS


def normal_flag_check(
    reports: list[tuple[str, str]],
    labels: Any,
    ids: list[str] | None = None,
    lang: str = "en",
    assigner: SentenceAssigner | None = None,
    findings: tuple[str, ...] = CTRATE_FINDINGS,
) -> dict[str, Any]:
    """reports: (findings, impression) per study; labels: (N, F) manual labels (1 present) in `findings` order.

    Returns the pair agreement (`pairs`, `pairs_not_normal`, `agreement`), per finding and per anatomy, the rate at
    which anatomies without a labelled finding are flagged normal (`unlabelled_normal_rate`, per anatomy too), and
    every disagreeing pair with the sentences the anatomy text was built from (`errors`)."""
    y = np.asarray(labels)
    if y.shape != (len(reports), len(findings)):
        raise RadfinderError(f"labels must be ({len(reports)}, {len(findings)}), got {y.shape}")
    ids = list(ids) if ids is not None else [str(i) for i in range(len(reports))]
    anatomies = sorted({a for a in FINDING_ANATOMY.values() if a}, key=list(FINDING_ANATOMY.values()).index)
    per_finding: dict[str, list[int]] = {}
    per_anatomy_pairs = {a: [0, 0] for a in anatomies}
    unl = {a: [0, 0] for a in anatomies}  # [flagged normal, studies without a labelled finding]
    errors: list[dict[str, Any]] = []
    for n, (fi, im) in enumerate(reports):
        texts = anatomy_texts(fi, im, lang, assigner)
        normal = {a: not texts[a].abnormal for a in anatomies}
        labelled = set()
        for j, f in enumerate(findings):
            a = FINDING_ANATOMY.get(f)
            if a is None or y[n, j] != 1:
                continue
            labelled.add(a)
            ok = not normal[a]
            per_finding.setdefault(f, [0, 0])
            per_finding[f][0] += ok
            per_finding[f][1] += 1
            per_anatomy_pairs[a][0] += ok
            per_anatomy_pairs[a][1] += 1
            if not ok:
                errors.append({"study": ids[n], "finding": f, "anatomy": a, "sentences": list(texts[a].sentences)})
        for a in anatomies:
            if a not in labelled:
                unl[a][0] += normal[a]
                unl[a][1] += 1
    pairs = sum(v[1] for v in per_anatomy_pairs.values())
    hits = sum(v[0] for v in per_anatomy_pairs.values())
    unl_n = sum(v[1] for v in unl.values())
    unl_k = sum(v[0] for v in unl.values())

    def rate(k: int, m: int) -> float:
        return k / m if m else float("nan")

    return {
        "studies": len(reports),
        "pairs": pairs,
        "pairs_not_normal": hits,
        "agreement": rate(hits, pairs),
        "per_finding": {f: {"pairs": v[1], "agreement": rate(*v)} for f, v in per_finding.items()},
        "per_anatomy": {
            a: {
                "pairs": per_anatomy_pairs[a][1],
                "agreement": rate(*per_anatomy_pairs[a]),
                "unlabelled": unl[a][1],
                "unlabelled_normal_rate": rate(*unl[a]),
            }
            for a in anatomies
        },
        "unlabelled": unl_n,
        "unlabelled_normal_rate": rate(unl_k, unl_n),
        "errors": errors,
    }
