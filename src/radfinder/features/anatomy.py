"""Anatomy masks on the spatial token grid of the feature cache (fVLM's anatomy-level pooling needs them).

For a scan with an organ segmentation (TotalSegmentator output or the synthetic cohort's masks), every anatomy of
the groups YAML (`radfinder.data.anatomy`) is brought onto the preprocessed grid by the one resampler that serves
images (`anatomy_masks_on_grid` -> `apply_spec_labels`, nearest neighbour), and then counted per spatial token: a
window of (wh, ww, wd) voxels with an (Sh, Sw, T) token grid gives tokens of (wh/Sh, ww/Sw, wd/T) voxels, and the
coverage of token (h, w, d, i, j, t) for anatomy a is the fraction of its voxels inside a's mask.

An anatomy is *cut* when its mask reaches a face where the spec's crop removed scanned data (fVLM excludes anatomies
cut by its crop). Reaching the scan's own field of view is recorded separately (`AnatomyCoverage.touches_fov`) and
does not exclude it: in a chest CT the esophagus and the aorta run past the scanned range almost always, and fVLM
keeps them (its crops are cut from the scan, the field of view is not a crop).

Cache key: the sidecar (`FeatureStore.write_anatomy`) records the mask's content hash (`Segmentation.hash`) and
the groups hash (`groups_hash`); extraction recomputes it whenever either differs from the current mask and
grouping (the image features themselves do not depend on the mask and stay).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..data.anatomy import AnatomyGroups, Segmentation, anatomy_masks_on_grid, read_segmentation, touches_border
from ..errors import RadfinderError
from ..preprocess.geometry import plan_geometry
from ..preprocess.spec import PreprocessSpec
from .store import AnatomyCoverage

MASKS_AUTO = "auto"
MASKS_FOLDER = "masks"
_NIFTI = (".nii.gz", ".nii")


class MaskNotFound(RadfinderError):
    """A scan that should have a segmentation has none where it was looked for."""


def groups_hash(groups: AnatomyGroups, lesions: bool = True) -> str:
    """16-hex hash of an anatomy grouping (class table, members in order, whether lesion classes count)."""
    doc = {"classes": sorted(groups.classes.items()),
           "anatomies": [[a, [str(m) if isinstance(m, str) else int(m) for m in ms]]
                         for a, ms in groups.anatomies.items()],
           "lesions": bool(lesions), "v": 2}  # fmt: skip  (v2: cut = by the crop only)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def token_shape(window: tuple[int, int, int], tokens: tuple[int, int, int]) -> tuple[int, int, int]:
    """Voxels per spatial token: (wh/Sh, ww/Sw, wd/T); the token grid must divide the window."""
    if any(int(w) % int(t) for w, t in zip(window, tokens, strict=True)):
        raise RadfinderError(f"spatial token grid {tuple(tokens)} does not divide the window {tuple(window)}")
    return tuple(int(w) // int(t) for w, t in zip(window, tokens, strict=True))


def token_coverage(
    masks: np.ndarray, grid: tuple[int, int, int], window: tuple[int, int, int], tokens: tuple[int, int, int]
) -> np.ndarray:
    """(A, H, W, D) boolean masks on the preprocessed grid -> (Hg, Wg, Dg, Sh, Sw, T, A) float32 coverage.

    H = Hg * wh etc.; windows are laid out as in `Preprocessed.windows` and tokens as in `WindowFeatures.spatial`."""
    m = np.asarray(masks, dtype=bool)
    hg, wg, dg = (int(v) for v in grid)
    wh, ww, wd = (int(v) for v in window)
    sh, sw, st = (int(v) for v in tokens)
    th, tw, td = token_shape(window, tokens)
    if m.ndim != 4 or m.shape[1:] != (hg * wh, wg * ww, dg * wd):
        raise RadfinderError(f"masks of shape {m.shape[1:]} do not fill a {grid} grid of {window} windows")
    a = m.shape[0]
    x = m.reshape(a, hg, sh, th, wg, sw, tw, dg, st, td)
    counts = x.sum(axis=(3, 6, 9), dtype=np.int64)  # (A, Hg, Sh, Wg, Sw, Dg, T)
    cov = counts.astype(np.float64) / float(th * tw * td)
    return np.ascontiguousarray(cov.transpose(1, 3, 5, 2, 4, 6, 0), dtype=np.float32)


def data_box(shape, spaced_shape, crop_start) -> tuple[slice, slice, slice]:
    """The part of the preprocessed grid that holds scanned data (the rest is padding)."""
    return tuple(slice(max(0, -int(c)), min(int(n), int(s) - int(c)))
                 for n, s, c in zip(shape, spaced_shape, crop_start, strict=True))  # fmt: skip


def fov_flags(masks: np.ndarray, box: tuple[slice, slice, slice]) -> np.ndarray:
    """(A,) bool: each anatomy's mask reaches a face of the data box (the scan's field of view, or the crop)."""
    return np.array([touches_border(m[box]) for m in np.asarray(masks, dtype=bool)], dtype=bool)


def crop_faces(shape, spaced_shape, crop_start) -> list[tuple[int, int]]:
    """(axis, index) of the preprocessed grid's faces where the crop removed scanned data."""
    faces = []
    for k, (n, s, c) in enumerate(zip(shape, spaced_shape, crop_start, strict=True)):
        if int(c) > 0:
            faces.append((k, 0))
        if int(c) + int(n) < int(s):
            faces.append((k, int(n) - 1))
    return faces


