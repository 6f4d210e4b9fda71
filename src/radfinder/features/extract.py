"""Run a frozen window encoder once over a dataset and store what training needs.

Each scan is read, preprocessed with the cache's spec, split into windows, and the windows are pushed through
the encoder in batches (all windows of all scans share batches, so small scans don't waste a GPU). Under
torchrun, or with an explicit shard, every process takes its own deterministic share of the scans; entries that
already exist are skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..errors import RadfinderError
from ..preprocess.sources import parse_shard  # noqa: F401  (re-exported: one parser for every --shard)
from ..progress import progress
from .anatomy import MaskPlan
from .prefetch import encode_windows_overlapped, prefetch
from .store import FeatureRecord, FeatureStore, check_key


class WindowEncoderLike(Protocol):
    """Anything that maps windows (N, 1, wh, ww, wd) to per-window cls (N, E), patch_average (N, E), axis2 (N, T, E)."""

    def __call__(self, windows: torch.Tensor) -> Any: ...


@dataclass(frozen=True)
class ExtractItem:
    key: str
    path: str
    series: str | None = None
    # Extra `load_volume` arguments (e.g. an NPZ's spacing); a tuple of pairs keeps the item hashable.
    load_opts: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_record(cls, record: Any) -> ExtractItem:
        """From a dataset `StudyRecord`, keeping its series choice and loader options."""
        return cls(record.key, record.path, record.series, tuple(sorted(record.load_opts.items())))


@dataclass
class ExtractSummary:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    windows: int = 0
    seconds: float = 0.0
    shard: tuple[int, int] = (0, 1)
    anatomy_written: list[str] = field(default_factory=list)  # anatomy sidecars (re)computed
    no_mask: list[str] = field(default_factory=list)  # scans without a segmentation (no anatomy data)

    def as_dict(self) -> dict[str, Any]:
        return {
            "written": len(self.written),
            "anatomy_written": len(self.anatomy_written),
            "no_mask": len(self.no_mask),
            "skipped_existing": len(self.skipped),
            "failed": self.failed,
            "windows": self.windows,
            "seconds": round(self.seconds, 3),
            "windows_per_second": round(self.windows / self.seconds, 2) if self.seconds > 0 else None,
            "shard": f"{self.shard[0]}/{self.shard[1]}",
        }


def shard_from_env() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) when not launched by torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def select_shard(items: Sequence[ExtractItem], shard: tuple[int, int]) -> list[ExtractItem]:
    """Deterministic split by sorted key, so every process agrees without talking to the others."""
    rank, world = shard
    ordered = sorted(items, key=lambda it: it.key)
    return ordered[rank::world]


def _features_to_numpy(out: Any, spatial: bool) -> tuple[np.ndarray, ...]:
    parts = [out.cls, out.patch_average, out.axis2] + ([out.spatial] if spatial else [])
    return tuple(t.detach().float().cpu().numpy() for t in parts)


@torch.no_grad()
def encode_windows(
    encoder: WindowEncoderLike, windows: np.ndarray, *, batch_size: int, device: torch.device, spatial: bool = False
) -> tuple[np.ndarray, ...]:
    """Encode (N, 1, wh, ww, wd) windows in batches; returns float32 cls, patch_average, axis2 (and spatial)."""
    parts: list[tuple[np.ndarray, ...]] = []
    autocast = device.type == "cuda"
    kw = {"spatial": True} if spatial else {}
    for start in range(0, len(windows), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(windows[start : start + batch_size])).to(device)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=autocast):
            parts.append(_features_to_numpy(encoder(batch.float(), **kw), spatial))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(parts[0])))


class DepthTokenMismatch(RadfinderError):
    """The window encoder's depth tokens per window differ from the spec's depth cells per window."""


def extract_features(
    items: Sequence[ExtractItem],
    encoder: WindowEncoderLike,
    store: FeatureStore,
    *,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    shard: tuple[int, int] | None = None,
    show_progress: bool = True,
    load_fn: Callable[[ExtractItem], Any] | None = None,
    preprocessed_fn: Callable[[ExtractItem], Any] | None = None,
    prefetch_depth: int | None = None,
    masks: str | Path | None = None,
    groups: Any = None,
) -> ExtractSummary:
    """Extract and store features for every item of this process's shard; failures are collected, not raised.

    masks: a folder of segmentations or "auto" (see `radfinder.features.anatomy.find_mask`): each scan with one also
    gets its anatomy coverage on the spatial token grid (the cache must keep spatial tokens); `groups`: the anatomy
    grouping (`load_anatomy_groups`; None = the built-in fVLM four). A scan whose stored coverage was made from
    another mask or grouping gets it recomputed (its image features are kept).

    preprocessed_fn: returns the item's `Preprocessed` volume (e.g. from a `PreprocessedCache` of the same spec),
    instead of loading and preprocessing it again. `prefetch_depth` scans are read and preprocessed in background
    threads while one is encoded (default: 1 on CUDA, 0 on CPU, where the encoder already uses every core); see
    `prefetch`."""
    from ..io import load_volume
    from ..preprocess import apply_spec

    device = torch.device(device)
    shard = shard or shard_from_env()
    mine = select_shard(items, shard)
    for it in mine:
        check_key(it.key)
    summary = ExtractSummary(shard=shard)
    t0 = time.perf_counter()
    plan = MaskPlan(store, masks, groups) if masks is not None else None

    def load(item: ExtractItem):  # in a prefetch thread when prefetch_depth > 0
        if item.key in store:
            return None
        if preprocessed_fn is not None:
            return preprocessed_fn(item)
        volume = load_fn(item) if load_fn else load_volume(item.path, series=item.series, **dict(item.load_opts))
        return apply_spec(volume, store.spec)

    depth = prefetch_depth if prefetch_depth is not None else int(device.type == "cuda")
    loaded = prefetch(mine, load, depth=depth)
    desc = f"features {shard[0]}/{shard[1]}"
    for item, pending in progress(loaded, total=len(mine), desc=desc, enabled=show_progress):
        if item.key in store:
            summary.skipped.append(item.key)
            if plan is not None:
                try:
                    plan.refresh(item, summary)
                except Exception as exc:  # a bad mask must not stop a dataset-wide job
                    summary.failed[item.key] = f"{type(exc).__name__}: {exc}"
            continue
        try:
            pre = pending.get()
            if pre.spec_hash != store.spec.hash():
                raise RadfinderError(f"{item.key}: preprocessed with spec {pre.spec_hash}, the cache's is "
                                     f"{store.spec.hash()}")  # fmt: skip
            windows = pre.windows()
            out = encode_windows_overlapped(encoder, windows, batch_size=batch_size, device=device,
                                            spatial=store.spatial)  # fmt: skip
            cls, avg, axis2 = out[:3]
            if axis2.shape[1] != store.spec.depth_tokens_per_window:
                raise DepthTokenMismatch(
                    f"the window encoder gives {axis2.shape[1]} depth tokens per window but the preprocessing spec "
                    f"of {store.root} has {store.spec.depth_tokens_per_window} depth cells per window: "
                    "use an encoder made for this spec")
            hg, wg, dg = (int(v) for v in pre.grid)
            e = cls.shape[-1]
            record = FeatureRecord(
                key=item.key,
                cls=cls.reshape(hg, wg, dg, e),
                patch_average=avg.reshape(hg, wg, dg, e),
                axis2=axis2.reshape(hg, wg, dg, axis2.shape[1], e),
                affine=np.asarray(pre.affine, dtype=np.float64),
                meta={"source": str(item.path), "series": item.series, "image_shape": list(pre.image.shape),
                      "depth_extent": list(pre.depth_extent), "source_shape": list(pre.source_shape),
                      "source_affine": np.asarray(pre.source_affine, dtype=np.float64).tolist()},
                spatial=out[3].reshape(hg, wg, dg, *out[3].shape[1:]) if store.spatial else None,
            )
            if plan is not None:  # before the features: an entry that exists is complete
                plan.compute(item, record, summary)
            store.write(record)
            summary.written.append(item.key)
            summary.windows += len(windows)
        except DepthTokenMismatch:  # the encoder does not fit the spec: every scan would fail the same way
            raise
        except Exception as exc:  # one bad scan must not stop a dataset-wide job
            summary.failed[item.key] = f"{type(exc).__name__}: {exc}"
            if os.environ.get("RADFINDER_DEBUG"):
                traceback.print_exc()
    summary.seconds = time.perf_counter() - t0
    if summary.failed:
        rank, world = shard
        name = "failures.json" if world == 1 else f"failures.rank{rank}.json"
        (store.root / name).write_text(json.dumps(summary.failed, indent=2))
    return summary


def items_from_paths(paths: Sequence[str | Path]) -> list[ExtractItem]:
    """Items keyed by file name (without .nii.gz/.nii/.nrrd/.npz) or by folder name for DICOM folders."""
    out = []
    for p in paths:
        p = Path(p)
        name = p.name
        for ext in (".nii.gz", ".nii", ".nrrd", ".npz"):
            if name.endswith(ext):
                name = name[: -len(ext)]
                break
        out.append(ExtractItem(key=name, path=str(p)))
    keys = [it.key for it in out]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise RadfinderError(f"several inputs map to the same cache key: {', '.join(dupes[:5])}")
    return out
