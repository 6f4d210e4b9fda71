"""German report phrasing (Befund / Beurteilung), parallel to ``phrases_en`` and from the same lesions."""

from __future__ import annotations

from .lesion import Lesion
from .phrases_en import join_and, pick
from .text_markup import d

LOBE_DAT = {
    "right upper lobe": "im rechten Oberlappen",
    "right middle lobe": "im Mittellappen",
    "right lower lobe": "im rechten Unterlappen",
    "left upper lobe": "im linken Oberlappen",
    "lingula": "in der Lingula",
    "left lower lobe": "im linken Unterlappen",
    "upper lobes": "in beiden Oberlappen",
    "lower lobes": "in beiden Unterlappen",
    "both lungs": "in beiden Lungen",
    "subpleural lower zones": "subpleural basal",
}
SIDE = {"right": "rechts", "left": "links", None: "", "bilateral": "beidseits"}
SEV = {
    "mild": "geringgradig",
    "moderate": "mittelgradig",
    "severe": "hochgradig",
    "extensive": "ausgeprägt",
    "small": "kleiner",
    "large": "großer",
    "marked": "deutlich",
    "lobar": "lobäre",
    "segmental": "segmentale",
}
STATION = {
    "subcarinal": "subkarinal",
    "right paratracheal": "rechts paratracheal",
    "aortopulmonary window": "im aortopulmonalen Fenster",
    "right hilar": "hilär rechts",
    "left hilar": "hilär links",
    "prevascular": "prävaskulär",
    "right axillary": "axillär rechts",
    "left axillary": "axillär links",
}


def size(rng, mm: float) -> str:
    if rng.random() < 0.3:
        return d("measurement", f"{mm / 10:.1f} cm".replace(".", ","))
    return d("measurement", f"{mm:.0f} mm")


def _loc(x: Lesion) -> str:
    return LOBE_DAT.get(x.location or "", x.location or "")


def positive(rng, les: list[Lesion]) -> str:
    L = les[0]
    f = L.finding
    if f == "Lung nodule":
        if len(les) > 1:
            sizes = join_and([size(rng, x.size_mm) for x in les], "und")
            return f"{len(les)} pulmonale Rundherde ({sizes}) {_loc(les[0])} und {_loc(les[1])}⟦R⟧."
        gg = "milchglasartiger" if L.kind == "ground-glass" else pick(rng, ["solider", "glatt begrenzter"])
        return pick(
            rng,
            [
                f"{size(rng, L.size_mm)} messender {gg} Rundherd {_loc(L)}⟦R⟧.",
                f"{_loc(L).capitalize()} ein {gg} Nodulus von {size(rng, L.size_mm)}⟦R⟧.",
            ],
        )
    if f == "Lung opacity":
        where = " und ".join(sorted({_loc(x) for x in les}))
        return pick(rng, [f"Fleckige Milchglasverdichtungen {where}⟦R⟧.", f"Milchglastrübungen {where}⟦R⟧."])
    if f == "Consolidation":
        return pick(
            rng, [f"Konsolidierung {_loc(L)} mit Aerobronchogramm⟦R⟧.", f"Pneumonisches Infiltrat {_loc(L)}⟦R⟧."]
        )
    if f == "Atelectasis":
        if L.kind == "plate-like":
            return f"Plattenatelektase {_loc(L)}⟦R⟧."
        return pick(rng, [f"Dystelektase {_loc(L)} dorsal⟦R⟧.", f"Minderbelüftung {_loc(L)}⟦R⟧."])
    if f == "Pleural effusion":
        adj = {"small": "klein", "moderate": "mäßig", "large": "groß"}[L.severity]
        if len(les) > 1:
            return f"Pleuraergüsse beidseits, {adj}⟦R⟧."
        return pick(
            rng,
            [
                f"{adj.capitalize()}er Pleuraerguss {SIDE[L.side]}⟦R⟧.",
                f"Pleuraerguss {SIDE[L.side]}, Tiefe {size(rng, L.size_mm)}⟦R⟧.",
            ],
        )
    if f == "Emphysema":
        return f"{SEV[L.severity].capitalize()}es Lungenemphysem {_loc(L)}⟦R⟧."
    if f == "Mosaic attenuation pattern":
        return "Mosaikperfusion beider Lungen⟦R⟧."
    if f == "Interlobular septal thickening":
        return "Verdickte interlobuläre Septen subpleural basal⟦R⟧."
    if f == "Pulmonary fibrotic sequela":
        return pick(rng, [f"Narbige Fibrosestränge {_loc(L)}⟦R⟧.", f"Postentzündliche Residuen {_loc(L)}⟦R⟧."])
    if f == "Bronchiectasis":
        return f"Bronchiektasen {_loc(L)}⟦R⟧."
    if f == "Peribronchial thickening":
        return "Verdickte Bronchialwände⟦R⟧."
    if f == "Cardiomegaly":
        ctr = d("ratio", f"{L.extra['ctr']:.2f}".replace(".", ","))
        return pick(rng, [f"Kardiomegalie (Herz-Thorax-Quotient {ctr})⟦R⟧.", "Vergrößertes Herz⟦R⟧."])
    if f == "Pericardial effusion":
        return f"Perikarderguss bis {size(rng, L.size_mm)}⟦R⟧."
    if f == "Coronary artery wall calcification":
        return f"Koronarsklerose ({', '.join(L.extra['vessels'])})⟦R⟧."
    if f == "Arterial wall calcification":
        return pick(rng, ["Kalzifizierte Plaques der thorakalen Aorta⟦R⟧.", "Aortensklerose⟦R⟧."])
    if f == "Hiatal hernia":
        return pick(rng, ["Axiale Hiatushernie⟦R⟧.", f"Hiatushernie von {size(rng, L.size_mm)}⟦R⟧."])
    if f == "Lymphadenopathy":
        st = join_and([STATION[x.location] for x in les], "und")
        return f"Vergrößerte Lymphknoten {st}, Kurzachse bis {size(rng, max(x.size_mm for x in les))}⟦R⟧."
    if f == "Medical material":
        return {
            "port catheter": f"Portkatheter {SIDE[L.side]}, Spitze in der V. cava superior⟦R⟧.",
            "pacemaker": "Schrittmacheraggregat links pektoral, Sonden im rechten Herzen⟦R⟧.",
            "central venous catheter": f"ZVK von {SIDE[L.side]}, Spitze in der oberen Hohlvene⟦R⟧.",
            "sternotomy wires": "Z. n. medianer Sternotomie mit Drahtcerclagen⟦R⟧.",
        }[L.kind]
    raise KeyError(f)


