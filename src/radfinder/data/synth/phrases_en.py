"""English report phrasing: positive findings with size/side/lobe/severity, negations, uncertainty, and
look-alike numbers. Every function takes the study's text RNG and returns a sentence with ``⟦R⟧`` where the
slice reference may be inserted (see ``text_markup``)."""

from __future__ import annotations

import numpy as np

from .lesion import Lesion
from .text_markup import d


def join_and(items: list[str], word: str = "and") -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {word} " + items[-1]


def pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def size(rng, mm: float, second: float | None = None) -> str:
    if second is not None and rng.random() < 0.4:
        if rng.random() < 0.5:
            return d("measurement", f"{mm / 10:.1f} x {second / 10:.1f} cm")
        return d("measurement", f"{mm:.0f} x {second:.0f} mm")
    return d("measurement", f"{mm / 10:.1f} cm") if rng.random() < 0.3 else d("measurement", f"{mm:.0f} mm")


def hedge(rng, text: str) -> str:
    """Occasional uncertainty, as radiologists write it (the finding is still present in the image)."""
    r = rng.random()
    if r < 0.08:
        return f"{text[0].upper()}{text[1:]} cannot be excluded"
    if r < 0.14:
        return f"Findings suspicious for {text}"
    if r < 0.2:
        return f"Probable {text}"
    return None


