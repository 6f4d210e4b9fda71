"""The generator bank: what the offline report generator learned from the TRAINING split, as one JSON file.

It holds, fitted on training studies only:
- **thresholds**: per finding, the cut on the model's zero-shot probability that maximises F1 of "probability >=
  cut" against the training reports' own labels (the rule labeler's, never ground truth); a finding without a
  positive training report gets no threshold (never written);
- **positive sentences**: per finding, the findings-section sentence variants of training reports that the labeler
  ties to it (references cut out), with their counts, mean relative position, anatomy and every finding they state;
- **impression items**: per finding, the impression items of training reports that state it;
- **absent sentences**: statements of absence ("No pleural effusion.") and normal sentences that name no finding
  ("Trachea and main bronchi are patent."), each kept when at least `min_df` of the training reports that could
  carry it do, with the most common wording, and not beside a finding whose positive training reports say it at
  under half that rate (`excluded_by`); per anatomy the most common normal sentence as a fallback. Default
  `min_df` 0.2, fixed before any measurement from the ROUGE-L F-measure: adding L tokens that a reference holds
  with probability q raises the expected F (about 2 LCS / (|candidate| + |reference|)) when q > F / 2, and report
  generators score F ~ 0.3-0.4 (a majority rule, 0.5, leaves out sentences most references still gain from);
- **normal impression**: the most common impression of training reports without a positive finding.

No pickle: `save` writes JSON atomically, `load` checks format and version.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import RadfinderError
from ...progress import progress
from ...text.anatomy import RuleAssigner
from ...text.findings import CTRATE_FINDINGS
from .sentences import TaggedSentence, tag_section

BANK_FORMAT = "radfinder-generator-bank"
BANK_VERSION = 1


class BankError(RadfinderError):
    """A generator bank that is missing, unreadable or does not fit the model or the data."""


def f1_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float | None, float]:
    """(cut, F1) maximising F1 of `scores >= cut` against binary `labels` (-1 entries ignored). The cut is the
    midpoint between the lowest score called positive and the next lower score (the chosen score itself when it
    is the lowest); (None, 0.0) when there is no positive label."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    keep = y >= 0
    s, y = s[keep], y[keep] == 1
    n_pos = int(y.sum())
    if n_pos == 0:
        return None, 0.0
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    k = np.arange(1, len(s) + 1)
    # only cut between distinct scores: a cut cannot separate equal scores
    last_of_run = np.r_[s[1:] != s[:-1], True]
    f1 = np.where(last_of_run, 2 * tp / (k + n_pos), -1.0)
    i = int(np.argmax(f1))
    cut = s[i] if i + 1 == len(s) else 0.5 * (s[i] + s[i + 1])
    return float(cut), float(f1[i])


