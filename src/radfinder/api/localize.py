"""`localize`: where along the scan's superior-inferior axis a sentence is most likely described.

Scoring: each sentence goes through `projection_text_copy` (the snippet head); each depth cell of the scan has an
embedding from `projection_image_copy` on the depth path. With cos the cosine of the two, the probability over the
valid depth cells is softmax(cos / tau), tau = `model.config.localization_tau` (0.1 for RadFinder: the temperature
of the localization loss the depth path was trained with). Invalid cells get probability 0. The most likely cell is
the argmax (the official localization prediction: argmax of cos over valid cells, so tau never changes it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import RadfinderError
from .depth import nearest_source_slice
from .encode import VolumeEncoding, encode_text, encode_volume
from .model import ScanInput


@dataclass
class SentenceLocation:
    """One sentence's depth profile and its most likely position.

    probabilities / cosine / cell_z_mm: (C,) per depth cell (probability 0 and cosine NaN on invalid cells).
    cell: most likely cell; world_z_mm: world z (RAS mm, superior +) of its centre (``depth_mm`` has the other
    meaning: mm along the cell axis from the start edge of cell 0, in pairs and metrics); cell_bounds_mm: its world
    z extent. depth_resolution: what the window encoder resolves in depth (``coarse`` when its depth tokens repeat
    values). slice_index: the slice of the ORIGINAL scan nearest world_z_mm along `slice_axis` (its array axis
    closest to superior-inferior), at world z `slice_z_mm`. instance_number / sop_instance_uid: that slice's DICOM
    InstanceNumber / SOPInstanceUID (DICOM input whose slice stack runs along S-I; else None).
    """

    sentence: str
    probabilities: np.ndarray
    cosine: np.ndarray
    cell_z_mm: np.ndarray
    cell: int
    probability: float
    world_z_mm: float
    cell_bounds_mm: tuple[float, float]
    slice_axis: int
    slice_index: int
    slice_z_mm: float
    instance_number: int | None
    sop_instance_uid: str | None
    temperature: float
    depth_resolution: dict[str, Any] | None = None

    def as_dict(self, profile: bool = True) -> dict[str, Any]:
        out = {
            "sentence": self.sentence,
            "cell": self.cell,
            "probability": self.probability,
            "world_z_mm": self.world_z_mm,
            "cell_bounds_mm": list(self.cell_bounds_mm),
            "slice_axis": self.slice_axis,
            "slice_index": self.slice_index,
            "slice_z_mm": self.slice_z_mm,
            "instance_number": self.instance_number,
            "sop_instance_uid": self.sop_instance_uid,
            "temperature": self.temperature,
            "depth_resolution": self.depth_resolution,
        }
        if profile:
            out["profile"] = {
                "probability": [float(v) for v in self.probabilities],
                "cosine": [None if not np.isfinite(v) else float(v) for v in self.cosine],
                "z_mm": [float(v) for v in self.cell_z_mm],
            }
        return out


def depth_probabilities(cos: np.ndarray, valid: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(cos / temperature) over the valid cells; 0 elsewhere. cos (S, C), valid (C,) -> (S, C)."""
    if temperature <= 0:
        raise RadfinderError(f"temperature must be positive, got {temperature}")
    if not valid.any():
        raise RadfinderError("the scan has no valid depth cell")
    logits = np.where(valid[None], cos / temperature, -np.inf)
    logits = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def localize(
    model,
    scan: ScanInput | VolumeEncoding,
    sentences: str | Sequence[str],
    *,
    temperature: float | None = None,
    chunk_size: int = 8,
) -> list[SentenceLocation]:
    """Depth profile and most likely position of each sentence in one scan (path, `Volume`, `Preprocessed`, or a
    `VolumeEncoding`). `temperature` defaults to the model's `localization_tau`. See the module doc."""
    from ..eval._common import l2_normalize

    sentences = [sentences] if isinstance(sentences, str) else list(sentences)
    if not sentences:
        raise RadfinderError("localize needs at least one sentence")
    tau = float(model.config.localization_tau if temperature is None else temperature)
    enc = scan if isinstance(scan, VolumeEncoding) else encode_volume(model, scan, chunk_size=chunk_size)
    snippets = l2_normalize(encode_text(model, sentences, snippet=True).astype(np.float64))
    cells = l2_normalize(enc.depth.astype(np.float64))
    cos = snippets @ cells.T
    probs = depth_probabilities(cos, enc.depth_valid, tau)
    pre = enc.preprocessed
    out = []
    for s, sentence in enumerate(sentences):
        cell = int(np.argmax(np.where(enc.depth_valid, cos[s], -np.inf)))
        depth = float(enc.depth_z_mm[cell])
        sl = nearest_source_slice(pre.source_shape, pre.source_affine, depth)
        number = uid = None
        if enc.instances and sl.axis == 2 and len(enc.instances) == pre.source_shape[2]:
            inst = enc.instances[sl.index]
            number, uid = inst.instance_number, inst.sop_instance_uid
        out.append(
            SentenceLocation(
                sentence=sentence,
                probabilities=probs[s],
                cosine=np.where(enc.depth_valid, cos[s], np.nan),
                cell_z_mm=enc.depth_z_mm,
                cell=cell,
                probability=float(probs[s, cell]),
                world_z_mm=depth,
                cell_bounds_mm=(float(enc.depth_bounds_mm[cell, 0]), float(enc.depth_bounds_mm[cell, 1])),
                slice_axis=sl.axis,
                slice_index=sl.index,
                slice_z_mm=sl.z_mm,
                instance_number=number,
                sop_instance_uid=uid,
                temperature=tau,
                depth_resolution=enc.meta.get("depth_resolution"),
            )
        )
    return out
