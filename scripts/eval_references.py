"""Precision and recall of the slice-reference miner on the hand-written style corpus.

    .venv/bin/python scripts/eval_references.py [--corpus tests/data/reference_styles.txt] [--split dev|held|all]
                                                [--errors]

A mined reference is a true positive when its (series, images) equals the next unmatched key entry of the same
sentence with those values (order-free within a sentence); everything else mined is a false positive, every key
entry left over a false negative. Prints the figures per split and per style, and the target check
(recall >= 0.97 at precision >= 0.995).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from radfinder.text.references import mine_references  # noqa: E402

DEFAULT = REPO / "tests" / "data" / "reference_styles.txt"
Ref = tuple[int | None, tuple[int, ...]]


def parse_key(key: str) -> list[Ref]:
    if key.strip() == "none":
        return []
    out: list[Ref] = []
    for item in key.split(";"):
        series, images = item.strip().split(":")
        imgs: list[int] = []
        for part in images.split(","):
            if ".." in part:
                a, b = map(int, part.split(".."))
                imgs.extend(range(a, b + 1))
            else:
                imgs.append(int(part))
        out.append((None if series == "-" else int(series), tuple(imgs)))
    return out


def read_corpus(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        split, style, key, text = (x.strip() for x in line.split("|", 3))
        rows.append({"line": n, "split": split, "style": style, "key": parse_key(key), "text": text})
    return rows


def score(rows: list[dict]) -> tuple[Counter, list[str]]:
    c: Counter = Counter()
    errors = []
    for r in rows:
        got = [(m.series, tuple(m.images)) for m in mine_references(r["text"])]
        left = list(r["key"])
        tp = 0
        for g in got:
            if g in left:
                left.remove(g)
                tp += 1
        c["tp"] += tp
        c["fp"] += len(got) - tp
        c["fn"] += len(left)
        if len(got) != tp or left:
            errors.append(f"line {r['line']} [{r['split']}/{r['style']}] got {got} want {r['key']}: {r['text']}")
    return c, errors


def pr(c: Counter) -> tuple[float, float]:
    return c["tp"] / max(1, c["tp"] + c["fp"]), c["tp"] / max(1, c["tp"] + c["fn"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT)
    ap.add_argument("--split", default="all", choices=["dev", "held", "all"])
    ap.add_argument("--errors", action="store_true", help="print every sentence the miner gets wrong")
    args = ap.parse_args(argv)
    rows = [r for r in read_corpus(args.corpus) if args.split in ("all", r["split"])]
    total, errors = score(rows)
    for name, sel in [(f"split {s}", [r for r in rows if r["split"] == s]) for s in ("dev", "held")] + [
        (f"style {s}", [r for r in rows if r["style"] == s]) for s in ("us", "ctrate", "de", "neg")
    ]:
        if sel and name == "style neg":
            c, _ = score(sel)
            print(f"{name:13s} {len(sel):4d} sentences without references: {c['fp']} false positives")
        elif sel:
            c, _ = score(sel)
            p, rc = pr(c)
            print(f"{name:13s} {len(sel):4d} sentences, {c['tp'] + c['fn']:4d} refs: precision {p:.4f} recall {rc:.4f}")
    p, rc = pr(total)
    ok = p >= 0.995 and rc >= 0.97
    print(
        f"{'all':13s} {len(rows):4d} sentences, {total['tp'] + total['fn']:4d} refs: precision {p:.4f} recall "
        f"{rc:.4f} (tp {total['tp']}, fp {total['fp']}, fn {total['fn']}); target recall >= 0.97 at precision "
        f">= 0.995: {'met' if ok else 'NOT met'}"
    )
    if args.errors:
        print("\n".join(errors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
