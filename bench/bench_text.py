"""Report-text throughput on one core: reference miner and rule labeler, in CT-RATE-length reports per second.

Uses the 800 real CT-CLIP reports when ../shared/data/real is present (RADFINDER_SHARED overrides the folder, as
in the tests; repeated to a few thousand), else synthetic CT-RATE-style text built here. Prints each stage's ratio
to its target (miner 50,000 reports/s, labeler 1,000 reports/s, issue 16), the labeler's speed-up over the same
rules run on every clause without literal gates (same labels), and the ratio of each stage to a plain
`str.lower()` pass over the same reports as a machine-speed reference. CPU time (`process_time`), best of 3.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from radfinder.text import labeler as labeler_mod  # noqa: E402
from radfinder.text.labeler import RuleLabeler  # noqa: E402
from radfinder.text.references import mine_references  # noqa: E402

TARGET = 50_000
TARGET_LABELER = 1_000
SHARED = Path(os.environ.get("RADFINDER_SHARED", REPO.parent / "shared"))  # as in tests/conftest.py
REAL = SHARED / "data" / "real" / "ct_clip_reports" / "train.csv"

_SENTENCES = [
    "Trachea, both main bronchi are open.",
    "Mediastinal main vascular structures, heart contour, size are normal.",
    "Thoracic aorta diameter is normal.",
    "Pericardial effusion-thickening was not observed.",
    "No enlarged lymph nodes in prevascular, pre-paratracheal, subcarinal or bilateral hilar-axillary "
    "pathological dimensions were detected.",
    "When examined in the lung parenchyma window; aeration of both lung parenchyma is normal.",
    "A nonspecific nodule with a diameter of 4 mm is observed in the right lung lower lobe.",
    "Pleural effusion-thickening was not detected.",
    "Upper abdominal organs included in the sections are normal.",
    "No space-occupying lesion was detected in the liver that entered the cross-sectional area.",
    "Bilateral adrenal glands were normal and no space-occupying lesion was detected.",
    "Bone structures in the study area are natural. Vertebral corpus heights are preserved.",
    "Calcific atheroma plaques are observed in the aorta and coronary arteries.",
    "Subsegmental atelectasis is observed in the lower lobes, measuring approx. 2.5 x 1.1 cm.",
]


def corpus() -> tuple[list[str], str]:
    if REAL.is_file():
        import pandas as pd

        texts = pd.read_csv(REAL)["report_text"].tolist()
        return texts * 5, f"real CT-CLIP reports ({len(texts)} x 5)"
    rng = random.Random(0)
    texts = []
    for i in range(4000):
        sents = rng.sample(_SENTENCES, 12) + rng.sample(_SENTENCES, 2)
        if i % 30 == 0:  # a few percent of reports carry a reference, as in CT-RATE
            sents.insert(6, "A 5 mm nodule in the right upper lobe (series 3, image 129).")
        texts.append(" ".join(sents))
    return texts, "synthetic CT-RATE-style reports (4000)"


def rate(fn, texts: list[str], repeats: int = 3) -> float:
    best = 0.0
    for _ in range(repeats):
        t0 = time.process_time()
        for t in texts:
            fn(t)
        dt = time.process_time() - t0
        best = max(best, len(texts) / max(dt, 1e-9))
    return best


def main() -> int:
    texts, what = corpus()
    mean_len = sum(map(len, texts)) / len(texts)
    print(f"corpus: {what}, mean {mean_len:.0f} chars")
    ref = rate(str.lower, texts)
    miner = rate(mine_references, texts)
    lab = RuleLabeler()
    sub = texts[: len(texts) // 5]
    labeler = rate(lambda t: lab.label(t), sub)
    ungated = rate(lambda t: labeler_mod.find_mentions(t, gated=False), sub[: len(sub) // 2], repeats=1)
    same = all(
        [(m.finding, m.status) for m in labeler_mod.find_mentions(t)]
        == [(m.finding, m.status) for m in labeler_mod.find_mentions(t, gated=False)]
        for t in sub
    )
    n_refs = sum(len(mine_references(t)) for t in texts)
    print(f"str.lower reference: {ref:,.0f} reports/s")
    print(
        f"miner:   {miner:,.0f} reports/s ({n_refs} references), {miner / TARGET:.2f}x the {TARGET:,}/s target, "
        f"{ref / miner:.1f}x slower than str.lower"
    )
    print(
        f"labeler: {labeler:,.0f} reports/s (rules, 18 findings), {labeler / TARGET_LABELER:.2f}x the "
        f"{TARGET_LABELER:,}/s target, {labeler / ungated:.2f}x the same rules without literal gates "
        f"({ungated:,.0f}/s; mentions identical: {same}), {ref / labeler:.0f}x slower than str.lower"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
