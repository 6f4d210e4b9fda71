"""Which renderer draws which CT-RATE finding, and planning a study's lesions from its label vector."""

from __future__ import annotations

import numpy as np

from ...text.findings import CTRATE_FINDINGS
from . import find_lung as L
from . import find_other as O
from .anatomy import Anatomy
from .lesion import Lesion, Op
from .segmentation import lesion_id

# Order matters only for anatomy-changing findings (heart size and pericardial fluid before anything that
# asks whether a point is in the lung), so they come first.
RENDERERS = {
    "Cardiomegaly": O.cardiomegaly,
    "Pericardial effusion": O.pericardial_effusion,
    "Medical material": O.medical_material,
    "Arterial wall calcification": O.arterial_calcification,
    "Coronary artery wall calcification": O.coronary_calcification,
    "Hiatal hernia": O.hiatal_hernia,
    "Lymphadenopathy": O.lymphadenopathy,
    "Emphysema": L.emphysema,
    "Mosaic attenuation pattern": L.mosaic,
    "Interlobular septal thickening": L.septal,
    "Pulmonary fibrotic sequela": L.fibrotic,
    "Peribronchial thickening": L.peribronchial,
    "Bronchiectasis": L.bronchiectasis,
    "Lung opacity": L.opacity,
    "Consolidation": L.consolidation,
    "Atelectasis": L.atelectasis,
    "Lung nodule": L.nodule,
    "Pleural effusion": L.pleural_effusion,
}
assert set(RENDERERS) == set(CTRATE_FINDINGS)

# Paint order on the canvas: diffuse textures first, focal lesions over them, fluid last (it fills the base).
_PAINT_ORDER = [
    "Emphysema",
    "Mosaic attenuation pattern",
    "Interlobular septal thickening",
    "Pulmonary fibrotic sequela",
    "Bronchiectasis",
    "Lung opacity",
    "Consolidation",
    "Atelectasis",
    "Lung nodule",
    "Lymphadenopathy",
    "Hiatal hernia",
    "Arterial wall calcification",
    "Coronary artery wall calcification",
    "Pleural effusion",
    "Medical material",
    "Cardiomegaly",
    "Pericardial effusion",
    "Peribronchial thickening",
]


def plan_findings(rng: np.random.Generator, A: Anatomy, labels: np.ndarray) -> tuple[list[Lesion], list[Op]]:
    """Lesions and paint operations for every positive label. Every positive label yields at least one lesion:
    a renderer that could not place its lesion is retried with fresh randomness."""
    positive = {f for f, y in zip(CTRATE_FINDINGS, labels, strict=True) if y}
    by_finding: dict[str, tuple[list[Lesion], list[Op]]] = {}
    for name, fn in RENDERERS.items():
        if name not in positive:
            continue
        for _ in range(5):
            les, ops = fn(rng, A)
            if les:
                for op in ops:
                    op.seg = lesion_id(name)
                by_finding[name] = (les, ops)
                break
        else:
            raise RuntimeError(f"synthetic renderer for {name!r} failed to place a lesion")
    lesions: list[Lesion] = []
    ops: list[Op] = []
    for name in _PAINT_ORDER:
        if name in by_finding:
            lesions += by_finding[name][0]
            ops += by_finding[name][1]
    return lesions, ops
