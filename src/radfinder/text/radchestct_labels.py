"""Rad-ChestCT native labels -> the 18 CT-RATE classes (label vocabulary, used by the loader and the protocol).

Rad-ChestCT labels are binary columns named ``abnormality*location`` (e.g. ``nodule*right_lung``). A CT-RATE
class is positive when any column whose *abnormality* part is in its list below is positive (OR over all
locations). Mapping provenance: the device list, calcification, nodule, opacity and scarring entries are from the
RadFinder protocol; for the classes described there only as "one to one", the native name is our reading of the
Rad-ChestCT vocabulary (marked "[inferred]" below), so pass `mapping=` to override.

| CT-RATE class                     | Rad-ChestCT abnormalities                                                    |
|-----------------------------------|------------------------------------------------------------------------------|
| Medical material                  | catheter_or_port, tracheal_tube, chest_tube, breast_implant,                 |
|                                   | pacemaker_or_defib, stent, clip, staple, gi_tube, hardware, suture           |
| Arterial wall calcification       | calcification                                                                |
| Cardiomegaly                      | cardiomegaly [inferred]                                                      |
| Pericardial effusion              | pericardial_effusion [inferred]                                              |
| Coronary artery wall calcification| calcification                                                                |
| Hiatal hernia                     | hernia [inferred]                                                            |
| Lymphadenopathy                   | lymphadenopathy [inferred]                                                   |
| Emphysema                         | emphysema [inferred]                                                         |
| Atelectasis                       | atelectasis [inferred]                                                       |
| Lung nodule                       | nodule, nodulegr1cm                                                          |
| Lung opacity                      | opacity                                                                      |
| Pulmonary fibrotic sequela        | scarring                                                                     |
| Pleural effusion                  | pleural_effusion [inferred]                                                  |
| Mosaic attenuation pattern        | (none: no label; dropped by the protocol)                                    |
| Peribronchial thickening          | bronchial_wall_thickening [inferred]                                         |
| Consolidation                     | consolidation [inferred]                                                     |
| Bronchiectasis                    | bronchiectasis [inferred]                                                    |
| Interlobular septal thickening    | septal_thickening [inferred]                                                 |

Protocol (CT-CLIP standard): the prediction for Arterial wall calcification becomes max(arterial, coronary);
Coronary artery wall calcification and Mosaic attenuation pattern are dropped, leaving 16 classes; macro AUROC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import RadfinderError
from .findings import CTRATE_FINDINGS


class LabelMapError(RadfinderError, ValueError):
    """Native label columns or values cannot be mapped."""


RADCHESTCT_TO_CTRATE18: dict[str, tuple[str, ...]] = {
    "Medical material": (
        "catheter_or_port",
        "tracheal_tube",
        "chest_tube",
        "breast_implant",
        "pacemaker_or_defib",
        "stent",
        "clip",
        "staple",
        "gi_tube",
        "hardware",
        "suture",
    ),
    "Arterial wall calcification": ("calcification",),
    "Cardiomegaly": ("cardiomegaly",),
    "Pericardial effusion": ("pericardial_effusion",),
    "Coronary artery wall calcification": ("calcification",),
    "Hiatal hernia": ("hernia",),
    "Lymphadenopathy": ("lymphadenopathy",),
    "Emphysema": ("emphysema",),
    "Atelectasis": ("atelectasis",),
    "Lung nodule": ("nodule", "nodulegr1cm"),
    "Lung opacity": ("opacity",),
    "Pulmonary fibrotic sequela": ("scarring",),
    "Pleural effusion": ("pleural_effusion",),
    "Mosaic attenuation pattern": (),
    "Peribronchial thickening": ("bronchial_wall_thickening",),
    "Consolidation": ("consolidation",),
    "Bronchiectasis": ("bronchiectasis",),
    "Interlobular septal thickening": ("septal_thickening",),
}
INFERRED_ONE_TO_ONE: frozenset[str] = frozenset(
    {
        "Cardiomegaly",
        "Pericardial effusion",
        "Hiatal hernia",
        "Lymphadenopathy",
        "Emphysema",
        "Atelectasis",
        "Pleural effusion",
        "Peribronchial thickening",
        "Consolidation",
        "Bronchiectasis",
        "Interlobular septal thickening",
    }
)
ARTERIAL = "Arterial wall calcification"
CORONARY = "Coronary artery wall calcification"
MOSAIC = "Mosaic attenuation pattern"
RADCHESTCT_STANDARD_FINDINGS: tuple[str, ...] = tuple(f for f in CTRATE_FINDINGS if f not in (CORONARY, MOSAIC))


def radchestct_to_ctrate18(
    columns: Sequence[str] | Any,
    values: Any = None,
    *,
    mapping: Mapping[str, Sequence[str]] = RADCHESTCT_TO_CTRATE18,
) -> tuple[np.ndarray, dict[str, list[str]]]:
    """OR-aggregate native ``abnormality*location`` labels into the 18 CT-RATE classes.

    Pass a pandas DataFrame as `columns` (values taken from it), or column names plus an (N, C) array. Columns
    without a ``*`` (e.g. the ``NoteAcc_DEID`` index) are ignored. Returns (labels (N, 18) int with 1/0, or -1
    for a class none of whose abnormalities occurs among the columns), and, per class, the mapped abnormality
    names that were not found in the columns.
    """
    if values is None and hasattr(columns, "columns"):
        frame = columns
        columns, values = list(frame.columns), frame.to_numpy()
    cols = [str(c) for c in columns]
    vals = np.asarray(values)
    if vals.ndim != 2 or vals.shape[1] != len(cols):
        raise LabelMapError(f"Rad-ChestCT labels: {len(cols)} column names for values of shape {vals.shape}")
    abnormality = np.asarray([c.split("*", 1)[0] if "*" in c else "" for c in cols])
    labeled = abnormality != ""
    if not labeled.any():
        raise LabelMapError("Rad-ChestCT labels: no column named 'abnormality*location'")
    try:
        native = np.asarray(vals[:, labeled], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise LabelMapError(f"Rad-ChestCT label values: not numeric ({exc})") from exc
    if np.any(np.isnan(native)) or not np.all(np.isin(native, (0, 1))):
        raise LabelMapError("Rad-ChestCT label values must be 0/1")
    abnormality = abnormality[labeled]
    present = set(abnormality.tolist())
    out = np.full((vals.shape[0], len(CTRATE_FINDINGS)), -1, dtype=np.int64)
    missing: dict[str, list[str]] = {}
    for j, finding in enumerate(CTRATE_FINDINGS):
        names = tuple(mapping.get(finding, ()))
        lost = [n for n in names if n not in present]
        if lost:
            missing[finding] = lost
        sel = np.isin(abnormality, names)
        if sel.any():
            out[:, j] = (native[:, sel] > 0).any(axis=1).astype(np.int64)
    return out, missing