def cut_flags(masks: np.ndarray, faces: list[tuple[int, int]]) -> np.ndarray:
    """(A,) bool: each anatomy's mask reaches a face where the crop removed data (cut by the crop)."""
    m = np.asarray(masks, dtype=bool)
    out = np.zeros(m.shape[0], dtype=bool)
    for axis, index in faces:
        out |= np.take(m, index, axis=axis + 1).reshape(m.shape[0], -1).any(axis=1)
    return out


def anatomy_coverage(
    seg: Segmentation,
    groups: AnatomyGroups,
    spec: PreprocessSpec,
    tokens: tuple[int, int, int],
    *,
    image_shape: tuple[int, int, int] | None = None,
    image_affine: np.ndarray | None = None,
    lesions: bool = True,
) -> AnatomyCoverage:
    """Coverage, cut flags and voxel counts of every anatomy of `groups` for one segmentation (module doc)."""
    masks, _ = anatomy_masks_on_grid(seg, groups, spec, image_shape=image_shape, image_affine=image_affine,
                                     lesions=lesions)  # fmt: skip
    names = list(groups.names)
    stack = np.stack([masks[a] for a in names])
    if image_shape is not None and image_affine is not None:
        geom = plan_geometry(tuple(int(s) for s in image_shape), np.asarray(image_affine, np.float64), spec)
    else:
        geom = plan_geometry(seg.shape, seg.affine, spec)
    if tuple(geom.shape) != stack.shape[1:]:
        raise RadfinderError(f"{seg.source}: mask grid {stack.shape[1:]} differs from the image grid {geom.shape}")
    cov = token_coverage(stack, geom.grid, geom.window, tokens)
    box = data_box(geom.shape, geom.spaced_shape, geom.crop_start)
    faces = crop_faces(geom.shape, geom.spaced_shape, geom.crop_start)
    return AnatomyCoverage(names=names, coverage=cov, cut=cut_flags(stack, faces), touches_fov=fov_flags(stack, box),
                           voxels=stack.reshape(len(names), -1).sum(axis=1).astype(np.int64),
                           mask_hash=seg.hash(), groups_hash=groups_hash(groups, lesions),
                           source=str(seg.source))  # fmt: skip


def _volume_name(path: str | Path) -> str:
    return Path(path).name


def find_mask(masks: str | Path, key: str, volume_path: str | Path) -> Path | None:
    """Where the segmentation of a scan is: `masks` a folder (``<volume file name>``, ``<key>.nii.gz``/``.nii``,
    or a per-class folder ``<key>/``) or "auto" (the nearest ``masks/<volume file name>`` in a folder above the
    volume, as the synthetic cohort writes it). None when there is none."""
    name = _volume_name(volume_path)
    if str(masks) == MASKS_AUTO:
        for parent in Path(volume_path).resolve().parents:
            cand = parent / MASKS_FOLDER / name
            if cand.exists():
                return cand
        return None
    root = Path(masks)
    if not root.is_dir():
        raise MaskNotFound(f"{root}: masks folder not found")
    for cand in (root / name, *(root / f"{key}{ext}" for ext in _NIFTI), root / key):
        if cand.exists():
            return cand
    return None





