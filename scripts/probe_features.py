"""Linear probe of a demo run's frozen window features (see `radfinder.eval.probe`).

    .venv/bin/python scripts/probe_features.py [DEMO_OUT] [--c 0.1] [--json]

Fits on the demo's train split, scores on its held-out valid split, with the cohort's ground-truth labels.
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
from radfinder.eval.probe import linear_probe, scan_vectors  # noqa: E402
from radfinder.features import FeatureStore  # noqa: E402
from radfinder.text.findings import CTRATE_FINDINGS  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="demo-out", type=Path)
    ap.add_argument("--c", type=float, default=0.1, help="inverse L2 strength of the logistic regressions")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    store = FeatureStore.open(a.out / "features")
    split = {s: load_ctrate(a.out / "cohort", split=s, mode="first_all") for s in ("train", "valid")}
    x = {s: scan_vectors(store, [r.key for r in recs]) for s, recs in split.items()}
    y = {s: np.stack([r.labels for r in recs]) for s, recs in split.items()}
    res = linear_probe(x["train"], y["train"], x["valid"], y["valid"], CTRATE_FINDINGS, c=a.c)
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print(f"linear probe, train {res['n_train']} -> valid {res['n_test']} scans, C={a.c}")
    for name, v in res["per_finding_auroc"].items():
        print(f"  {name:<36} {v:.3f}")
    print(f"  {'macro AUROC':<36} {res['macro_auroc']:.3f}")


if __name__ == "__main__":
    main()
