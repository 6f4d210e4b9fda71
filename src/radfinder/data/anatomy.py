"""Anatomy masks from organ segmentations (TotalSegmentator outputs, the synthetic cohort's masks).

A segmentation is read either from one multilabel NIfTI (TotalSegmentator ``--ml``; voxel value = class id,
0 = background) or from a folder of per-class binary files named ``<class name>.nii.gz`` (TotalSegmentator's
default output). Classes are grouped into anatomies by a YAML (`resources/anatomy/groups.yaml`: fVLM's release,
lung = the five lobes, heart = heart + left atrial appendage, esophagus, aorta). The synthetic cohort writes
``<cohort>/masks/<VolumeName>`` in the multilabel format with a ``classes.json`` beside it, which this reader takes
as the id table for that folder.

Masks reach the model's grid through the preprocessing contract: `labels_on_grid` runs the same geometry plan
(`plan_geometry`) and the same resampler as `apply_spec`, with nearest-neighbour sampling, so a mask lands voxel for
voxel on the preprocessed image. `Segmentation.hash()` is a content hash for cache keys.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import read_resource_or_file
from ..errors import ConfigError, VolumeReadError
from ..io.volume import Volume
from ..preprocess.apply import apply_spec_labels
from ..preprocess.geometry import Geometry, plan_geometry
from ..preprocess.spec import PreprocessSpec, resolve_spec
from ..text.anatomy import FINDING_ANATOMY
from ..text.findings import CTRATE_FINDINGS

CLASSES_JSON = "classes.json"
# Lesion classes of the synthetic cohort ("lesion: <CT-RATE finding>" in classes.json) override the organ id of the
# voxels they cover; those voxels still belong to the organ, so they are counted in the finding's anatomy
# (`FINDING_ANATOMY`). A pleural effusion lies outside the lung lobes and is not added to the lung.
LESIONS_OUTSIDE_ORGAN = frozenset({"Pleural effusion"})
_LESION_NAME = re.compile(r"^lesion\s*[:_\- ]\s*(.+)$", re.IGNORECASE)
_FINDING_KEYS = {f.lower(): f for f in CTRATE_FINDINGS}


def lesion_finding(class_name: str) -> str | None:
    """The CT-RATE finding of a lesion class name ("lesion: Lung nodule", "lesion_lung_nodule"), else None."""
    m = _LESION_NAME.match(class_name.strip())
    return _FINDING_KEYS.get(m.group(1).replace("_", " ").strip().lower()) if m else None


_NIFTI = (".nii.gz", ".nii")


@dataclass(frozen=True)
class AnatomyGroups:
    """Class-name -> id table and anatomy -> member classes (names or ids), in the YAML's order."""

    classes: dict[str, int]
    anatomies: dict[str, tuple[str | int, ...]]

    @property
    def names(self) -> list[str]:
        return list(self.anatomies)

    def ids_of(self, anatomy: str, names: dict[int, str]) -> list[int]:
        """Class ids of `anatomy`'s members, given the id -> name table of one segmentation."""
        table = dict(self.classes)
        table.update({n: i for i, n in names.items()})
        out = []
        for m in self.anatomies[anatomy]:
            if isinstance(m, int):
                out.append(m)
            elif m in table:
                out.append(int(table[m]))
        return sorted(set(out))

    def member_names(self, anatomy: str) -> list[str]:
        """Class names of `anatomy`'s members (ids translated through the class table where known)."""
        inv = {i: n for n, i in self.classes.items()}
        return [m if isinstance(m, str) else inv.get(m, str(m)) for m in self.anatomies[anatomy]]


def _parse_groups(data: Any, where: str) -> AnatomyGroups:
    if not isinstance(data, dict) or not isinstance(data.get("anatomies"), dict) or not data["anatomies"]:
        raise ConfigError(f"{where}: an anatomy-groups YAML needs a non-empty 'anatomies' mapping")
    classes = data.get("classes") or {}
    if not isinstance(classes, dict):
        raise ConfigError(f"{where}: 'classes' must map class names to integer ids")
    table: dict[str, int] = {}
    for name, cid in classes.items():
        if isinstance(cid, bool) or not isinstance(cid, int) or cid <= 0:
            raise ConfigError(f"{where}: class {name!r} needs a positive integer id, got {cid!r}")
        table[str(name)] = cid
    anatomies: dict[str, tuple[str | int, ...]] = {}
    for name, members in data["anatomies"].items():
        if isinstance(members, (str, int)):
            members = [members]
        if not isinstance(members, list) or not members:
            raise ConfigError(f"{where}: anatomy {name!r} needs a non-empty list of classes")
        out: list[str | int] = []
        for m in members:
            if isinstance(m, bool) or not isinstance(m, (str, int)) or (isinstance(m, int) and m <= 0):
                raise ConfigError(f"{where}: anatomy {name!r}: member {m!r} is neither a class name nor an id > 0")
            out.append(m)
        anatomies[str(name)] = tuple(out)
    return AnatomyGroups(table, anatomies)