@dataclass
class GeneratorBank:
    findings: list[str]
    thresholds: dict[str, float | None]
    threshold_info: dict[str, dict[str, Any]]
    positive: dict[str, list[dict[str, Any]]]
    impression: dict[str, list[dict[str, Any]]]
    absent: list[dict[str, Any]]
    anatomy_normal: dict[str, dict[str, Any]]
    normal_impression: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": BANK_FORMAT, "version": BANK_VERSION, **asdict(self)}

    def save(self, path: str | Path) -> Path:
        from ...preprocess.cache import atomic_write_bytes

        path = Path(path)
        atomic_write_bytes(path, (json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n").encode())
        return path

    @classmethod
    def load(cls, path: str | Path) -> GeneratorBank:
        path = Path(path)
        if not path.is_file():
            raise BankError(f"{path}: generator bank not found (build one with `radfinder generate-fit`)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BankError(f"{path}: not a readable JSON generator bank ({exc})") from exc
        fmt = data.get("format") if isinstance(data, dict) else None
        if fmt != BANK_FORMAT:
            raise BankError(f"{path}: not a radfinder generator bank (format {fmt!r})")
        if data.get("version") != BANK_VERSION:
            raise BankError(f"{path}: generator bank version {data.get('version')}, expected {BANK_VERSION}")
        try:
            return cls(**{k: v for k, v in data.items() if k not in ("format", "version")})
        except TypeError as exc:
            raise BankError(f"{path}: malformed generator bank ({exc})") from exc


def _variants(items: list[TaggedSentence], max_variants: int) -> list[dict[str, Any]]:
    """Group sentences by normalised text: the most common surface form, count, mean position, anatomy, findings."""
    groups: dict[str, list[TaggedSentence]] = defaultdict(list)
    for t in items:
        groups[t.key].append(t)
    rows = []
    for ts in groups.values():
        text = min(Counter(t.text for t in ts).most_common(), key=lambda kv: (-kv[1], len(kv[0]), kv[0]))[0]
        rows.append({
            "text": text, "count": len(ts), "position": float(np.mean([t.position for t in ts])),
            "anatomy": ts[0].anatomy, "affirmed": list(ts[0].affirmed),
        })  # fmt: skip
    rows.sort(key=lambda r: (-r["count"], len(r["text"]), r["text"]))
    return rows[:max_variants]


def fit_bank(
    reports: Sequence[tuple[str, str]],
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    report_ids: Sequence[str] | None = None,
    findings: Sequence[str] = CTRATE_FINDINGS,
    min_df: float = 0.2,
    max_variants: int = 32,
    lang: str = "en",
    meta: dict[str, Any] | None = None,
    show_progress: bool = False,
) -> GeneratorBank:
    """Fit a bank on training studies: `reports` (findings, impressions) per study/volume, the model's zero-shot
    `scores` (N, F) on them and their report-derived `labels` (N, F; 1/0/-1). `report_ids` marks volumes that share
    a report, so each report's sentences count once. See the module doc."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    n, f_n = len(reports), len(findings)
    if n == 0:
        raise BankError("no training reports to fit a generator bank on")
    if scores.shape != (n, f_n) or labels.shape != (n, f_n):
        raise BankError(f"scores {scores.shape} and labels {labels.shape} must both be ({n}, {f_n})")
    if not np.isfinite(scores).all():
        raise BankError("the training scores hold NaN or inf")
    if not 0 < min_df <= 1:
        raise BankError(f"min_df must be in (0, 1], got {min_df}")
    thresholds, info = {}, {}
    for k, f in enumerate(findings):
        cut, f1 = f1_threshold(scores[:, k], labels[:, k])
        thresholds[f] = cut
        info[f] = {"n_pos": int((labels[:, k] == 1).sum()), "n_known": int((labels[:, k] >= 0).sum()), "train_f1": f1}
    # one entry per distinct report
    ids = list(report_ids) if report_ids is not None else [str(i) for i in range(n)]
    first = list({rid: i for i, rid in reversed(list(enumerate(ids)))}.values())
    first.sort()
    assigner = RuleAssigner()
    fnd, imp = [], []
    for i in progress(first, total=len(first), desc="tag training reports", enabled=show_progress):
        fnd.append(tag_section(reports[i][0], "findings", assigner, lang))
        imp.append(tag_section(reports[i][1], "impressions", assigner, lang))
    pos_labels = labels[first] == 1
    fidx = {f: k for k, f in enumerate(findings)}

    positive = {f: _variants([t for r in fnd for t in r if f in t.affirmed], max_variants) for f in findings}
    impression = {f: _variants([t for r in imp for t in r if f in t.affirmed], max_variants) for f in findings}

    # absent-type topics: a set of negated findings, or a normal sentence naming no finding (its own text)
    topics: dict[tuple, list[tuple[int, TaggedSentence]]] = defaultdict(list)
    for j, sents in enumerate(fnd):
        for t in sents:
            if t.affirmed:
                continue
            key = ("neg", *sorted(t.negated)) if t.negated else ("normal", t.key)
            topics[key].append((j, t))
    absent, by_anatomy = [], {}
    for key, occ in topics.items():
        negated = list(key[1:]) if key[0] == "neg" else []
        known = [fidx[f] for f in negated if f in fidx]
        could = np.ones(len(first), bool) if not known else ~pos_labels[:, known].any(axis=1)
        docs = {j for j, _ in occ}
        df = len(docs) / max(1, int(could.sum()))
        # findings whose positive reports (nearly) never say it: "Heart size is normal." is not written beside a
        # cardiomegaly (its rate there is under half its rate overall)
        has = np.zeros(len(first), bool)
        has[sorted(docs)] = True
        excluded = [f for k, f in enumerate(findings) if pos_labels[:, k].any()
                    and has[pos_labels[:, k]].mean() < 0.5 * df and f not in negated]  # fmt: skip
        row = _variants([t for _, t in occ], 1)[0] | {"negated": negated, "df": df, "excluded_by": excluded}
        row.pop("affirmed")
        if df >= min_df:
            absent.append(row)
        a = row["anatomy"]
        if a is not None and (a not in by_anatomy or df > by_anatomy[a]["df"]):
            by_anatomy[a] = row
    absent.sort(key=lambda r: r["position"])

    normal_imps = Counter(" ".join(t.text for t in imp[j]) for j in range(len(first)) if not pos_labels[j].any())
    normal_imps.pop("", None)
    if normal_imps:
        normal_impression = min(normal_imps.items(), key=lambda kv: (-kv[1], len(kv[0]), kv[0]))[0]
    else:
        plain = Counter(t.text for r in imp for t in r if not t.affirmed)
        normal_impression = plain.most_common(1)[0][0] if plain else "No acute abnormality."
    info_meta = {"n_volumes": n, "n_reports": len(first), "min_df": min_df, "max_variants": max_variants,
                 "lang": lang, "threshold_rule": "F1-optimal cut per finding on the training split's zero-shot "
                 "probabilities against the training reports' rule-labeler labels"}  # fmt: skip
    return GeneratorBank(
        findings=list(findings), thresholds=thresholds, threshold_info=info, positive=positive,
        impression=impression, absent=absent, anatomy_normal=by_anatomy, normal_impression=normal_impression,
        meta=info_meta | dict(meta or {}),
    )  # fmt: skip
