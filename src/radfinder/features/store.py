"""On-disk frozen-feature cache: one compressed file per scan, keyed by preprocessing spec and backbone.

The window encoder never changes during RadFinder training, so its per-window outputs are computed once and
stored here. Layout of a cache directory::

    cache.json                 spec (JSON), spec hash, backbone description and hash, feature dim, and the hub
                               repo id + commit of released weights (`weights_source`)
    <key>.rff                  zstd-compressed safetensors: cls, patch_average, axis2 (float16), grid, affine
    <key>.anat                 optional, zstd-compressed safetensors: per spatial token and anatomy, the fraction of
                               the token's voxels inside the anatomy's mask; per anatomy, cut-by-the-crop flags and
                               voxel counts; metadata: anatomy names, mask content hash, groups hash
                               (`radfinder.features.anatomy`). Keyed by (spec, mask hash, groups hash): a changed
                               mask or grouping makes extraction recompute it, the image features stay.

A cache directory belongs to exactly one (spec hash, backbone hash, weights source) triple; opening it with another
one is an error rather than a silent mix. Entries are written to a temporary name and renamed, so an interrupted run
never leaves a half-written entry, and a resumed run skips what exists.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RadfinderError
from ..preprocess.cache import atomic_write_bytes
from ..preprocess.spec import PreprocessSpec

SUFFIX = ".rff"
ANATOMY_SUFFIX = ".anat"
FORMAT_VERSION = 1
_SAFE_KEY = re.compile(r"^[A-Za-z0-9._\-]+$")


class FeatureCacheError(RadfinderError):
    """A feature cache is missing, corrupt, or belongs to another spec or backbone."""


@dataclass
class AnatomyCoverage:
    """Anatomy masks of one scan on its spatial token grid.

    names: the A anatomies; coverage (Hg, Wg, Dg, Sh, Sw, T, A) float32: the fraction of each spatial token's voxels
    inside each anatomy (same layout as `FeatureRecord.spatial` without its feature axis); cut (A,) bool: the anatomy
    reaches a face where the preprocessing crop removed data (fVLM excludes such anatomies); voxels (A,) int64: the
    anatomy's voxels on the preprocessed grid; mask_hash and groups_hash: what the arrays were computed from (the
    sidecar's cache key with the spec hash); touches_fov (A,) bool: the anatomy reaches the scanned range's edge
    (informative: in a chest CT the esophagus nearly always does).
    """

    names: list[str]
    coverage: np.ndarray
    cut: np.ndarray
    voxels: np.ndarray
    mask_hash: str
    groups_hash: str
    source: str = ""
    touches_fov: np.ndarray | None = None

    @property
    def present(self) -> np.ndarray:
        """(A,) bool: at least one spatial token intersects the anatomy."""
        a = self.coverage.shape[-1]
        return (self.coverage.reshape(-1, a) > 0).any(axis=0)

    @property
    def valid(self) -> np.ndarray:
        """(A,) bool: usable by anatomy-level pooling (present and not cut)."""
        return self.present & ~np.asarray(self.cut, dtype=bool)

    def validate(self, key: str, spatial_shape: tuple[int, ...] | None = None) -> None:
        a = len(self.names)
        if self.coverage.ndim != 7 or self.coverage.shape[-1] != a:
            raise FeatureCacheError(f"{key}: anatomy coverage shape {self.coverage.shape} is not (Hg, Wg, Dg, Sh, Sw, "
                                    f"T, {a})")  # fmt: skip
        if np.asarray(self.cut).shape != (a,) or np.asarray(self.voxels).shape != (a,):
            raise FeatureCacheError(f"{key}: anatomy cut/voxels must have one entry per anatomy ({a})")
        if spatial_shape is not None and tuple(self.coverage.shape[:6]) != tuple(spatial_shape[:6]):
            raise FeatureCacheError(f"{key}: anatomy coverage grid {self.coverage.shape[:6]} does not match the "
                                    f"spatial tokens {tuple(spatial_shape[:6])}")  # fmt: skip


@dataclass
class FeatureRecord:
    """Frozen window-encoder outputs of one scan, arranged on its window grid (Hg, Wg, Dg).

    cls, patch_average: (Hg, Wg, Dg, E); axis2: (Hg, Wg, Dg, T, E) with T depth tokens per window; spatial
    (optional, caches made with spatial tokens): (Hg, Wg, Dg, Sh, Sw, T, E), a coarse in-plane grid per depth token.
    affine: voxel index of the preprocessed (cropped/padded) image -> RAS mm, used to map depth cells back to mm.
    """

    key: str
    cls: np.ndarray
    patch_average: np.ndarray
    axis2: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    spatial: np.ndarray | None = None
    anatomy: AnatomyCoverage | None = None  # from the `<key>.anat` sidecar, when the scan has one

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.cls.shape[:3])

    @property
    def n_depth_cells(self) -> int:
        return self.grid[2] * int(self.axis2.shape[3])

    def validate(self) -> None:
        hg, wg, dg = self.grid
        e = self.cls.shape[-1]
        if self.cls.ndim != 4 or self.patch_average.shape != self.cls.shape:
            raise FeatureCacheError(f"{self.key}: cls/patch_average shapes {self.cls.shape}/{self.patch_average.shape}")
        if self.axis2.ndim != 5 or self.axis2.shape[:3] != (hg, wg, dg) or self.axis2.shape[4] != e:
            raise FeatureCacheError(f"{self.key}: axis2 shape {self.axis2.shape} does not match grid {self.grid}x{e}")
        if np.asarray(self.affine).shape != (4, 4):
            raise FeatureCacheError(f"{self.key}: affine must be 4x4")
        sp = self.spatial
        if sp is not None and (sp.ndim != 7 or sp.shape[:3] != (hg, wg, dg) or sp.shape[5:] != self.axis2.shape[3:]):
            raise FeatureCacheError(f"{self.key}: spatial shape {self.spatial.shape} does not match grid and axis2")


def state_dict_hash(module: Any) -> str:
    """Content hash of a module's parameters and buffers (names, shapes, dtypes and bytes), 16 hex digits."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def check_key(key: str) -> str:
    if not _SAFE_KEY.match(key):
        raise FeatureCacheError(f"feature-cache key {key!r} must use only letters, digits, '.', '_' and '-'")
    return key


