"""Embedding a dataset with a RadFinder model: volumes (global, disease, per depth cell) and texts.

Window features come from a frozen-feature cache when one is given (it must match the model's preprocessing spec
and window encoder, checked by hash), otherwise from the raw scans with the model's own preprocessing spec and
window encoder. Everything here runs without gradients in eval mode; outputs are float32 numpy arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import RadfinderError
from ..features.collate import collate_features
from ..features.store import FeatureRecord, FeatureStore, state_dict_hash
from ..preprocess.cells import cell_centre_world, cells_in_scan
from ..progress import progress


class EvalSetupError(RadfinderError):
    """The model, the data and the feature cache of an evaluation do not fit together."""


@dataclass
class EmbeddedVolumes:
    """Model outputs for N volumes, in the order of `keys`.

    retrieval / disease: (N, P); depth: per volume (n_valid_cells, P) slice embeddings of its valid depth cells;
    cell_z_mm: per volume, world z (superior +) of each valid cell's centre (for grounding figures);
    cell_in_scan: per volume, (n_valid_cells,) bool, the cell holds scan data (not only padding); None where the scan's
    extent is unknown (a feature cache without it and no readable volume header).
    """

    keys: list[str]
    retrieval: np.ndarray
    disease: np.ndarray
    depth: list[np.ndarray] = field(default_factory=list)
    cell_z_mm: list[np.ndarray] = field(default_factory=list)
    cell_in_scan: list[np.ndarray | None] = field(default_factory=list)

    def index(self) -> dict[str, int]:
        return {k: i for i, k in enumerate(self.keys)}


def open_matching_store(path: Any, model) -> FeatureStore:
    """Open a feature cache and check that it was made with the model's preprocessing spec and window encoder."""
    store = FeatureStore.open(path)
    spec_hash = model.preprocess_spec.hash()
    if store.spec.hash() != spec_hash:
        raise EvalSetupError(
            f"{store.root}: features were extracted with preprocessing spec {store.spec.hash()} but the checkpoint "
            f"expects {spec_hash}; extract features with the checkpoint's spec or evaluate from raw scans"
        )
    backbone = state_dict_hash(model.backbone_image)
    if store.backbone.get("hash") != backbone:
        raise EvalSetupError(
            f"{store.root}: features come from window encoder {store.backbone.get('hash')} but the checkpoint's "
            f"window encoder is {backbone}; use the cache made with this checkpoint's encoder or raw scans"
        )
    cached = (store.backbone.get("hub") or {}).get("commit")
    mine = (getattr(model, "hub_sources", {}).get("checkpoint") or {}).get("commit")
    if cached and mine and cached != mine:
        raise EvalSetupError(
            f"{store.root}: features come from {store.backbone['hub']['repo_id']} commit {cached} but the checkpoint "
            f"is commit {mine}; extract features with this revision or evaluate from raw scans"
        )
    if store.feature_dim != model.backbone_image.feature_dim:
        dim = model.backbone_image.feature_dim
        raise EvalSetupError(f"{store.root}: feature dim {store.feature_dim} != the model's {dim}")
    return store


def raw_feature_fn(model, *, batch_size: int = 8) -> Callable[[Any], FeatureRecord]:
    """record -> FeatureRecord computed from the raw scan with the model's spec and window encoder."""
    from ..features.extract import encode_windows
    from ..preprocess import apply_spec

    device = next(model.parameters()).device

    def fn(record) -> FeatureRecord:
        pre = apply_spec(record.load_volume(), model.preprocess_spec)
        cls, avg, axis2 = encode_windows(model.backbone_image, pre.windows(), batch_size=batch_size, device=device)
        hg, wg, dg = (int(v) for v in pre.grid)
        e = cls.shape[-1]
        return FeatureRecord(
            key=record.key,
            cls=cls.reshape(hg, wg, dg, e),
            patch_average=avg.reshape(hg, wg, dg, e),
            axis2=axis2.reshape(hg, wg, dg, axis2.shape[1], e),
            affine=np.asarray(pre.affine, dtype=np.float64),
            meta={"depth_extent": list(pre.depth_extent)},
        )

    return fn


