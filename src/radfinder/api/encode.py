"""`encode_volume` and `encode_text`: embeddings of raw scans and of text with a RadFinder model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import RadfinderError
from ..models.window_encoder import WindowFeatures
from ..preprocess.apply import Preprocessed
from .depth import cell_depths
from .model import ScanInput, check_depth_tokens, model_device, model_dtype, preprocess_for

DEFAULT_CHUNK = 8  # windows per window-encoder forward: bounds activation memory (ViT-L: ~1.5 GB per window)


@dataclass
class VolumeEncoding:
    """Everything the model says about one scan.

    retrieval (P,): `projection_image` embedding, compared with report embeddings (`encode_text`).
    disease (P,): `projection_image_copy` embedding, compared with disease prompts (`classify`).
    depth (C, P): one embedding per depth cell (C = 8 per window of depth for RadFinder, 12 mm each).
    depth_valid (C,): the model's valid-cell mask AND "the cell holds scan data" (cells wholly in the padding of a
        scan thinner than one window are excluded).
    depth_z_mm (C,): world z (RAS mm, superior +) of the centre of each cell's data part; depth_bounds_mm (C, 2).
    preprocessed: the `Preprocessed` input (grid, affine, crop: the geometry of every embedding).
    Embeddings are not normalised (take cosines). All arrays are float32 NumPy.
    """

    retrieval: np.ndarray
    disease: np.ndarray
    depth: np.ndarray
    depth_valid: np.ndarray
    depth_z_mm: np.ndarray
    depth_bounds_mm: np.ndarray
    preprocessed: Preprocessed
    source: str | None = None
    instances: list[Any] | None = None  # DICOM: per-instance geometry along the source's axis 2 (slice order)
    window_features: WindowFeatures | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.preprocessed.grid)

    @property
    def spec_hash(self) -> str:
        return self.preprocessed.spec_hash

    @property
    def n_depth_cells(self) -> int:
        return int(self.depth.shape[0])

    def summary(self) -> dict[str, Any]:
        """JSON-ready description without the depth embeddings."""
        return {
            "source": self.source,
            "spec_hash": self.spec_hash,
            "grid": list(self.grid),
            "n_windows": int(np.prod(self.grid)),
            "n_depth_cells": self.n_depth_cells,
            "n_valid_depth_cells": int(self.depth_valid.sum()),
            "depth_cell_mm": float(self.depth_bounds_mm[0, 1] - self.depth_bounds_mm[0, 0]),
            "depth_z_range_mm": [float(self.depth_z_mm[self.depth_valid].min()),
                                 float(self.depth_z_mm[self.depth_valid].max())] if self.depth_valid.any() else None,
            # a coarse backbone (e.g. 2 depth positions per 32-slice window) repeats values across depth cells
            "depth_resolution": self.meta.get("depth_resolution"),
            "retrieval": self.retrieval.tolist(),
            "disease": self.disease.tolist(),
        }  # fmt: skip


@torch.inference_mode()
def encode_window_array(model, windows: np.ndarray, chunk_size: int = DEFAULT_CHUNK) -> WindowFeatures:
    """Window-encoder features of (N, 1, wh, ww, wd) windows, `chunk_size` windows per forward pass (only one
    chunk is ever on the device as float)."""
    if chunk_size < 1:
        raise RadfinderError(f"chunk size must be >= 1, got {chunk_size}")
    dev, dt = model_device(model), model_dtype(model)
    parts = []
    for start in range(0, len(windows), chunk_size):
        x = torch.from_numpy(np.ascontiguousarray(windows[start : start + chunk_size])).to(dev).to(dt)
        parts.append(model.encode_windows(x))
    return WindowFeatures.cat(parts)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


@torch.inference_mode()
def encode_volume(
    model, scan: ScanInput, *, chunk_size: int = DEFAULT_CHUNK, keep_window_features: bool = False
) -> VolumeEncoding:
    """Embed one scan (NIfTI/NRRD/NPZ path, DICOM folder or file, a `Volume`, or a `Preprocessed` made with the
    model's spec) with the model's own preprocessing spec.

    The window encoder runs once (in chunks of `chunk_size` windows); the global and depth paths share its
    output. Deterministic in eval mode (the model from `load_model` is in eval mode).
    """
    from ..models.radfinder import pad_window_features

    pre, volume = preprocess_for(model, scan)
    check_depth_tokens(model, pre)
    feats = encode_window_array(model, pre.windows(), chunk_size)
    padded = pad_window_features(feats, [pre.grid])
    img = model.encode_features_global(padded.cls, padded.patch_average, padded.window_mask, padded.grid_size)
    depth = model.encode_features_depth(padded.cls, padded.axis2, padded.window_mask, padded.grid_size)
    z_mm, bounds, has_data = cell_depths(pre)
    valid = _np(depth.valid_depth_mask[0]).astype(bool)
    if valid.shape != has_data.shape:
        raise RadfinderError(f"model returned {valid.shape[0]} depth cells, the geometry has {has_data.shape[0]}")
    source = None
    if volume is not None and volume.meta.get("source"):
        source = str(volume.meta["source"])
    elif pre.meta.get("source"):
        source = str(pre.meta["source"])
    instances = volume.meta.get("instances") if volume is not None and volume.meta.get("format") == "dicom" else None
    return VolumeEncoding(
        retrieval=_np(img.retrieval[0]),
        disease=_np(img.disease[0]),
        depth=_np(depth.slice_emb[0]),
        depth_valid=valid & has_data,
        depth_z_mm=z_mm,
        depth_bounds_mm=bounds,
        preprocessed=pre,
        source=source,
        instances=list(instances) if instances else None,
        window_features=feats.to("cpu") if keep_window_features else None,
        meta={"depth_resolution": model.backbone_image.depth_resolution(float(pre.spacing[2]))},
    )


@torch.inference_mode()
def encode_text(model, texts: str | Sequence[str], *, snippet: bool = False, batch_size: int = 32) -> np.ndarray:
    """(N, P) float32 text embeddings: reports and prompts through `projection_text` (compare with
    `VolumeEncoding.retrieval` / `.disease`), or with `snippet=True` localization snippets through
    `projection_text_copy` (compare with `VolumeEncoding.depth`)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise RadfinderError("encode_text needs at least one text")
    if any(not isinstance(t, str) or not t.strip() for t in texts):
        raise RadfinderError("texts must be non-empty strings")
    fn = model.encode_snippet if snippet else model.encode_text
    out = []
    for start in range(0, len(texts), batch_size):
        out.append(_np(fn(**model.tokenize(texts[start : start + batch_size]))))
    return np.concatenate(out)


@torch.inference_mode()
def encode_query(model, texts: str | Sequence[str], *, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(report-space (N, P), snippet-space (N, P)) embeddings of query texts: `encode_text` and
    `encode_text(snippet=True)` in one pass of the text tower (both heads share its pooled features), so a search
    that ranks studies and grounds the sentence pays for the tower once."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise RadfinderError("encode_query needs at least one text")
    if any(not isinstance(t, str) or not t.strip() for t in texts):
        raise RadfinderError("texts must be non-empty strings")
    report, snippet = [], []
    for start in range(0, len(texts), batch_size):
        pooled = model.text_features(**model.tokenize(texts[start : start + batch_size]))
        report.append(_np(model.projection_text(pooled)))
        snippet.append(_np(model.snippet_head(pooled)))
    return np.concatenate(report), np.concatenate(snippet)