def load_anatomy_groups(path: str | Path | None = None) -> AnatomyGroups:
    """The built-in grouping (None) or a user YAML with the same layout; a user's `classes` extend the built-in
    TotalSegmentator table, so a user file may name classes without listing their ids."""
    import yaml

    text, where = read_resource_or_file(path, "resources/anatomy/groups.yaml", "anatomy groups")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from exc
    groups = _parse_groups(data, where)
    if path is None:
        return groups
    return AnatomyGroups({**load_anatomy_groups().classes, **groups.classes}, groups.anatomies)


@dataclass
class Segmentation:
    """A label map: `labels` (I, J, K) non-negative integers, `affine` voxel -> RAS+ mm, `names` id -> class name."""

    labels: np.ndarray
    affine: np.ndarray
    names: dict[int, str] = field(default_factory=dict)
    source: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.labels.shape)

    @property
    def voxel_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def hash(self) -> str:
        """16-hex content hash of labels, geometry and class names (independent of file name and compression)."""
        h = hashlib.sha256(b"radfinder-mask-v1\0")
        h.update(json.dumps(list(self.shape)).encode())
        h.update(np.round(np.asarray(self.affine, np.float64), 6).tobytes())
        h.update(json.dumps({str(k): v for k, v in sorted(self.names.items())}, sort_keys=True).encode())
        h.update(np.ascontiguousarray(self.labels, dtype="<u4").tobytes())
        return h.hexdigest()[:16]

    def anatomy_ids(self, groups: AnatomyGroups, lesions: bool = True) -> dict[str, list[int]]:
        """Class ids per anatomy: its member classes, plus (with `lesions`) the lesion classes of findings that sit
        inside it (see `LESIONS_OUTSIDE_ORGAN`)."""
        out = {a: groups.ids_of(a, self.names) for a in groups.anatomies}
        if lesions:
            for cid, name in self.names.items():
                f = lesion_finding(name)
                a = FINDING_ANATOMY.get(f) if f and f not in LESIONS_OUTSIDE_ORGAN else None
                if a in out:
                    out[a] = sorted({*out[a], cid})
        return out

    def masks(self, groups: AnatomyGroups, lesions: bool = True) -> dict[str, np.ndarray]:
        """One boolean mask per anatomy (all False where none of its classes is present)."""
        return {a: np.isin(self.labels, ids) for a, ids in self.anatomy_ids(groups, lesions).items()}


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises several types for damaged files
        raise VolumeReadError(path, f"cannot read segmentation: {exc}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise VolumeReadError(path, f"segmentation must be 3D, got shape {data.shape}")
    if data.dtype.kind == "f":
        if not np.isfinite(data).all() or not np.array_equal(data, np.round(data)):
            raise VolumeReadError(path, "segmentation holds non-integer values; expected class ids")
    elif data.dtype.kind not in "iub":
        raise VolumeReadError(path, f"segmentation voxel type {data.dtype} is not numeric")
    if data.size and data.min() < 0:
        raise VolumeReadError(path, "segmentation holds negative values; expected class ids >= 0")
    if data.size and data.max() > np.iinfo(np.uint32).max:
        raise VolumeReadError(path, "segmentation class ids exceed 32 bits")
    dtype = np.uint8 if data.size == 0 or data.max() <= 255 else np.uint16 if data.max() <= 65535 else np.uint32
    return np.asarray(data, dtype=dtype), np.asarray(img.affine, dtype=np.float64)


def _read_classes_json(path: Path) -> dict[int, str]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {int(k): str(v) for k, v in raw.items()}
    except (OSError, ValueError, AttributeError) as exc:
        raise VolumeReadError(path, f"cannot read class table: {exc}") from exc


def _class_file_name(path: Path) -> str | None:
    for ext in _NIFTI:
        if path.name.endswith(ext):
            return path.name[: -len(ext)]
    return None


def read_segmentation(path: str | Path, groups: AnatomyGroups | None = None) -> Segmentation:
    """A multilabel NIfTI, or a folder of ``<class name>.nii.gz`` binary masks.

    For a file, the id -> name table is the groups' class table, updated by a ``classes.json`` in the file's
    folder when there is one. For a folder, only the member classes of `groups` (the built-in groups when None)
    are read; each gets its id from the class table (unknown names: 1000, 1001, ...).
    """
    groups = groups or load_anatomy_groups()
    p = Path(path)
    if p.is_file():
        labels, affine = _read_nifti(p)
        names = {i: n for n, i in groups.classes.items()}
        side = p.parent / CLASSES_JSON
        if side.is_file():
            names.update(_read_classes_json(side))
        return Segmentation(labels, affine, names, str(p))
    if not p.is_dir():
        raise VolumeReadError(p, "no such segmentation file or folder")
    files = {n: f for f in sorted(p.iterdir()) if (n := _class_file_name(f)) is not None}
    if not files:
        raise VolumeReadError(p, "folder holds no per-class NIfTI masks (<class name>.nii.gz)")
    wanted = {n for a in groups.anatomies for n in groups.member_names(a)}
    chosen = [n for n in files if n in wanted]
    labels: np.ndarray | None = None
    affine: np.ndarray | None = None
    names: dict[int, str] = {}
    next_id = 1000
    for name in chosen:
        arr, aff = _read_nifti(files[name])
        if labels is None:
            labels, affine = np.zeros(arr.shape, dtype=np.uint16), aff
        elif arr.shape != labels.shape or not np.allclose(aff, affine, atol=1e-4):
            raise VolumeReadError(files[name], f"shape/affine differ from {files[chosen[0]].name}")
        cid = groups.classes.get(name)
        if cid is None:
            cid, next_id = next_id, next_id + 1
        labels[arr > 0] = cid
        names[cid] = name
    if labels is None:  # none of the wanted classes: an empty map on the grid of any file in the folder
        arr, affine = _read_nifti(next(iter(files.values())))
        labels = np.zeros(arr.shape, dtype=np.uint16)
    return Segmentation(labels, affine, names, str(p))


def anatomy_volumes(
    seg: Segmentation, groups: AnatomyGroups | None = None, lesions: bool = True
) -> dict[str, dict[str, float | int]]:
    """Per anatomy: voxel count and volume in ml (voxels x voxel volume); zero for an anatomy not present."""
    groups = groups or load_anatomy_groups()
    out: dict[str, dict[str, float | int]] = {}
    counts = np.bincount(seg.labels.ravel().astype(np.int64)) if seg.labels.size else np.zeros(1, np.int64)
    for a, all_ids in seg.anatomy_ids(groups, lesions).items():
        ids = [i for i in all_ids if i < len(counts)]
        n = int(counts[ids].sum()) if ids else 0
        out[a] = {"voxels": n, "ml": round(n * seg.voxel_ml, 3)}
    return out


def _same_grid(seg: Segmentation, shape, affine) -> bool:
    return tuple(shape) == seg.shape and np.allclose(np.asarray(affine, np.float64), seg.affine, atol=1e-4)


def _sample_world(seg: Segmentation, geom: Geometry, out: np.ndarray) -> None:
    """Nearest-neighbour sampling of `seg` at every voxel centre of the final grid; outside the mask -> 0."""
    m = np.linalg.inv(seg.affine) @ geom.affine
    n = np.array(seg.shape)
    jj, kk = np.meshgrid(np.arange(out.shape[1], dtype=np.float64), np.arange(out.shape[2], dtype=np.float64),
                         indexing="ij")  # fmt: skip
    plane = jj[..., None] * m[:3, 1] + kk[..., None] * m[:3, 2] + m[:3, 3]
    for i in range(out.shape[0]):
        idx = np.rint(plane + i * m[:3, 0]).astype(np.int64)
        ok = np.all((idx >= 0) & (idx < n), axis=-1)
        vals = np.zeros(ok.shape, dtype=out.dtype)
        vals[ok] = seg.labels[idx[ok, 0], idx[ok, 1], idx[ok, 2]]
        out[i] = vals


def labels_on_grid(
    seg: Segmentation,
    spec: str | Path | PreprocessSpec | None = None,
    *,
    image_shape: tuple[int, int, int] | None = None,
    image_affine: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The label map on the preprocessed grid of its image: (labels (H, W, D), affine voxel -> RAS+ mm).

    When the segmentation shares the image's grid (TotalSegmentator and the synthetic cohort write it so; also
    the case when no image geometry is given) this is `apply_spec`'s own plan and resampler with nearest sampling:
    reorient, resample to the spec spacing, centre crop/pad (padding = 0). Otherwise each final voxel takes the
    label of the nearest segmentation voxel in world space (0 outside the segmentation).
    """
    spec = resolve_spec(spec)
    if image_shape is not None and image_affine is not None and not _same_grid(seg, image_shape, image_affine):
        geom = plan_geometry(tuple(int(s) for s in image_shape), np.asarray(image_affine, np.float64), spec)
        out = np.zeros(geom.shape, dtype=seg.labels.dtype)
        _sample_world(seg, geom, out)
        return out, geom.affine
    out = apply_spec_labels(Volume(seg.labels, seg.affine, {"source": str(seg.source)}), spec)
    geom = plan_geometry(seg.shape, seg.affine, spec)
    return out, geom.affine


def touches_border(mask: np.ndarray) -> bool:
    """True when the mask reaches a face of its array: the anatomy is cut by the crop (fVLM excludes it)."""
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return False
    return bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any() or m[:, :, 0].any() or m[:, :, -1].any())


def anatomy_masks_on_grid(
    seg: Segmentation,
    groups: AnatomyGroups | None = None,
    spec: str | Path | PreprocessSpec | None = None,
    *,
    image_shape: tuple[int, int, int] | None = None,
    image_affine: np.ndarray | None = None,
    lesions: bool = True,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Boolean anatomy masks on the preprocessed grid (see `labels_on_grid`) and that grid's affine."""
    groups = groups or load_anatomy_groups()
    labels, affine = labels_on_grid(seg, spec, image_shape=image_shape, image_affine=image_affine)
    return {a: np.isin(labels, ids) for a, ids in seg.anatomy_ids(groups, lesions).items()}, affine