def depth_extent_of(record, feature: FeatureRecord, spec) -> tuple[int, int] | None:
    """[lo, hi) of the preprocessed D axis holding scan data: from the features' meta (``depth_extent``, written at
    extraction) or else planned from the record's volume header with `spec`; None when neither is available."""
    ext = feature.meta.get("depth_extent") if feature.meta else None
    if ext is not None:
        return int(ext[0]), int(ext[1])
    path = getattr(record, "path", None)
    name = str(path or "").lower()
    if not name.endswith((".nii", ".nii.gz")):
        return None
    try:
        import nibabel as nib

        from ..preprocess.geometry import plan_geometry

        img = nib.load(str(path))  # header only
        geom = plan_geometry(tuple(int(v) for v in img.shape[:3]), np.asarray(img.affine, dtype=np.float64), spec)
    except (OSError, ValueError, RadfinderError):
        return None
    return geom.valid_box[2]


def check_depth_tokens(feature: FeatureRecord, spec, where: str) -> None:
    """The features must carry the spec's number of depth tokens per window (one per depth cell)."""
    t = int(feature.axis2.shape[3])
    if t != spec.depth_tokens_per_window:
        raise EvalSetupError(
            f"{where}: {feature.key} has {t} depth tokens per window but the preprocessing spec has "
            f"{spec.depth_tokens_per_window} depth cells per window; the window encoder does not match the spec")


def cell_centres_z(affine: np.ndarray, n_cells: int, cell_voxels: int) -> np.ndarray:
    """World z of the centre of depth cells 0..n-1 of a preprocessed image with this affine, on the image's
    first column and row (the feature cache keeps no in-plane size; for an axis-aligned grid z is the same)."""
    return cell_centre_world(affine, (1, 1), np.arange(n_cells), int(cell_voxels))[:, 2]


@torch.no_grad()
def embed_volumes(
    model,
    records: Sequence[Any],
    *,
    features: FeatureStore | None = None,
    batch_size: int = 8,
    depth: bool = True,
    show_progress: bool = False,
) -> EmbeddedVolumes:
    """Global (retrieval, disease) and, with `depth`, per-depth-cell embeddings of every record."""
    model.eval()
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    get = (lambda r: features.read(r.key)) if features is not None else raw_feature_fn(model)
    ret, dis, dep, zs, inside = [], [], [], [], []
    spec = model.preprocess_spec
    where = str(features.root) if features is not None else "window encoder"
    chunks = [records[i : i + batch_size] for i in range(0, len(records), batch_size)]
    for chunk in progress(chunks, total=len(chunks), desc="embed volumes", enabled=show_progress):
        feats = [get(r) for r in chunk]
        for f in feats:
            check_depth_tokens(f, spec, where)
        b = collate_features(feats).to(device, dtype)
        g = model.encode_features_global(b.cls, b.patch_average, b.window_mask, b.grid_size)
        ret.append(g.retrieval.float().cpu().numpy())
        dis.append(g.disease.float().cpu().numpy())
        if depth:
            d = model.encode_features_depth(b.cls, b.axis2, b.window_mask, b.grid_size)
            emb = d.slice_emb.float().cpu().numpy()
            valid = d.valid_depth_mask.cpu().numpy()
            k = spec.window[2] // spec.depth_tokens_per_window
            for i, (f, r) in enumerate(zip(feats, chunk, strict=True)):
                n_valid = int(valid[i].sum())
                dep.append(emb[i][valid[i]])
                zs.append(cell_centres_z(f.affine, n_valid, k))
                ext = depth_extent_of(r, f, spec)
                inside.append(None if ext is None else cells_in_scan(n_valid, k, ext))
    return EmbeddedVolumes(
        keys=[r.key for r in records],
        retrieval=np.concatenate(ret) if ret else np.zeros((0, 0), np.float32),
        disease=np.concatenate(dis) if dis else np.zeros((0, 0), np.float32),
        depth=dep,
        cell_z_mm=zs,
        cell_in_scan=inside,
    )


@torch.no_grad()
def embed_texts(model, texts: Iterable[str], *, head: str = "report", batch_size: int = 32) -> np.ndarray:
    """(n, P) text embeddings: `head` "report" (projection_text: reports and prompts) or "snippet"
    (projection_text_copy: localization snippets)."""
    model.eval()
    texts = list(texts)
    out = []
    for i in range(0, len(texts), batch_size):
        tok = model.tokenize(texts[i : i + batch_size])
        if head == "report":
            e = model.encode_text(tok["input_ids"], tok["attention_mask"])
        elif head == "snippet":
            e = model.encode_snippet(tok["input_ids"], tok["attention_mask"])
        else:
            raise ValueError(f"head must be 'report' or 'snippet', got {head!r}")
        out.append(e.float().cpu().numpy())
    if not out:
        return np.zeros((0, model.config.projection_dim), np.float32)
    return np.concatenate(out)
