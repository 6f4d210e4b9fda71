"""Sentence-to-anatomy accuracy of a `SentenceAssigner` on a synthetic cohort, against the generator's truth.

Truth comes from the lesions in ``truth.jsonl``, not from the assigner's rules: each lesion's anatomy follows from
where the generator put it (its ``location``: a lobe, a pleural space, the heart, a coronary artery, the aortic arch,
the hiatus, ...; lymph nodes and devices sit in no anatomy). The report writer (`radfinder.data.synth.reports`)
renders one findings sentence per finding present, in a fixed section order, between negations (from the phrase
tables' ``NEGATIVE`` lists) and fixed normal lines, and one numbered impression item per finding for the first
five; the two closing findings sentences are upper-abdomen and spine remarks. Aligning a report's sentences with
that plan tells which finding, and so which lesions, each sentence renders. A study whose sentence count does not
fit the plan is counted as unaligned and left out (reported).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from ..data.synth import phrases_de, phrases_en
from ..data.synth.reports import SECTIONS
from ..errors import RadfinderError
from ..text.anatomy import FINDING_ANATOMY, RuleAssigner, SentenceAssigner, anatomy_texts, split_section

# Lesion location (as the synthetic renderers name it) -> anatomy. Lung locations: lobes, lobe pairs, pleural spaces.
_LUNG_WORDS = ("lobe", "lung", "lingula", "pleural space", "subpleural")
_LOCATION_ANATOMY = {
    "heart": "heart",
    "pericardium": "heart",
    "LAD": "heart",
    "RCA": "heart",
    "LCx": "heart",
    "aortic arch": "aorta",
    "descending aorta": "aorta",
    "ascending aorta": "aorta",
    "hiatus": "esophagus",
}
# Lesions that are not organ tissue: lymph nodes and devices lie outside every anatomy mask.
_NO_ANATOMY_FINDINGS = ("Lymphadenopathy", "Medical material")
_FIELDS = {"en": ("Findings_EN", "Impressions_EN"), "de": ("Befund", "Beurteilung")}
_PHRASES = {"en": phrases_en, "de": phrases_de}


def lesion_anatomy(lesion: dict[str, Any]) -> str | None:
    """Where a synthetic lesion sits, from its recorded facts (finding kind and location)."""
    if lesion["finding"] in _NO_ANATOMY_FINDINGS:
        return None
    loc = str(lesion.get("location") or "")
    if loc in _LOCATION_ANATOMY:
        return _LOCATION_ANATOMY[loc]
    if any(w in loc for w in _LUNG_WORDS):
        return "lung"
    raise RadfinderError(f"unknown synthetic lesion location {loc!r} ({lesion['finding']}); extend the truth table")


def _negations(lang: str) -> dict[str, str]:
    return {s: f for f, opts in _PHRASES[lang].NEGATIVE.items() for s in opts}


def align_study(truth: dict[str, Any], lang: str) -> list[dict[str, Any]] | None:
    """Each sentence of the study's findings and impression with its kind ("positive", "negative", "other"), the
    finding it renders or negates, and the truth anatomies; None when the sentences do not fit the plan."""
    by_finding: dict[str, list[dict]] = {}
    for les in truth["lesions"]:
        by_finding.setdefault(les["finding"], []).append(les)
    order = [f for sec in SECTIONS for f in sec if f in by_finding]
    negs = _negations(lang)
    normal_lines = set(_PHRASES[lang].NORMAL_LINES)
    f_field, i_field = _FIELDS[lang]
    texts = truth["texts"][lang]
    findings = split_section(texts[f_field], "findings")
    impression = split_section(texts[i_field], "impression")
    out: list[dict[str, Any]] = []
    body, tail = findings[:-2], findings[-2:]
    positives = []
    for s, _, _ in body:
        if s in negs:
            out.append({"sentence": s, "section": "findings", "kind": "negative", "finding": negs[s]})
        elif s in normal_lines:
            out.append({"sentence": s, "section": "findings", "kind": "other", "finding": None})
        else:
            positives.append(len(out))
            out.append({"sentence": s, "section": "findings", "kind": "positive", "finding": None})
    if len(positives) != len(order):
        return None
    for i, f in zip(positives, order, strict=True):
        out[i]["finding"] = f
    out += [{"sentence": s, "section": "findings", "kind": "other", "finding": None} for s, _, _ in tail]
    items = order[:5]
    if not items:
        out += [{"sentence": s, "section": "impression", "kind": "other", "finding": None} for s, _, _ in impression]
    elif len(impression) != len(items):
        return None
    else:
        out += [
            {"sentence": s, "section": "impression", "kind": "positive", "finding": f}
            for (s, _, _), f in zip(impression, items, strict=True)
        ]
    for row in out:
        f = row["finding"]
        if row["kind"] == "positive":
            row["truth"] = sorted({str(lesion_anatomy(x)) for x in by_finding[f]})
        elif row["kind"] == "negative":
            row["truth"] = [str(FINDING_ANATOMY[f])]
        else:
            row["truth"] = None
    return out


def read_truth(cohort: str | Path) -> list[dict[str, Any]]:
    p = Path(cohort) / "truth.jsonl"
    if not p.is_file():
        raise RadfinderError(f"{p}: not found (expected a synthetic cohort made by `radfinder synth`)")
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def _acc(ok: int, n: int) -> float:
    return ok / n if n else float("nan")


def measure_sentence_anatomy(
    cohort: str | Path | list[dict[str, Any]],
    assigner: SentenceAssigner | None = None,
    langs: tuple[str, ...] = ("en", "de"),
    max_errors: int = 20,
) -> dict[str, Any]:
    """Per language: accuracy of the anatomy given to each finding sentence (``positive``, the target metric), of
    its abnormal flag, of the anatomy and normal flag of negation sentences, and of the per-(study, anatomy)
    abnormal flag of the per-anatomy texts; plus the first errors for inspection."""
    studies = read_truth(cohort) if not isinstance(cohort, list) else cohort
    assigner = assigner or RuleAssigner()
    result: dict[str, Any] = {"studies": len(studies)}
    for lang in langs:
        c: Counter = Counter()
        errors: list[dict[str, Any]] = []
        for st in studies:
            rows = align_study(st, lang)
            if rows is None:
                c["unaligned"] += 1
                continue
            pred = assigner.classify([r["sentence"] for r in rows], lang)
            for r, (anat, abn) in zip(rows, pred, strict=True):
                if r["truth"] is None:
                    continue
                k = r["kind"]
                ok = str(anat) in r["truth"]
                c[f"{k}_n"] += 1
                c[f"{k}_ok"] += ok
                c[f"{k}_flag_ok"] += abn == (k == "positive")
                if not ok and len(errors) < max_errors:
                    errors.append({"study": st["study"], "sentence": r["sentence"], "kind": k, "truth": r["truth"],
                                   "predicted": anat})  # fmt: skip
            f_field, i_field = _FIELDS[lang]
            texts = anatomy_texts(st["texts"][lang][f_field], st["texts"][lang][i_field], lang, assigner)
            truth_abn = {lesion_anatomy(x) for x in st["lesions"]}
            for a, t in texts.items():
                c["anatomy_flag_n"] += 1
                c["anatomy_flag_ok"] += t.abnormal == (a in truth_abn)
        result[lang] = {
            "sentence_accuracy": _acc(c["positive_ok"], c["positive_n"]),
            "finding_sentences": c["positive_n"],
            "abnormal_flag_accuracy": _acc(c["positive_flag_ok"], c["positive_n"]),
            "negation_accuracy": _acc(c["negative_ok"], c["negative_n"]),
            "negation_sentences": c["negative_n"],
            "negation_normal_flag_accuracy": _acc(c["negative_flag_ok"], c["negative_n"]),
            "anatomy_flag_accuracy": _acc(c["anatomy_flag_ok"], c["anatomy_flag_n"]),
            "unaligned_studies": c["unaligned"],
            "errors": errors,
        }
    return result


def anatomy_flag_agreement(
    reports: list[tuple[str, str]],
    labels: Any,
    lang: str = "en",
    assigner: SentenceAssigner | None = None,
    findings: tuple[str, ...] | None = None,
) -> dict[str, dict[str, float]]:
    """Agreement of the per-anatomy abnormal flag with finding labels (e.g. CT-RATE's manual labels): an anatomy
    counts as abnormal when any finding mapped to it (`FINDING_ANATOMY`) is labelled 1. A proxy, not a truth: a
    report may describe abnormalities outside the labelled findings. reports: (findings, impression) per study;
    labels: (N, F) 0/1 in the order of `findings` (default: the 18 CT-RATE findings)."""
    import numpy as np

    from ..text.findings import CTRATE_FINDINGS

    names = list(findings or CTRATE_FINDINGS)
    y = np.asarray(labels)
    if y.shape != (len(reports), len(names)):
        raise RadfinderError(f"labels must be ({len(reports)}, {len(names)}), got {y.shape}")
    assigner = assigner or RuleAssigner()
    mapped = {a for a in FINDING_ANATOMY.values() if a}
    anatomies = [a for a in assigner.anatomies if a in mapped]
    cols = {a: [i for i, f in enumerate(names) if FINDING_ANATOMY.get(f) == a] for a in anatomies}
    pred = np.zeros((len(reports), len(anatomies)), bool)
    for n, (fi, im) in enumerate(reports):
        t = anatomy_texts(fi, im, lang, assigner)
        pred[n] = [t[a].abnormal if a in t else False for a in anatomies]
    out = {}
    for k, a in enumerate(anatomies):
        truth = (y[:, cols[a]] == 1).any(axis=1) if cols[a] else np.zeros(len(reports), bool)
        p = pred[:, k]
        out[a] = {
            "positives": int(truth.sum()),
            "sensitivity": _acc(int((p & truth).sum()), int(truth.sum())),
            "specificity": _acc(int((~p & ~truth).sum()), int((~truth).sum())),
            "accuracy": float((p == truth).mean()) if len(p) else float("nan"),
        }
    return out
