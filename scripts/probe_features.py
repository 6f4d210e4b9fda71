"""Linear probe of frozen window features (see `radfinder.eval.probe`).

    .venv/bin/python scripts/probe_features.py DEMO_OUT [--c 0.1] [--json]
        a demo run's cached features: fitted on its train split, scored on its held-out valid split
    .venv/bin/python scripts/probe_features.py --cohort PROBE_DIR --encoder NAME [--n-boot 10000] [--json]
        a probe cohort (`radfinder synth PROBE_DIR --stream probe --studies 900 --valid-fraction 0.55`: its own
        random stream, disjoint from pre-training and from every demo seed); NAME is pretrained-synthetic,
        histogram, filterbank, histogram+filterbank (the two caches side by side), or a
        `radfinder pretrain-encoder` output folder (RUN/encoder)

Labels are the cohort's ground truth. Prints per finding the AUROC, its 95% bootstrap CI and the test positives.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from radfinder.data.ctrate import load_ctrate  # noqa: E402
from radfinder.eval.bootstrap import DEFAULT_N_BOOT  # noqa: E402
from radfinder.eval.probe import linear_probe, probe_cohort, scan_vectors  # noqa: E402
from radfinder.features import FeatureStore  # noqa: E402
from radfinder.text.findings import CTRATE_FINDINGS  # noqa: E402


def print_table(res: dict) -> None:
    print(f"linear probe ({res.get('encoder', 'demo features')}), train {res['n_train']} -> test {res['n_test']} "
          f"scans, C={res['C']}")  # fmt: skip
    print(f"  {'finding':<36} {'AUROC':>6}  {'95% CI':<15} positives")
    for name, v in res["per_finding_auroc"].items():
        lo, hi = res["per_finding_ci"].get(name, (float("nan"), float("nan")))
        print(f"  {name:<36} {v:6.3f}  [{lo:.3f}, {hi:.3f}]  {res['test_positives'][name]:>4}")
    print(f"  {'macro AUROC':<36} {res['macro_auroc']:6.3f}   (lowest finding {res['min_auroc']:.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=None, type=Path, help="a demo output folder")
    ap.add_argument("--cohort", type=Path, help="a probe cohort (synth --stream probe)")
    ap.add_argument("--encoder", default="pretrained-synthetic")
    ap.add_argument("--c", type=float, default=0.1, help="inverse L2 strength of the logistic regressions")
    ap.add_argument("--n-boot", type=int, default=DEFAULT_N_BOOT)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.cohort is not None:
        res = probe_cohort(a.cohort, a.encoder, c=a.c, n_boot=a.n_boot, show_progress=not a.json)
    else:
        out = a.out or Path("demo-out")
        store = FeatureStore.open(out / "features")
        split = {s: load_ctrate(out / "cohort", split=s, mode="first_all") for s in ("train", "valid")}
        x = {s: scan_vectors(store, [r.key for r in recs]) for s, recs in split.items()}
        y = {s: np.stack([r.labels for r in recs]) for s, recs in split.items()}
        res = linear_probe(x["train"], y["train"], x["valid"], y["valid"], CTRATE_FINDINGS, c=a.c, n_boot=a.n_boot)
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print_table(res)


if __name__ == "__main__":
    main()
