"""The segmentation written beside every synthetic volume: TotalSegmentator's multilabel (`--ml`) format.

Organ voxels carry TotalSegmentator v2 class ids of the `total` task, so the reader that serves real
TotalSegmentator output serves the phantoms too. Findings are marked with ids outside TotalSegmentator's range:
``LESION_BASE + 1 + i`` for the i-th of the 18 CT-RATE findings (201 = Medical material ... 218 = Interlobular
septal thickening). A lesion id overrides the organ id of the voxels it covers (one id per voxel, as in `--ml`).
Findings that change an organ instead of adding to it are marked where that is a place: the pericardial fluid rim
(Pericardial effusion) and thickened bronchial walls (Peribronchial thickening); an enlarged heart (Cardiomegaly)
stays `heart`.
"""

from __future__ import annotations

import numpy as np

from ...text.findings import CTRATE_FINDINGS

# TotalSegmentator v2, task `total`: the classes the phantom draws (ids from its class map).
LIVER = 5
LUNG_UPPER_LOBE_LEFT = 10
LUNG_LOWER_LOBE_LEFT = 11
LUNG_UPPER_LOBE_RIGHT = 12
LUNG_MIDDLE_LOBE_RIGHT = 13
LUNG_LOWER_LOBE_RIGHT = 14
ESOPHAGUS = 15
TRACHEA = 16
HEART = 51
AORTA = 52
BRACHIOCEPHALIC_TRUNK = 54
SUPERIOR_VENA_CAVA = 62

ORGAN_CLASSES: dict[int, str] = {
    LIVER: "liver",
    LUNG_UPPER_LOBE_LEFT: "lung_upper_lobe_left",
    LUNG_LOWER_LOBE_LEFT: "lung_lower_lobe_left",
    LUNG_UPPER_LOBE_RIGHT: "lung_upper_lobe_right",
    LUNG_MIDDLE_LOBE_RIGHT: "lung_middle_lobe_right",
    LUNG_LOWER_LOBE_RIGHT: "lung_lower_lobe_right",
    ESOPHAGUS: "esophagus",
    TRACHEA: "trachea",
    HEART: "heart",
    AORTA: "aorta",
    BRACHIOCEPHALIC_TRUNK: "brachiocephalic_trunk",
    SUPERIOR_VENA_CAVA: "superior_vena_cava",
}

LESION_BASE = 200


def lesion_id(finding: str) -> int:
    return LESION_BASE + 1 + CTRATE_FINDINGS.index(finding)


LESION_CLASSES: dict[int, str] = {lesion_id(f): f"lesion: {f}" for f in CTRATE_FINDINGS}
SEG_CLASSES: dict[int, str] = {**ORGAN_CLASSES, **LESION_CLASSES}


def lobe_id(right, lower, middle_or_lingula):
    """Lobe class ids from boolean arrays (the left lingula belongs to the left upper lobe, as in TotalSegmentator)."""
    left = np.where(lower, LUNG_LOWER_LOBE_LEFT, LUNG_UPPER_LOBE_LEFT)
    upper_r = np.where(middle_or_lingula, LUNG_MIDDLE_LOBE_RIGHT, LUNG_UPPER_LOBE_RIGHT)
    rgt = np.where(lower, LUNG_LOWER_LOBE_RIGHT, upper_r)
    return np.where(right, rgt, left).astype(np.uint8)
