"""Writing a study's report in English and German from its lesions, with slice references and look-alikes.

One semantic plan per study (what is mentioned, which lesion is referenced on which series/image) is realised
in both languages, so EN and DE refer to the same slices. References point at the true InstanceNumber of a
slice whose plane contains the lesion centre, in either reconstruction, whatever was exported to NIfTI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...text.findings import CTRATE_FINDINGS
from . import phrases_de as DE
from . import phrases_en as EN
from .lesion import Lesion
from .text_markup import Realised, Ref, realise

# (prefix, core, suffix); {s} series, {i} image, {j} second image. "implicit" forms name no series.
REF_FORMS = {
    "en": [
        (" (", "series {s}, image {i}", ")"),
        (" (", "Se {s}, Im {i}", ")"),
        (" on ", "image {i} of series {s}", ""),
        (" (", "{s}:{i}", ")"),
        (" (", "serial {s} image {i}", ")"),
        (", see ", "series {s}, image {i}", ""),
        (" (", "series {s} image {i}", ")"),
        (" (", "image {i}, series {s}", ")"),
        (" (", "Se{s} Im{i}", ")"),
    ],
    "de": [
        (" (", "Serie {s}, Bild {i}", ")"),
        (" (", "Se {s}/Bi {i}", ")"),
        (" in ", "Bild {i} der Serie {s}", ""),
        (" (", "{s}:{i}", ")"),
        (" (", "Serie {s} Bild {i}", ")"),
        (", siehe ", "Serie {s}, Bild {i}", ""),
        (" (", "S{s}/B{i}", ")"),
    ],
}
IMPLICIT_FORMS = {"en": [(" (", "section {i}", ")"), (" (", "image {i}", ")")], "de": [(" (", "Bild {i}", ")")]}
MULTI_FORMS = {
    "en": [(" (", "series {s}, images {i} and {j}", ")"), (" (", "Se {s}, Im {i} and {j}", ")")],
    "de": [(" (", "Serie {s}, Bilder {i} und {j}", ")")],
}
IMPLICIT_MULTI = {"en": [(" (", "images {i} and {j}", ")")], "de": [(" (", "Bilder {i} und {j}", ")")]}

SECTIONS = [
    ["Medical material"],
    [
        "Cardiomegaly",
        "Pericardial effusion",
        "Coronary artery wall calcification",
        "Arterial wall calcification",
        "Lymphadenopathy",
        "Hiatal hernia",
    ],
    [
        "Emphysema",
        "Lung nodule",
        "Consolidation",
        "Lung opacity",
        "Atelectasis",
        "Pulmonary fibrotic sequela",
        "Bronchiectasis",
        "Peribronchial thickening",
        "Interlobular septal thickening",
        "Mosaic attenuation pattern",
    ],
    ["Pleural effusion"],
]


@dataclass
class SeriesIndex:
    """Where each slice of one series sits: z of array slice k and its InstanceNumber (from the written files)."""

    number: int
    zs: np.ndarray
    instances: np.ndarray
    spacing: float
    role: str  # "thin" or "thick"

    def image_at(self, z: float) -> tuple[int, float] | None:
        k = int(np.argmin(np.abs(self.zs - z)))
        if abs(self.zs[k] - z) > self.spacing / 2 + 1e-6:
            return None
        return int(self.instances[k]), float(self.zs[k])


@dataclass
class Target:
    series: SeriesIndex
    lesion_ids: list[int]
    images: list[int]
    z: list[float]


def _target(
    rng, lesions: list[Lesion], ids: list[int], series: list[SeriesIndex], default: SeriesIndex
) -> Target | None:
    s = default if rng.random() < 0.7 else next(x for x in series if x is not default)
    hits = [(i, s.image_at(lesions[i].center[2])) for i in ids]
    hits = [(i, h) for i, h in hits if h is not None]
    if not hits:
        return None
    if len(hits) >= 2 and hits[0][1][0] != hits[1][1][0] and rng.random() < 0.6:
        hits = hits[:2]
        hits.sort(key=lambda t: t[1][0])
    else:
        hits = hits[:1]
    return Target(s, [i for i, _ in hits], [h[0] for _, h in hits], [h[1] for _, h in hits])


def _ref(rng, lang: str, t: Target | None, last_named: dict[str, int | None]) -> Ref | None:
    """A reference to `t`. A bare "image N" is only written where the series named last before it in the report
    (findings, then impressions) is the target's: that is how readers, and the miner, resolve a bare image."""
    if t is None:
        return None
    multi = len(t.images) > 1
    implicit = last_named.get(lang) == t.series.number and rng.random() < 0.15
    last_named[lang] = t.series.number
    forms = (IMPLICIT_MULTI if implicit else MULTI_FORMS) if multi else (IMPLICIT_FORMS if implicit else REF_FORMS)
    pre, core, suf = forms[lang][int(rng.integers(len(forms[lang])))]
    core = core.format(s=t.series.number, i=t.images[0], j=t.images[-1])
    return Ref(pre, core, suf, t.series.number, list(t.images), list(t.z), list(t.lesion_ids), implicit)


