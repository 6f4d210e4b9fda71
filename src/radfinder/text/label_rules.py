"""Trigger vocabulary of the rule-based labeler for the 18 CT-RATE abnormalities (English and German).

Per finding: `triggers` name the abnormality; `need` (optional) must also occur in the same clause (e.g. a lymph
node must be enlarged); `veto` marks a clause where the trigger means something else (subcutaneous emphysema, a
thyroid nodule). Patterns are matched case-insensitively against one clause at a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .findings import CTRATE_FINDINGS


@dataclass(frozen=True)
class FindingRule:
    triggers: re.Pattern
    need: re.Pattern | None = None
    veto: re.Pattern | None = None
    # Devices stay after the operation that placed them: "status post sternotomy with wires" ("Z. n. ...") names
    # material that is there, so only `gone` (removal) makes such a mention resolved.
    gone: re.Pattern | None = None


def _c(p: str) -> re.Pattern:
    return re.compile(p, re.IGNORECASE)


_EXTRA_PULMONARY = (
    r"thyroid|liver|hepatic|kidney|renal|adrenal|breast|spleen|splenic|pancrea|gland|lobe of the thyroid|bone|vertebra"
    r"|schilddrüse|leber|niere|nebenniere|mamma|milz|pankreas|knochen|wirbel"
)

# Ground glass as the translated reports spell it ("frosted glass", "icy density" render the same Turkish term).
_GROUND_GLASS = r"ground[\s-]*glass|frosted[\s-]*glass|icy (?:glass|densit)|milchglas"

RULES: dict[str, FindingRule] = {
    "Medical material": FindingRule(
        _c(
            r"catheter|\bport\b|pacemaker|pace\s*maker|\bicd\b|defibrillator|\bstent|prosthe|sternotomy|"
            r"sternal (?:wire|suture)|(?:metallic|surgical|metal) (?:suture|clip|material|wire|implant)|"
            r"\bclips?\b|cerclage|endotracheal|tracheostomy|\bett\b|nasogastric|drain(?:age)? tube|\bdrain\b|"
            r"chest tube|tube\b|(?:valve|mitral|aortic) replacement|\bcabg\b|bypass graft|coil|"
            r"fixation|\bscrews?\b|breast implant|implant(?:ed)? (?:device|material)|suture material|staple|"
            r"\bgraft\b|metallic|"
            r"\bpeg\b|gastrostomy|katheter|schrittmacher|prothese|fremdmaterial|sternalcerclage|drainage|magensonde|tubus|"
            r"\bzvk\b"
        ),
        veto=_c(r"port\s*-?\s*a\s*-?\s*cath\s+was removed|catheter was removed"),
        gone=_c(r"removed|extracted|explanted|entfernt|explantiert"),
    ),
    "Arterial wall calcification": FindingRule(
        _c(
            r"atheroscleros|atherosclerotic|atheroma|calcified (?:atheroma|plaque)|calcific (?:atheroma|plaque)|"
            r"(?:aort\w*|arter\w*|vascular|arcus|arch|carotid|subclavian|brachiocephalic|iliac)\W+(?:\w+\W+){0,6}"
            r"calcif|calcif\w*\W+(?:\w+\W+){0,6}(?:aort|arter(?!y wall)|vascular|arch|arcus)|"
            r"arteriosklero|aortensklerose|verkalk\w*\W+(?:\w+\W+){0,4}(?:aorta|gefäß|arteri)|"
            r"(?:aorta|gefäß|arteri)\w*\W+(?:\w+\W+){0,4}verkalk|kalkplaque"
        ),
        # Coronary-only clauses belong to the coronary finding; "aorta and coronary arteries" counts for both.
        # The manual labels leave abdominal-aorta and valve calcification out, unless the clause names a thoracic
        # part of the aorta too.
        veto=_c(
            r"pleural|^(?!.*(?:ascend|\barch|arcus|descend|thoracic aort|thoracoabdominal|aortenbogen))"
            r".*(?:abdominal aort|valve|klappe|bauchaorta)|"
            r"^(?!.*(?:aort|arch|arcus|carotid|subclavian|iliac|brachiocephalic|vascular|vessel|gefäß)).*"
            r"(?:coronar|koronar|\blad\b|\blcx\b|\brca\b|descending artery|circumflex|lymph|nodul|granulom)"
        ),
    ),
    "Cardiomegaly": FindingRule(
        _c(
            r"cardiomegal|kardiomegal|(?:heart|cardiac)\W+(?:\w+\W+){0,4}(?:enlarged|increased|enlargement|larger)|"
            r"(?:enlarged|increased)\W+(?:\w+\W+){0,2}(?:heart|cardiac)|herz\w*\W+(?:\w+\W+){0,3}vergrößert|"
            r"herzvergrößerung|(?:cardiothoracic|\bctr\b|\bkti\b)\W+(?:\w+\W+){0,4}increase|"
            r"increase\w*\W+(?:\w+\W+){0,4}(?:cardiothoracic|\bctr\b)"
        ),
        veto=_c(r"^(?!.*cardiomegal).*(?:ventric|atri(?:um|al)|vorhof|pericard|cavit)"),
    ),
    "Pericardial effusion": FindingRule(
        _c(
            r"pericardial (?:effusion|fluid)|(?<!pleural )(?<!pleural-)(?:effusion|fluid)\W+(?:\w+\W+){0,16}pericard|"
            # "pericardial minimal effusion", "pericardial, pleural effusion": a word between, but not the pleura's
            # own effusion after a pericardial thickening.
            r"pericard\w*(?:\W+(?!pleura|thicken)\w+){1,3}\W+(?:effusion|fluid)|"
            r"pericard\w*(?:,| and| or|-)\s*(?:(?:bilateral|left|right)\s+)?pleural\W+(?:effusion|fluid)|"
            r"hydropericard|"
            r"perikarderguss|perikardial\w* erguss|pericardial effusion-thickening|pericardial thickening-effusion"
        )
    ),
    "Coronary artery wall calcification": FindingRule(
        _c(
            r"coronar\w*\W+(?:\w+\W+){0,8}(?:calcif|plaque|atherom|atheroscl)|"
            r"(?:calcif|plaque|atherom|atheroscl)\w*\W+(?:\w+\W+){0,12}coronar|"
            r"\b(?:lad|lcx|rca|left anterior descending|circumflex)\b\W+(?:\w+\W+){0,6}calcif|"
            r"(?:calcif|plaque|atherom|atheroscl)\w*\W+(?:\w+\W+){0,12}"
            r"(?:lad|lcx|rca|left anterior descending|circumflex)\b|"
            r"koronar\w*\W+(?:\w+\W+){0,4}(?:verkalk|sklero|kalk)|koronarsklerose|koronarkalk"
        ),
    ),
    "Hiatal hernia": FindingRule(_c(r"hiat\w* hernia|hernia\w*\W+(?:\w+\W+){0,4}hiat|hiatushernie|hiatusgleithernie")),
    # CT-RATE's manual labels mark any described lymph node as present, millimetric or "not reaching
    # pathological size" included; only negated mentions ("no pathological LAP") count as absent.
    "Lymphadenopathy": FindingRule(
        _c(r"lymphadenopath|\blaps?\b|lymph\s*nodes?\b|lymphoma|lymphknoten|lymphom"),
    ),
    "Emphysema": FindingRule(
        _c(r"emphysem|bulla|bullous|blebs?\b|emphysem|lungenemphysem"),
        veto=_c(r"subcutaneous|subkutan|mediastinal emphysema|soft tissue|weichteil|cutaneous"),
    ),
    # Fibroatelectasis is a fibrotic sequela in the manual labels, not atelectasis.
    "Atelectasis": FindingRule(_c(r"(?<!fibro)(?<!fibro-)atelecta|atelekta|dystelekta|collapse")),
    "Lung nodule": FindingRule(
        # "Nodular" describing another finding (nodular consolidation, ground glass, density, infiltration) or a
        # reticulonodular pattern is not a nodule in the manual labels; nor is a "hypodense" (solid-organ) or
    # abdominal nodule whose clause does not name the organ.
        _c(
            r"(?<!reticulo)nodul(?!ar[\s-]+(?:consolidat|ground|glass|densit|infiltrat|opacit|thicken|calcif|pleural))|"
            r"\bnodes? in the lung|rundherd|herdbefund|knötchen|noduli|lung mass"
        ),
        veto=_c(_EXTRA_PULMONARY + r"|lymph|pleural nodular|goiter|hypodens|mesenter|omental|colon|adipose tissue"),
    ),
    # In the manual labels, fibrotic or scar densities belong to the sequela finding and a ground-glass nodule is a
    # nodule, not "Lung opacity"; "(pneumonic) infiltration" names a diagnosis, not the label (the synthetic
    # generator renders it as consolidation too). Ground glass and other densities count, linear, dependent and
    # atelectatic density increases included (they carry both labels). Densities of bone, metal, skin or fat and a
    # tumour infiltrating a neighbour do not.
    "Lung opacity": FindingRule(
        _c(
            r"opacit|" + _GROUND_GLASS + r"|density increase|increased density|increase in (?:[\w-]+\W+){0,3}density|"
            r"attenuation increase|dep[ae]nd[ae]nt\W+(?:\w+\W+){0,2}densit|acinar densit|verdichtung|trübung"
        ),
        # Ground glass is a lung finding whatever else the clause names ("ground glass next to the vertebral
        # osteophyte", "fibroatelectasis and ground-glass appearance"), so only a ground-glass nodule or a mass (the
        # glass around a tumour) vetoes it.
        veto=_c(
            r"ground[\s-]*glass nodule|mass|^(?!.*(?:" + _GROUND_GLASS + r")).*(?:"
            r"sclerotic|bone|vertebra|breast|liver|fat|knochen|calcific density|fibro|pleuroparenchymal|scar|"
            r"soft tissue|narb|residu|thymic|metal|skin|subcutan|leuk|"
            r"infiltrating|infiltration into|pneumonisch)"
        ),
    ),
    "Pulmonary fibrotic sequela": FindingRule(
        _c(
            r"fibro|sequel|scar|(?:parenchymal|subpleural) band|fibrotic|residu|narb|fibros|fibrotisch|"
            r"pleuroparenchymal|reticulat|honeycomb"
        ),
        # Linear (plate) atelectasis alone is atelectasis in the manual labels; a residual mass is not a scar.
        veto=_c(
            r"fibroadenoma|fibroid|pleural plaque|residu\w*[\s-]+(?:mass|relapse|tumou?r|lesion)|" + _EXTRA_PULMONARY
        ),
    ),
    "Pleural effusion": FindingRule(
        _c(
            r"pleural (?:effusion|fluid)|(?:effusion|fluid)\W+(?:\w+\W+){0,10}(?:pleura|hemithora)|"
            r"(?:bilateral|both sides)\W+(?:\w+\W+){0,3}effusion|hydrothorax|hydropneumothorax|"
            r"hydropnomothorax|pleuraerguss|pleuraergüsse|\berguss|effusion-thickening|thickening-effusion"
        ),
        veto=_c(r"pericard|perikard"),
    ),
    "Mosaic attenuation pattern": FindingRule(_c(r"mosaic|mosaik")),
    # Densities merely "in a peribronchial distribution" describe where an opacity lies. Bare bronchial-wall
    # thickening stays a trigger although the manual labels leave it out in the development half (0 in the five
    # reports naming it without "peri"): the synthetic generator renders the finding so, and only one of those five
    # uses the phrasings matched here.
    "Peribronchial thickening": FindingRule(
        _c(
            r"peribronch\w*\W+(?:\w+\W+){0,4}thick|bronch\w* wall thicken|thick\w*\W+(?:\w+\W+){0,4}"
            r"(?:peribronch|bronchial wall)|peribronchial cuffing|bronchialwandverdickung|peribronchial\w* verdick|"
            r"verdickt\w*\W+(?:\w+\W+){0,2}bronchialw|"
            r"peribronch\w*\W+(?:\w+\W+){0,2}densit|densit\w*\W+(?:\w+\W+){0,5}peribronch(?!\w* distribution)"
        )
    ),
    "Consolidation": FindingRule(_c(r"consolidat|konsolid|pneumonisch\w* infiltrat")),
    "Bronchiectasis": FindingRule(_c(r"bronchiecta|bronchiekta")),
    # A crazy-paving pattern alone is not the label (0 in three of the four development reports naming it without
    # the septa); a septum "clarification" (the translated word for prominence) or prominent interlobular septa is.
    "Interlobular septal thickening": FindingRule(
        _c(
            r"(?:interlobular|septal|septum|septa|interstiti\w*)\W+(?:\w+\W+){0,3}thick|thick\w*\W+(?:\w+\W+){0,6}"
            r"(?:interlobular|septa|interstiti)|septenverdick|septale\w* verdick|verdickt\w*\W+(?:\w+\W+){0,2}septen|"
            r"(?:interlobular|septal)\W+(?:septal\W+)?(?:clarification|prominence)|prominent interlobular septa"
        )
    ),
}

assert tuple(RULES) == CTRATE_FINDINGS, "rules must cover the CT-RATE findings in order"
