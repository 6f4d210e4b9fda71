"""Check the per-anatomy normal flags against CT-CLIP's 800 manually labelled reports.

    .venv/bin/python scripts/eval_anatomy_flags.py [--csv PATH] [--split dev|held-out|all] [--errors] [--json]

For every (study, finding) pair whose finding is labelled present and maps to an anatomy (Cardiomegaly, Pericardial
effusion, Coronary artery wall calcification -> heart; Hiatal hernia -> esophagus; Arterial wall calcification ->
aorta; the lung findings -> lung), the anatomy must not be flagged normal; also printed: how often an anatomy
without any labelled finding is flagged normal. Rows 0-399 are the development half the rules were tuned on, rows
400-799 are held out (the labeler uses the same split: scripts/eval_labeler.py). --errors lists disagreeing pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from radfinder.eval.anatomy_flags import normal_flag_check  # noqa: E402
from radfinder.text.findings import CTRATE_FINDINGS  # noqa: E402
from radfinder.text.reports import read_ctclip_labeled  # noqa: E402

DEFAULT_CSV = REPO.parent / "shared" / "data" / "real" / "ct_clip_reports" / "train.csv"
SPLITS = {"dev": slice(0, 400), "held-out": slice(400, 800), "all": slice(0, 800)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--split", default="dev", choices=list(SPLITS))
    ap.add_argument("--errors", action="store_true", help="list the disagreeing pairs with their sentences")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not args.csv.is_file():
        print(f"error: manual-label CSV not found: {args.csv}", file=sys.stderr)
        return 2
    reports, labels = read_ctclip_labeled(args.csv)
    s = SPLITS[args.split]
    rows = reports[s]
    truth = labels[list(CTRATE_FINDINGS)].to_numpy()[s]
    res = normal_flag_check([(r.findings, r.impressions) for r in rows], truth, [r.id for r in rows])
    res["split"] = args.split
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"split {args.split}: {res['studies']} studies")
    print(f"{'anatomy':12s} {'pairs':>6s} {'not normal':>11s} {'unlabelled':>11s} {'flagged normal':>15s}")
    for a, v in res["per_anatomy"].items():
        rate = v["unlabelled_normal_rate"]
        print(f"{a:12s} {v['pairs']:6d} {v['agreement']:11.3f} {v['unlabelled']:11d} {rate:15.3f}")
    print(f"{'ALL':12s} {res['pairs']:6d} {res['agreement']:11.4f} {res['unlabelled']:11d} "
          f"{res['unlabelled_normal_rate']:15.3f}")  # fmt: skip
    print(f"\n{'finding':36s} {'pairs':>6s} {'not normal':>11s}")
    for f, v in res["per_finding"].items():
        print(f"{f:36s} {v['pairs']:6d} {v['agreement']:11.3f}")
    if args.errors or res["errors"]:
        print(f"\n{len(res['errors'])} pairs flagged normal:")
        for e in res["errors"]:
            print(f"- {e['study']} {e['finding']} ({e['anatomy']}): " + " | ".join(e["sentences"])[:400])
    return 0


if __name__ == "__main__":
    sys.exit(main())