def positive(rng, les: list[Lesion]) -> str:
    L = les[0]
    f = L.finding
    loc = L.location or ""
    if f == "Lung nodule":
        if len(les) > 1:
            parts = [size(rng, x.size_mm) for x in les]
            sizes = ", ".join(parts[:-1]) + " and " + parts[-1]
            return pick(
                rng,
                [
                    f"{len(les)} pulmonary nodules measuring {sizes}⟦R⟧.",
                    f"Multiple solid nodules ({sizes}) in the {les[0].location} and {les[1].location}⟦R⟧.",
                ],
            )
        kind = "ground-glass" if L.kind == "ground-glass" else pick(rng, ["solid", "well-defined", "noncalcified"])
        return pick(
            rng,
            [
                f"A {size(rng, L.size_mm, L.size_mm * 0.8)} {kind} nodule in the {loc}⟦R⟧.",
                f"{kind.capitalize()} pulmonary nodule in the {loc} measuring {size(rng, L.size_mm)}⟦R⟧.",
                f"There is a {size(rng, L.size_mm)} nodule in the {loc}⟦R⟧.",
            ],
        )
    if f == "Lung opacity":
        where = " and ".join(sorted({x.location for x in les}))
        h = hedge(rng, f"early infection in the {where}")
        base = pick(
            rng,
            [
                f"Patchy ground-glass opacities in the {where}⟦R⟧.",
                f"Ground-glass densities are seen in the {where}⟦R⟧.",
                f"Areas of increased attenuation (ground glass) in the {where}⟦R⟧.",
            ],
        )
        return base if h is None else base[:-1] + f"; {h[0].lower()}{h[1:]}."
    if f == "Consolidation":
        return pick(
            rng,
            [
                f"{L.severity.capitalize()} consolidation in the {loc} with air bronchograms⟦R⟧.",
                f"Dense consolidation of the {loc}⟦R⟧, consistent with pneumonia.",
                f"Airspace consolidation in the {loc}⟦R⟧.",
            ],
        )
    if f == "Atelectasis":
        if L.kind == "plate-like":
            return pick(
                rng, [f"Plate-like atelectasis in the {loc}⟦R⟧.", f"Linear subsegmental atelectasis, {loc}⟦R⟧."]
            )
        return pick(rng, [f"Dependent atelectasis in the posterior {loc}⟦R⟧.", f"Passive atelectasis of the {loc}⟦R⟧."])
    if f == "Pleural effusion":
        if len(les) > 1:
            return pick(
                rng,
                [
                    f"Bilateral {L.severity} pleural effusions⟦R⟧.",
                    f"{L.severity.capitalize()} pleural effusions on both sides⟦R⟧.",
                ],
            )
        return pick(
            rng,
            [
                f"{L.severity.capitalize()} {L.side} pleural effusion⟦R⟧.",
                f"There is a {L.severity} {L.side}-sided pleural effusion⟦R⟧, maximum depth {size(rng, L.size_mm)}.",
            ],
        )
    if f == "Emphysema":
        return pick(
            rng,
            [
                f"{L.severity.capitalize()} {L.kind} emphysema, predominantly in the {loc}⟦R⟧.",
                f"Emphysematous changes in the {loc} ({L.severity})⟦R⟧.",
            ],
        )
    if f == "Mosaic attenuation pattern":
        return pick(
            rng,
            [
                "Mosaic attenuation pattern in both lungs⟦R⟧, possibly due to small airway disease.",
                "Heterogeneous lung attenuation with a mosaic pattern⟦R⟧.",
            ],
        )
    if f == "Interlobular septal thickening":
        return pick(
            rng,
            [
                "Interlobular septal thickening in the subpleural lower zones⟦R⟧.",
                "Smooth thickening of the interlobular septa, bilateral and basal⟦R⟧.",
            ],
        )
    if f == "Pulmonary fibrotic sequela":
        return pick(
            rng,
            [
                f"Fibrotic bands in the {loc}⟦R⟧, likely post-inflammatory sequelae.",
                f"Linear scarring in the {loc}⟦R⟧.",
                f"Fibrotic sequelae in the {loc}⟦R⟧.",
            ],
        )
    if f == "Bronchiectasis":
        return pick(
            rng,
            [
                f"{L.kind.capitalize()} bronchiectasis in the {loc}⟦R⟧.",
                f"Dilated bronchi in the {loc} consistent with bronchiectasis⟦R⟧.",
            ],
        )
    if f == "Peribronchial thickening":
        return pick(
            rng, ["Diffuse bronchial wall thickening⟦R⟧.", f"Peribronchial thickening, most marked in the {loc}⟦R⟧."]
        )
    if f == "Cardiomegaly":
        ctr = d("ratio", f"{L.extra['ctr']:.2f}")
        return pick(
            rng,
            [
                f"The heart is enlarged (cardiothoracic ratio {ctr})⟦R⟧.",
                "Cardiomegaly⟦R⟧.",
                f"{L.severity.capitalize()} cardiomegaly⟦R⟧.",
            ],
        )
    if f == "Pericardial effusion":
        return pick(
            rng,
            [
                f"{L.severity.capitalize()} pericardial effusion, up to {size(rng, L.size_mm)}⟦R⟧.",
                "Pericardial fluid collection⟦R⟧.",
            ],
        )
    if f == "Coronary artery wall calcification":
        ves = ", ".join(L.extra["vessels"])
        score = d("score", f"Agatston score {int(rng.integers(20, 900))}") if rng.random() < 0.3 else None
        s = (
            f"Coronary artery calcifications ({ves})⟦R⟧."
            if score is None
            else f"Coronary calcifications in the {ves}⟦R⟧, estimated {score}."
        )
        return s
    if f == "Arterial wall calcification":
        return pick(
            rng,
            [
                f"Atherosclerotic calcifications of the {loc}⟦R⟧.",
                f"{L.severity.capitalize()} calcified plaques in the thoracic aorta⟦R⟧.",
            ],
        )
    if f == "Hiatal hernia":
        return pick(
            rng,
            [
                f"{L.kind.capitalize()} hiatal hernia⟦R⟧.",
                "Sliding hiatal hernia⟦R⟧.",
                f"Hiatal hernia measuring {size(rng, L.size_mm)}⟦R⟧.",
            ],
        )
    if f == "Lymphadenopathy":
        if len(les) > 1:
            st = join_and([x.location for x in les])
            return f"Enlarged {st} lymph nodes, short axis up to {size(rng, max(x.size_mm for x in les))}⟦R⟧."
        return pick(
            rng,
            [
                f"Enlarged {loc} lymph node measuring {size(rng, L.size_mm)} in short axis⟦R⟧.",
                f"Pathologically enlarged lymph node, {loc}, {size(rng, L.size_mm)}⟦R⟧.",
            ],
        )
    if f == "Medical material":
        side = (L.side or "right").capitalize()  # sternal wires have no side and use no side text
        return {
            "port catheter": f"{side}-sided port catheter with the tip in the superior vena cava⟦R⟧.",
            "pacemaker": "Pacemaker generator in the left chest wall with leads in the right heart⟦R⟧.",
            "central venous catheter": f"{side} central venous catheter, tip in the SVC⟦R⟧.",
            "sternotomy wires": "Status post median sternotomy with sternal wires⟦R⟧.",
        }[L.kind]
    raise KeyError(f)


NEGATIVE = {
    "Lung nodule": ["No pulmonary nodules.", "No suspicious pulmonary nodule.", "No nodules or masses in the lungs."],
    "Lung opacity": ["No ground-glass opacity.", "No focal opacity."],
    "Consolidation": ["No consolidation.", "No pneumonic infiltrate.", "No airspace consolidation."],
    "Atelectasis": ["No atelectasis.", "No significant atelectasis."],
    "Pleural effusion": ["No pleural effusion.", "No pleural effusion or pneumothorax.", "Pleural spaces are clear."],
    "Emphysema": ["No emphysema.", "No emphysematous changes."],
    "Mosaic attenuation pattern": ["No mosaic attenuation."],
    "Interlobular septal thickening": ["No interlobular septal thickening."],
    "Pulmonary fibrotic sequela": ["No fibrotic changes.", "No signs of pulmonary fibrosis."],
    "Bronchiectasis": ["No bronchiectasis."],
    "Peribronchial thickening": ["No bronchial wall thickening."],
    "Cardiomegaly": ["Heart size is normal.", "Normal heart size.", "The heart is not enlarged."],
    "Pericardial effusion": ["No pericardial effusion.", "No pericardial effusion or thickening."],
    "Coronary artery wall calcification": ["No coronary artery calcification."],
    "Arterial wall calcification": [
        "Thoracic aorta of normal caliber without calcification.",
        "No aortic calcification.",
    ],
    "Hiatal hernia": ["No hiatal hernia.", "Esophagus unremarkable, no hiatal hernia."],
    "Lymphadenopathy": [
        "No mediastinal or hilar lymphadenopathy.",
        "No pathologically enlarged lymph nodes.",
        "No lymphadenopathy.",
    ],
    "Medical material": [],
}