def spatial_tokens_of(spatial_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(Sh, Sw, T) of a record's spatial array (Hg, Wg, Dg, Sh, Sw, T, E)."""
    return tuple(int(v) for v in spatial_shape[3:6])


def coverage_is_current(cov: AnatomyCoverage | None, mask_hash: str, g_hash: str, names: list[str]) -> bool:
    return cov is not None and cov.mask_hash == mask_hash and cov.groups_hash == g_hash and list(cov.names) == names


def describe(cov: AnatomyCoverage) -> dict[str, Any]:
    """A JSON-able summary (per anatomy: voxels, tokens touched, cut, valid)."""
    a = len(cov.names)
    touched = (cov.coverage.reshape(-1, a) > 0).sum(axis=0)
    fov = cov.touches_fov if cov.touches_fov is not None else np.zeros(a, bool)
    return {n: {"voxels": int(cov.voxels[i]), "tokens": int(touched[i]), "cut": bool(cov.cut[i]),
                "touches_fov": bool(fov[i]), "valid": bool(cov.valid[i])} for i, n in enumerate(cov.names)}


class MaskPlan:
    """What `extract_features(..., masks=...)` does per scan: find its segmentation, and write (or refresh) the
    anatomy sidecar when it is missing or was made from another mask or grouping."""

    def __init__(self, store: Any, masks: str | Path, groups: AnatomyGroups | None = None, lesions: bool = True):
        from ..data.anatomy import load_anatomy_groups

        if not store.spatial:
            raise RadfinderError(f"{store.root}: anatomy coverage needs spatial tokens; make the cache with "
                                 "spatial=True (--spatial) from an encoder that has them (light3d, e.g. "
                                 "pretrained-synthetic)")  # fmt: skip
        if str(masks) != MASKS_AUTO and not Path(masks).is_dir():
            raise MaskNotFound(f"{masks}: masks folder not found (give a folder or 'auto')")
        self.store = store
        self.masks = masks
        self.groups = groups or load_anatomy_groups()
        self.lesions = lesions
        self.g_hash = groups_hash(self.groups, lesions)

    def segmentation(self, item: Any) -> Segmentation | None:
        path = find_mask(self.masks, item.key, item.path)
        return None if path is None else read_segmentation(path, self.groups)

    def _write(self, item: Any, seg: Segmentation, spatial_shape, meta: dict, summary: Any) -> None:
        shape, affine = meta.get("source_shape"), meta.get("source_affine")
        if shape is None or affine is None:  # an entry from before source geometry was recorded: ask the volume
            from ..io import load_volume

            vol = load_volume(item.path, series=item.series, **dict(item.load_opts))
            shape, affine = vol.shape, vol.affine
        cov = anatomy_coverage(seg, self.groups, self.store.spec, spatial_tokens_of(spatial_shape),
                               image_shape=tuple(shape), image_affine=np.asarray(affine, np.float64),
                               lesions=self.lesions)  # fmt: skip
        cov.validate(item.key, spatial_shape)
        self.store.write_anatomy(item.key, cov)
        summary.anatomy_written.append(item.key)

    def compute(self, item: Any, record: Any, summary: Any) -> None:
        """For a scan whose features were just computed (`record`, not yet written)."""
        seg = self.segmentation(item)
        if seg is None:
            summary.no_mask.append(item.key)
            self.store.anatomy_path_of(item.key).unlink(missing_ok=True)
            return
        self._write(item, seg, record.spatial.shape, record.meta, summary)

    def refresh(self, item: Any, summary: Any) -> None:
        """For a scan whose features exist: recompute its sidecar when the mask or the grouping changed."""
        seg = self.segmentation(item)
        if seg is None:
            summary.no_mask.append(item.key)
            self.store.anatomy_path_of(item.key).unlink(missing_ok=True)
            return
        if coverage_is_current(self.store.read_anatomy(item.key), seg.hash(), self.g_hash, self.groups.names):
            return
        rec = self.store.read(item.key)
        self._write(item, seg, rec.spatial.shape, rec.meta, summary)