def _pinned(hub: dict[str, Any] | None) -> str | None:
    return f"{hub['repo_id']}@{hub['commit']}" if hub else None


class FeatureStore:
    """A feature-cache directory for one preprocessing spec and one backbone."""

    def __init__(
        self, root: str | Path, spec: PreprocessSpec, backbone: dict[str, Any], feature_dim: int, spatial: bool = False
    ):
        self.root = Path(root)
        self.spec = spec
        self.spatial = bool(spatial)  # every entry carries the spatial token grid
        self.backbone = dict(backbone)
        if "hash" not in self.backbone:
            raise FeatureCacheError("backbone description needs a 'hash'")
        self.feature_dim = int(feature_dim)
        self.root.mkdir(parents=True, exist_ok=True)
        header = self._header()
        path = self.root / "cache.json"
        if path.exists():
            existing = json.loads(path.read_text())
            existing.setdefault("spatial", False)  # caches from before spatial tokens
            existing.setdefault("weights_source", None)  # caches from before hub ids: local weights
            for name in ("spec_hash", "backbone_hash", "weights_source", "feature_dim", "spatial"):
                if existing.get(name) != header[name]:
                    raise FeatureCacheError(
                        f"{self.root} holds features for {name}={existing.get(name)!r}, not {header[name]!r}; "
                        "use another directory (caches are keyed by spec, backbone and released-weights revision)"
                    )
        else:
            atomic_write_bytes(path, json.dumps(header, indent=2).encode())

    def _header(self) -> dict[str, Any]:
        return {
            "format": "radfinder-feature-cache",
            "format_version": FORMAT_VERSION,
            "spec": json.loads(self.spec.canonical_json()),
            "spec_hash": self.spec.hash(),
            "backbone": self.backbone,
            "backbone_hash": self.backbone["hash"],
            # ORG/NAME@COMMIT of released weights loaded by hub id (None: local weights)
            "weights_source": _pinned(self.backbone.get("hub")),
            "feature_dim": self.feature_dim,
            "spatial": self.spatial,
        }

    @classmethod
    def open(cls, root: str | Path) -> FeatureStore:
        """Open an existing cache, taking spec and backbone from its own header."""
        path = Path(root) / "cache.json"
        if not path.is_file():
            raise FeatureCacheError(f"{root} is not a feature cache (no cache.json)")
        header = json.loads(path.read_text())
        spec = PreprocessSpec.model_validate(header["spec"])
        if spec.hash() != header["spec_hash"]:
            raise FeatureCacheError(f"{path}: stored spec does not match its hash (edited by hand?)")
        return cls(root, spec, header["backbone"], header["feature_dim"], bool(header.get("spatial", False)))

    def path_of(self, key: str) -> Path:
        return self.root / f"{check_key(key)}{SUFFIX}"

    def __contains__(self, key: str) -> bool:
        return self.path_of(key).is_file()

    def anatomy_path_of(self, key: str) -> Path:
        return self.root / f"{check_key(key)}{ANATOMY_SUFFIX}"

    def write_anatomy(self, key: str, cov: AnatomyCoverage) -> Path:
        """Write (atomically) the anatomy sidecar of `key` (see the module doc)."""
        import zstandard
        from safetensors.numpy import save

        cov.validate(key)
        tensors = {
            "coverage": np.ascontiguousarray(cov.coverage, dtype=np.float32),
            "cut": np.ascontiguousarray(cov.cut, dtype=np.uint8),
            "voxels": np.ascontiguousarray(cov.voxels, dtype=np.int64),
        }
        if cov.touches_fov is not None:
            tensors["touches_fov"] = np.ascontiguousarray(cov.touches_fov, dtype=np.uint8)
        metadata = {"key": key, "spec_hash": self.spec.hash(), "names": json.dumps(list(cov.names)),
                    "mask_hash": cov.mask_hash, "groups_hash": cov.groups_hash, "source": cov.source}  # fmt: skip
        path = self.anatomy_path_of(key)
        atomic_write_bytes(path, zstandard.ZstdCompressor(level=3).compress(save(tensors, metadata=metadata)))
        return path

    def read_anatomy(self, key: str) -> AnatomyCoverage | None:
        """The anatomy sidecar of `key`, or None when the scan has none."""
        import zstandard
        from safetensors.numpy import load

        path = self.anatomy_path_of(key)
        if not path.is_file():
            return None
        try:
            raw = zstandard.ZstdDecompressor().decompress(path.read_bytes())
            t = load(raw)
            md = _safetensors_metadata(raw)
            names = json.loads(md["names"])
        except Exception as exc:  # corrupt compression, container or metadata
            raise FeatureCacheError(f"{path}: unreadable anatomy entry ({exc})") from exc
        if md.get("spec_hash") != self.spec.hash():
            raise FeatureCacheError(f"{path}: anatomy entry was written for another preprocessing spec")
        fov = t["touches_fov"].astype(bool) if "touches_fov" in t else None
        cov = AnatomyCoverage(names, t["coverage"], t["cut"].astype(bool), t["voxels"], md.get("mask_hash", ""),
                              md.get("groups_hash", ""), md.get("source", ""), fov)  # fmt: skip
        cov.validate(key)
        return cov

    def keys(self) -> list[str]:
        return sorted(p.name[: -len(SUFFIX)] for p in self.root.glob(f"*{SUFFIX}"))

    def __len__(self) -> int:
        return len(self.keys())

    def write(self, record: FeatureRecord) -> Path:
        import zstandard
        from safetensors.numpy import save

        record.validate()
        if record.cls.shape[-1] != self.feature_dim:
            raise FeatureCacheError(f"{record.key}: feature dim {record.cls.shape[-1]} != cache's {self.feature_dim}")
        if self.spatial and record.spatial is None:
            raise FeatureCacheError(f"{record.key}: this cache keeps spatial tokens and the record has none")
        tensors = {
            "cls": np.ascontiguousarray(record.cls, dtype=np.float16),
            "patch_average": np.ascontiguousarray(record.patch_average, dtype=np.float16),
            "axis2": np.ascontiguousarray(record.axis2, dtype=np.float16),
            "affine": np.ascontiguousarray(record.affine, dtype=np.float64),
        }
        if self.spatial:
            tensors["spatial"] = np.ascontiguousarray(record.spatial, dtype=np.float16)
        metadata = {
            "key": record.key,
            "spec_hash": self.spec.hash(),
            "backbone_hash": self.backbone["hash"],
            "meta": json.dumps(record.meta, default=str),
        }
        blob = zstandard.ZstdCompressor(level=3).compress(save(tensors, metadata=metadata))
        path = self.path_of(record.key)
        atomic_write_bytes(path, blob)
        return path

    def read(self, key: str) -> FeatureRecord:
        import zstandard
        from safetensors.numpy import load

        path = self.path_of(key)
        if not path.is_file():
            raise FeatureCacheError(f"{self.root}: no features for {key!r}")
        try:
            raw = zstandard.ZstdDecompressor().decompress(path.read_bytes())
            tensors = load(raw)
            metadata = _safetensors_metadata(raw)
        except Exception as exc:  # corrupt compression or container
            raise FeatureCacheError(f"{path}: unreadable feature entry ({exc})") from exc
        if metadata.get("spec_hash") != self.spec.hash() or metadata.get("backbone_hash") != self.backbone["hash"]:
            raise FeatureCacheError(f"{path}: entry was written for another spec or backbone")
        return FeatureRecord(
            key=key,
            cls=tensors["cls"],
            patch_average=tensors["patch_average"],
            axis2=tensors["axis2"],
            affine=tensors["affine"],
            meta=json.loads(metadata.get("meta", "{}")),
            spatial=tensors.get("spatial"),
            anatomy=self.read_anatomy(key),
        )

    def __iter__(self) -> Iterator[FeatureRecord]:
        for key in self.keys():
            yield self.read(key)


def _safetensors_metadata(raw: bytes) -> dict[str, str]:
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]).get("__metadata__", {}) or {}