def negative(rng, finding: str) -> str | None:
    opts = NEGATIVE[finding]
    return pick(rng, opts) if opts else None


def clinical(rng, age: int, sex: str, date: str, followup: bool) -> str:
    reason = pick(
        rng,
        [
            "Cough and fever.",
            "Dyspnea.",
            "Chest pain.",
            "Staging.",
            "Weight loss, smoker.",
            "Suspected pneumonia.",
            "Shortness of breath for 2 weeks.",
        ],
    )
    if followup:
        reason += f" Follow-up; prior CT {d('date', date)}."
    return f"{age}-year-old {'male' if sex == 'M' else 'female'}. {reason}"


def technique(rng, thin, thick, s_thin, s_thick, time: str, dlp: int) -> str:
    # "series N" without an image is a look-alike that must not be mined.
    return (
        f"Non-contrast chest CT acquired at {d('time', time)}. Axial reconstructions {thin:g} mm "
        f"({d('series_only', f'series {s_thin}')}) and {thick:g} mm ({d('series_only', f'series {s_thick}')}). "
        f"DLP {d('number', f'{dlp} mGy*cm')}."
    )


NORMAL_LINES = [
    "Trachea and main bronchi are patent.",
    "Thoracic aorta and pulmonary trunk of normal caliber.",
    "The visualized upper abdominal organs are unremarkable.",
    "Degenerative changes of the thoracic spine, no destructive bone lesion.",
]


def upper_abdomen(rng) -> str:
    return pick(
        rng,
        [
            "Visualized portions of the liver unremarkable, liver span "
            + d("measurement", f"{rng.uniform(13, 17):.1f} cm")
            + ".",
            "No focal lesion in the imaged upper abdomen.",
            "Small hypodense liver lesion in segment "
            + d("segment", str(int(rng.integers(2, 8))))
            + ", likely a cyst.",
        ],
    )


def spine(rng) -> str:
    lvl = int(rng.integers(4, 10))
    return pick(
        rng,
        [
            f"Osteophytes at {d('level', f'T{lvl}-T{lvl + 1}')}.",
            "No destructive osseous lesion.",
            f"Old healed fracture of the {d('level', f'{lvl}th')} rib on the right.",
        ],
    )


def impression(rng, les: list[Lesion]) -> str:
    L = les[0]
    f = L.finding
    short = {
        "Lung nodule": lambda: f"Pulmonary nodule{'s' if len(les) > 1 else ''} ({L.location})",
        "Lung opacity": lambda: f"Ground-glass opacities, {L.location}",
        "Consolidation": lambda: f"Consolidation in the {L.location}, suggestive of pneumonia",
        "Atelectasis": lambda: f"Atelectasis, {L.location}",
        "Pleural effusion": lambda: f"{'Bilateral' if len(les) > 1 else L.side.capitalize()} pleural effusion",
        "Emphysema": lambda: "Emphysema",
        "Mosaic attenuation pattern": lambda: "Mosaic attenuation",
        "Interlobular septal thickening": lambda: "Interlobular septal thickening",
        "Pulmonary fibrotic sequela": lambda: "Fibrotic sequelae",
        "Bronchiectasis": lambda: f"Bronchiectasis, {L.location}",
        "Peribronchial thickening": lambda: "Bronchial wall thickening",
        "Cardiomegaly": lambda: "Cardiomegaly",
        "Pericardial effusion": lambda: "Pericardial effusion",
        "Coronary artery wall calcification": lambda: "Coronary artery calcification",
        "Arterial wall calcification": lambda: "Aortic atherosclerosis",
        "Hiatal hernia": lambda: "Hiatal hernia",
        "Lymphadenopathy": lambda: "Mediastinal lymphadenopathy",
        "Medical material": lambda: f"{L.kind.capitalize()} in place",
    }[f]()
    tail = ""
    if f == "Lung nodule" and rng.random() < 0.5:
        tail = f"; follow-up per {d('guideline', 'Fleischner 2017')} recommended"
    return f"{short}⟦R⟧{tail}."