NEGATIVE = {
    "Lung nodule": ["Keine suspekten Rundherde.", "Keine pulmonalen Rundherde."],
    "Lung opacity": ["Keine Milchglastrübungen."],
    "Consolidation": ["Kein pneumonisches Infiltrat.", "Keine Konsolidierung."],
    "Atelectasis": ["Keine Atelektasen."],
    "Pleural effusion": ["Kein Pleuraerguss.", "Kein Pleuraerguss, kein Pneumothorax."],
    "Emphysema": ["Kein Emphysem."],
    "Mosaic attenuation pattern": ["Keine Mosaikperfusion."],
    "Interlobular septal thickening": ["Keine Septenverdickung."],
    "Pulmonary fibrotic sequela": ["Keine fibrotischen Veränderungen."],
    "Bronchiectasis": ["Keine Bronchiektasen."],
    "Peribronchial thickening": ["Keine Bronchialwandverdickung."],
    "Cardiomegaly": ["Herz normal groß.", "Keine Kardiomegalie."],
    "Pericardial effusion": ["Kein Perikarderguss."],
    "Coronary artery wall calcification": ["Keine Koronarverkalkungen."],
    "Arterial wall calcification": ["Aorta normkalibrig ohne Verkalkungen."],
    "Hiatal hernia": ["Keine Hiatushernie."],
    "Lymphadenopathy": ["Keine vergrößerten Lymphknoten.", "Keine mediastinale oder hiläre Lymphadenopathie."],
    "Medical material": [],
}


def negative(rng, finding: str) -> str | None:
    opts = NEGATIVE[finding]
    return pick(rng, opts) if opts else None


def impression(rng, les: list[Lesion]) -> str:
    L = les[0]
    short = {
        "Lung nodule": f"Pulmonale{'r' if len(les) == 1 else ''} Rundherd{'e' if len(les) > 1 else ''} {_loc(L)}",
        "Lung opacity": f"Milchglasverdichtungen {_loc(L)}",
        "Consolidation": f"Pneumonie {_loc(L)}",
        "Atelectasis": f"Atelektase {_loc(L)}",
        "Pleural effusion": f"Pleuraerguss {SIDE['bilateral' if len(les) > 1 else L.side]}",
        "Emphysema": "Lungenemphysem",
        "Mosaic attenuation pattern": "Mosaikperfusion",
        "Interlobular septal thickening": "Septenverdickung",
        "Pulmonary fibrotic sequela": "Fibrotische Residuen",
        "Bronchiectasis": "Bronchiektasen",
        "Peribronchial thickening": "Bronchialwandverdickung",
        "Cardiomegaly": "Kardiomegalie",
        "Pericardial effusion": "Perikarderguss",
        "Coronary artery wall calcification": "Koronarsklerose",
        "Arterial wall calcification": "Aortensklerose",
        "Hiatal hernia": "Hiatushernie",
        "Lymphadenopathy": "Lymphadenopathie",
        "Medical material": {
            "port catheter": "Portkatheter",
            "pacemaker": "Schrittmacher",
            "central venous catheter": "ZVK",
            "sternotomy wires": "Z. n. Sternotomie",
        }.get(L.kind, ""),
    }[L.finding]
    return f"{short}⟦R⟧."


def clinical(rng, age: int, sex: str, date: str, followup: bool) -> str:
    reason = pick(rng, ["Husten und Fieber.", "Dyspnoe.", "Thoraxschmerz.", "Staging.", "Verdacht auf Pneumonie."])
    if followup:
        reason += f" Verlaufskontrolle, Voruntersuchung vom {d('date', date)}."
    return f"{age}-jährige{'r Patient' if sex == 'M' else ' Patientin'}. {reason}"


NORMAL_LINES = [
    "Trachea und Hauptbronchien frei.",
    "Aorta und Truncus pulmonalis normkalibrig.",
    "Miterfasste Oberbauchorgane unauffällig.",
    "Degenerative Veränderungen der BWS.",
]


def technique(thin, thick, s_thin, s_thick, time: str) -> str:
    t1 = f"{thin:g}".replace(".", ",")
    t2 = f"{thick:g}".replace(".", ",")
    return (
        f"Native CT des Thorax um {d('time', time)} Uhr. Rekonstruktionen {t1} mm "
        f"({d('series_only', f'Serie {s_thin}')}) und {t2} mm ({d('series_only', f'Serie {s_thick}')})."
    )
