"""Score the rule-based labeler against CT-CLIP's 800 manually labelled reports.

    .venv/bin/python scripts/eval_labeler.py [--csv PATH] [--uncertain positive|negative|unknown]
        [--split dev|held-out|all] [--errors FINDING]

Prints per-finding F1 / precision / recall / AUROC and the macro means on rows 0-399 (the development half the
rules were tuned on), rows 400-799 (held out) and all 800. AUROC uses the labeler's confidence score. A label of
-1 (unknown) counts as negative for F1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from radfinder.text.findings import CTRATE_FINDINGS  # noqa: E402
from radfinder.text.labeler import RuleLabeler  # noqa: E402
from radfinder.text.reports import read_ctclip_labeled  # noqa: E402

DEFAULT_CSV = REPO.parent / "shared" / "data" / "real" / "ct_clip_reports" / "train.csv"


def evaluate(pred: np.ndarray, score: np.ndarray, truth: np.ndarray) -> dict[str, dict[str, float]]:
    out = {}
    for j, f in enumerate(CTRATE_FINDINGS):
        y, p = truth[:, j], (pred[:, j] == 1).astype(int)
        auc = roc_auc_score(y, score[:, j]) if 0 < y.sum() < len(y) else float("nan")
        out[f] = {
            "f1": f1_score(y, p, zero_division=0),
            "precision": precision_score(y, p, zero_division=0),
            "recall": recall_score(y, p, zero_division=0),
            "auroc": auc,
            "n_pos": int(y.sum()),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--uncertain", default="positive", choices=["positive", "negative", "unknown"])
    ap.add_argument("--split", default="all", choices=["dev", "held-out", "all"], help="which halves to print")
    ap.add_argument("--errors", default=None, help="print the clauses behind errors for this finding (dev half)")
    args = ap.parse_args(argv)
    if not args.csv.is_file():
        print(f"manual-label CSV not found: {args.csv}", file=sys.stderr)
        return 2
    reports, labels = read_ctclip_labeled(args.csv)
    truth = labels[list(CTRATE_FINDINGS)].to_numpy()
    lab = RuleLabeler(uncertain=args.uncertain)
    results = [lab.label(r.findings, r.impressions) for r in reports]
    pred = np.array([[res.labels[f] for f in CTRATE_FINDINGS] for res in results])
    score = np.array([[res.scores[f] for f in CTRATE_FINDINGS] for res in results])

    halves = {"dev 0-399": slice(0, 400), "held-out 400-799": slice(400, 800), "all 800": slice(0, 800)}
    if args.split != "all":
        halves = {k: v for k, v in halves.items() if k.startswith(args.split)}
    table = {name: evaluate(pred[s], score[s], truth[s]) for name, s in halves.items()}
    print(f"{'finding':36s}" + "".join(f"{n:>22s}" for n in halves))
    print(f"{'':36s}" + "      F1   AUROC   npos" * len(halves))
    for f in CTRATE_FINDINGS:
        row = "".join(f"   {t[f]['f1']:.3f}  {t[f]['auroc']:.3f}  {t[f]['n_pos']:4d}" for t in table.values())
        print(f"{f:36s}{row}")
    macro = "".join(
        f"   {np.mean([v['f1'] for v in t.values()]):.3f}  {np.nanmean([v['auroc'] for v in t.values()]):.3f}      "
        for t in table.values()
    )
    print(f"{'MACRO':36s}{macro}")

    if args.errors:
        j = CTRATE_FINDINGS.index(args.errors)
        for i in range(400):
            if (pred[i, j] == 1) != (truth[i, j] == 1):
                kind = "FP" if pred[i, j] == 1 else "FN"
                ms = [m for m in results[i].mentions if m.finding == args.errors]
                print(f"--- {kind} {reports[i].id}: " + " | ".join(f"[{m.status}] {m.clause}" for m in ms)[:600])
    return 0


if __name__ == "__main__":
    sys.exit(main())
