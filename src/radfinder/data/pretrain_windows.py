"""Windows and dense mask targets for window-encoder pre-training, cached once.

Input: pairs of a CT volume and its segmentation in TotalSegmentator's multilabel format (real TotalSegmentator
output, or the masks `radfinder synth` writes beside every volume). Both go through the one preprocessing
contract (`apply_spec` for the image, `apply_spec_labels` for the mask: same grid, nearest neighbour), the image
is cut into windows, and every window gets the fraction of each target class in every cell of the encoder's
output map (e.g. 8 x 8 x 8 cells of 16 x 16 x 4 voxels for a 128 x 128 x 32 window). Windows with no body in
them (all air or padding) are left out.

Layout of the cache folder (`WindowCache`), resumable: one part per volume, written atomically.
  cache.json                  spec, classes, map size: what every part was made with
  parts/<key>.windows.npy     (n, 1, wh, ww, wd) float16 windows
  parts/<key>.targets.npy     (n, K, h, w, d) float16 class fractions per output cell
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import RadfinderError
from ..io.load import load_volume
from ..preprocess.apply import apply_spec, apply_spec_labels
from ..preprocess.spec import PreprocessSpec
from ..progress import progress
from .manifest import load_manifest

# A window counts as empty when no voxel rises above this (0 = -1000 HU or padding in the default spec).
BODY_THRESHOLD = 0.05


@dataclass(frozen=True)
class VolumeMaskPair:
    key: str
    image: str
    mask: str


def pretrain_pairs(source: str | Path) -> list[VolumeMaskPair]:
    """Volume/mask pairs from a synthetic cohort folder (its truth.jsonl) or a manifest CSV/JSONL with a `mask`
    column beside `volume` (paths relative to the manifest's folder)."""
    src = Path(source)
    if (src / "truth.jsonl").is_file():
        pairs = []
        for line in (src / "truth.jsonl").read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            for v in json.loads(line)["volumes"]:
                if "mask" not in v:
                    raise RadfinderError(f"{src / 'truth.jsonl'}: volume {v['name']} has no mask (an older cohort?)")
                key = v["name"].removesuffix(".nii.gz")
                pairs.append(VolumeMaskPair(key, str(src / v["path"]), str(src / v["mask"])))
        return pairs
    if src.is_file():
        pairs = []
        for r in load_manifest(src):
            mask = r.extra.get("mask")
            if not mask:
                raise RadfinderError(f"{src}: row {r.key} has no `mask` column (a segmentation per volume is needed)")
            mpath = Path(mask) if Path(mask).is_absolute() else src.parent / mask
            pairs.append(VolumeMaskPair(r.key, r.path, str(mpath)))
        return pairs
    raise RadfinderError(f"{src}: neither a synthetic cohort (truth.jsonl) nor a manifest file")


def cell_fractions(labels: np.ndarray, map_size: tuple[int, int, int], lut: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, h, w, d) fraction of each target class in each cell of a window's label map (wh, ww, wd).

    lut maps a label id (0-255) to its target index, or to n_classes for ids that are not targets."""
    wh, ww, wd = labels.shape
    h, w, d = map_size
    bh, bw, bd = wh // h, ww // w, wd // d
    cls = lut[labels]  # (wh, ww, wd) target index per voxel
    cell = (np.arange(wh)[:, None, None] // bh * w + np.arange(ww)[None, :, None] // bw) * d + np.arange(wd) // bd
    counts = np.bincount((cell * (n_classes + 1) + cls).ravel(), minlength=h * w * d * (n_classes + 1))
    counts = counts.reshape(h, w, d, n_classes + 1)[..., :n_classes]
    return (counts / float(bh * bw * bd)).transpose(3, 0, 1, 2).astype(np.float16)


def class_lut(classes: Sequence[int]) -> np.ndarray:
    lut = np.full(256, len(classes), dtype=np.int64)
    for i, c in enumerate(classes):
        if not 0 < int(c) < 256:
            raise RadfinderError(f"target class ids must be 1-255, got {c}")
        lut[int(c)] = i
    return lut


def volume_windows(pair: VolumeMaskPair, spec: PreprocessSpec, classes: Sequence[int], map_size):
    """(windows (n, 1, *window) float16, targets (n, K, *map_size) float16) of the non-empty windows."""
    pre = apply_spec(load_volume(pair.image), spec)
    mask_vol = load_volume(pair.mask)
    if tuple(mask_vol.shape) != tuple(pre.source_shape):
        raise RadfinderError(f"{pair.mask}: mask shape {mask_vol.shape} differs from its image {pre.source_shape}")
    labels = apply_spec_labels(mask_vol, spec)
    win = pre.windows()
    (hg, wg, dg), (wh, ww, wd) = pre.grid, pre.window
    lab = labels.reshape(hg, wh, wg, ww, dg, wd).transpose(0, 2, 4, 1, 3, 5).reshape(-1, wh, ww, wd)
    keep = win.reshape(len(win), -1).max(axis=1) > BODY_THRESHOLD
    lut = class_lut(classes)
    targets = np.stack([cell_fractions(lab[i], map_size, lut, len(classes)) for i in np.nonzero(keep)[0]])
    return win[keep].astype(np.float16), targets


class WindowCache:
    """The cached windows and targets of many volumes, read through memory maps (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / "cache.json"
        if not meta_path.is_file():
            raise RadfinderError(f"{self.root}: not a window cache (no cache.json)")
        self.meta = json.loads(meta_path.read_text())
        self.keys = [k for k in self.meta["keys"] if (self.root / "parts" / f"{k}.targets.npy").is_file()]
        self._windows = [np.load(self._part(k, "windows"), mmap_mode="r") for k in self.keys]
        self._targets = [np.load(self._part(k, "targets"), mmap_mode="r") for k in self.keys]
        counts = np.array([len(t) for t in self._targets], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])

    def _part(self, key: str, what: str) -> Path:
        return self.root / "parts" / f"{key}.{what}.npy"

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def classes(self) -> list[int]:
        return list(self.meta["classes"])

    def batch(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(windows float32, targets float32) of global window indices."""
        idx = np.asarray(indices, dtype=np.int64)
        part = np.searchsorted(self.offsets, idx, side="right") - 1
        local = idx - self.offsets[part]
        win = np.stack([self._windows[p][i] for p, i in zip(part, local, strict=True)]).astype(np.float32)
        tgt = np.stack([self._targets[p][i] for p, i in zip(part, local, strict=True)]).astype(np.float32)
        return win, tgt


def build_window_cache(
    pairs: Sequence[VolumeMaskPair],
    spec: PreprocessSpec,
    classes: Sequence[int],
    map_size: tuple[int, int, int],
    out: str | Path,
    *,
    shard: tuple[int, int] = (0, 1),
    show_progress: bool = True,
) -> WindowCache | None:
    """Fill `out` with the windows and targets of `pairs` (this process's shard of them); parts that exist are
    kept, so a killed build resumes. Returns the cache (None on ranks other than 0 of a sharded build, which
    only write their parts)."""
    out = Path(out)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    meta = {"spec": json.loads(spec.canonical_json()), "spec_hash": spec.hash(), "classes": [int(c) for c in classes],
            "map_size": list(map_size), "keys": [p.key for p in pairs]}  # fmt: skip
    meta_path = out / "cache.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        same = {k: old.get(k) for k in ("spec_hash", "classes", "map_size")}
        if same != {k: meta[k] for k in ("spec_hash", "classes", "map_size")}:
            raise RadfinderError(f"{out} holds windows made with another spec, classes or map size; use a new folder")
    if len({p.key for p in pairs}) != len(pairs):
        raise RadfinderError("volume keys must be unique")
    rank, world = shard
    if rank == 0:
        tmp = meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
        os.replace(tmp, meta_path)
    mine = [p for i, p in enumerate(sorted(pairs, key=lambda p: p.key)) if i % world == rank]
    todo = [p for p in mine if not (out / "parts" / f"{p.key}.targets.npy").is_file()]
    for p in progress(todo, total=len(todo), desc="windows", enabled=show_progress and rank == 0):
        win, tgt = volume_windows(p, spec, classes, map_size)
        for what, arr in (("windows", win), ("targets", tgt)):  # targets last: they mark the part complete
            final = out / "parts" / f"{p.key}.{what}.npy"
            tmp = final.with_name(final.name + f".tmp{os.getpid()}.npy")
            np.save(tmp, arr)
            os.replace(tmp, final)
    return WindowCache(out) if rank == 0 else None