def write_report(
    rng: np.random.Generator, lesions: list[Lesion], labels: np.ndarray, series: list[SeriesIndex], meta: dict[str, Any]
) -> dict[str, Any]:
    """EN fields (CT-RATE columns), DE fields (Befund/Beurteilung), and every reference/distractor span."""
    default = next(s for s in series if s.role == "thin")
    groups: dict[str, list[int]] = {}
    for i, les in enumerate(lesions):
        groups.setdefault(les.finding, []).append(i)
    positive = {f for f, y in zip(CTRATE_FINDINGS, labels, strict=True) if y}
    findings_parts: dict[str, list[tuple[str, Ref | None]]] = {"en": [], "de": []}
    last_named: dict[str, int | None] = {"en": None, "de": None}
    impression_parts: dict[str, list[tuple[str, Ref | None]]] = {"en": [], "de": []}
    for section in SECTIONS:
        for f in section:
            if f in groups:
                ids = groups[f]
                t = _target(rng, lesions, ids, series, default) if rng.random() < 0.65 else None
                group = [lesions[i] for i in ids]
                # Each language draws its own wording/format, from streams that do not disturb each other.
                for lang, mod in (("en", EN), ("de", DE)):
                    sub = np.random.default_rng(rng.integers(2**63))
                    findings_parts[lang].append((mod.positive(sub, group) + " ", _ref(sub, lang, t, last_named)))
            elif f not in positive and rng.random() < 0.55:
                for lang, mod in (("en", EN), ("de", DE)):
                    sub = np.random.default_rng(rng.integers(2**63))
                    neg = mod.negative(sub, f)
                    if neg:
                        findings_parts[lang].append((neg + " ", None))
        if section is SECTIONS[1] and rng.random() < 0.7:
            k = int(rng.integers(2))
            findings_parts["en"].append((EN.NORMAL_LINES[k] + " ", None))
            findings_parts["de"].append((DE.NORMAL_LINES[k] + " ", None))
    findings_parts["en"].append((EN.upper_abdomen(rng) + " " + EN.spine(rng), None))
    findings_parts["de"].append((DE.NORMAL_LINES[2] + " " + DE.NORMAL_LINES[3], None))
    order = [f for sec in SECTIONS for f in sec if f in groups]
    for n, f in enumerate(order[:5], 1):
        t = _target(rng, lesions, groups[f], series, default) if rng.random() < 0.3 else None
        group = [lesions[i] for i in groups[f]]
        for lang, mod in (("en", EN), ("de", DE)):
            sub = np.random.default_rng(rng.integers(2**63))
            impression_parts[lang].append((f"{n}. " + mod.impression(sub, group) + " ", _ref(sub, lang, t, last_named)))
    if not order:
        impression_parts["en"].append(("No acute cardiopulmonary abnormality.", None))
        impression_parts["de"].append(("Altersentsprechender Thoraxbefund ohne akute Pathologie.", None))
    out: dict[str, Any] = {"refs": [], "distractors": []}
    thin = default
    thick = next(s for s in series if s is not default)
    texts = {
        ("en", "ClinicalInformation_EN"): realise(
            [(EN.clinical(rng, meta["age"], meta["sex"], meta["prior_date"], meta["followup"]), None)]
        ),
        ("en", "Technique_EN"): realise(
            [
                (
                    EN.technique(
                        rng, thin.spacing, thick.spacing, thin.number, thick.number, meta["time"], meta["dlp"]
                    ),
                    None,
                )
            ]
        ),
        ("en", "Findings_EN"): realise(findings_parts["en"]),
        ("en", "Impressions_EN"): realise(impression_parts["en"]),
        ("de", "Klinische_Angaben"): realise(
            [(DE.clinical(rng, meta["age"], meta["sex"], meta["prior_date_de"], meta["followup"]), None)]
        ),
        ("de", "Technik"): realise(
            [(DE.technique(thin.spacing, thick.spacing, thin.number, thick.number, meta["time"]), None)]
        ),
        ("de", "Befund"): realise(findings_parts["de"]),
        ("de", "Beurteilung"): realise(impression_parts["de"]),
    }
    for (lang, fld), r in texts.items():
        out[fld] = r.text.rstrip()
        _collect(out, lang, fld, r, lesions)
    return out


def _collect(out: dict, lang: str, fld: str, r: Realised, lesions: list[Lesion]) -> None:
    for a, b, ref in r.refs:
        assert r.text[a:b] == ref.core
        out["refs"].append(
            {
                "lang": lang,
                "field": fld,
                "start": a,
                "end": b,
                "text": ref.core,
                "series": ref.series,
                "images": ref.images,
                "slice_z_mm": [round(z, 3) for z in ref.z_mm],
                "lesion_z_mm": [round(float(lesions[i].center[2]), 3) for i in ref.lesion_ids],
                "lesions": ref.lesion_ids,
                "finding": lesions[ref.lesion_ids[0]].finding,
                "implicit_series": ref.implicit_series,
            }
        )
    for a, b, kind in r.distractors:
        out["distractors"].append({"lang": lang, "field": fld, "start": a, "end": b, "text": r.text[a:b], "kind": kind})
