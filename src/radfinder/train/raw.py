"""Raw-volume training: preprocess, random-crop to whole windows, flip, and run the frozen window encoder.

This is the augmented alternative to the frozen-feature cache (method notes 1.3: random crop to a multiple of the
window, e.g. 3 x 3 x 4 windows, and random flips of each axis with p = 0.5). It re-encodes every scan every
time, so it is far slower than cached features; use it when augmentation matters more than speed.
Crops start at whole depth cells along D so snippet targets stay on the cell grid; a target outside the crop is
dropped for that step. A flip of the left-right axis mirrors the patient: the report and snippets paired with that
sample get their side words swapped (`radfinder.text.laterality`), so "left" still names the side it shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..data.records import StudyRecord
from ..features.store import FeatureRecord, state_dict_hash
from .batches import DepthMap
from .config import AugmentSection
from .data import AUGMENT_STREAM, TrainSource, sample_rng


def random_crop_flip(
    image: np.ndarray, window: tuple[int, int, int], depth_cell: int, crop_windows: tuple[int, int, int],
    flip_prob: float, rng: np.random.Generator,
) -> tuple[np.ndarray, int, tuple[bool, bool, bool]]:
    """Crop `image` (a whole number of windows per axis) to at most `crop_windows` windows and flip axes.

    Returns (crop, depth offset in voxels, flips). H and W offsets are free; the D offset is a multiple of
    `depth_cell`.
    """
    starts, sizes = [], []
    for axis in range(3):
        n = image.shape[axis]
        size = min(crop_windows[axis], n // window[axis]) * window[axis]
        step = depth_cell if axis == 2 else 1
        slots = (n - size) // step
        starts.append(int(rng.integers(0, slots + 1)) * step)
        sizes.append(size)
    crop = image[tuple(slice(s, s + z) for s, z in zip(starts, sizes, strict=True))]
    flips = tuple(bool(rng.random() < flip_prob) for _ in range(3))
    axes = [a for a in range(3) if flips[a]]
    if axes:
        crop = np.flip(crop, axis=axes)
    return np.ascontiguousarray(crop), starts[2], flips  # type: ignore[return-value]


def to_windows(image: np.ndarray, window: tuple[int, int, int]) -> np.ndarray:
    """(H, W, D) -> (N, 1, wh, ww, wd), H slowest and D fastest (the feature cache's window order)."""
    (wh, ww, wd) = window
    hg, wg, dg = (s // w for s, w in zip(image.shape, window, strict=True))
    x = image.reshape(hg, wh, wg, ww, dg, wd).transpose(0, 2, 4, 1, 3, 5)
    return np.ascontiguousarray(x).reshape(hg * wg * dg, 1, wh, ww, wd)


class RawFeatures:
    """FeatureProvider that encodes augmented crops with the model's frozen window encoder."""

    def __init__(self, sources: Sequence[TrainSource], model, augment: AugmentSection, seed: int,
                 device: torch.device, autocast: torch.dtype | None):
        self.sources = sources
        self.encoder = model.backbone_image
        self.spec = model.preprocess_spec
        self.augment = augment
        self.seed = seed
        self.device = device
        self.autocast = autocast
        self.window = tuple(self.spec.window)
        if tuple(self.encoder.window_size) != self.window:
            from ..errors import ConfigError

            raise ConfigError(f"preprocessing windows {self.window} differ from the window encoder's "
                              f"{tuple(self.encoder.window_size)}")
        self.depth_cell = self.window[2] // self.spec.depth_tokens_per_window
        # the image axis that runs left-right: flipping it mirrors the patient, so paired text swaps its sides
        self.lr_axis = next(i for i, c in enumerate(self.spec.orientation.upper()) if c in "LR")
        self.cache = None
        if augment.preprocessed_cache:
            from ..preprocess.cache import PreprocessedCache

            self.cache = PreprocessedCache(augment.preprocessed_cache, self.spec)

    def identity(self) -> list[dict]:
        ident = {"spec_hash": self.spec.hash(), "backbone_hash": state_dict_hash(self.encoder), "source": "raw"}
        return [ident for _ in self.sources]

    def _preprocessed(self, record: StudyRecord):
        if self.cache is not None:
            return self.cache.get_or_compute(record.path, record.series)
        from ..io import load_volume
        from ..preprocess import apply_spec

        return apply_spec(load_volume(record.path, series=record.series), self.spec)

    @torch.no_grad()
    def get(self, source: int, record: StudyRecord, sample_index: int) -> tuple[FeatureRecord, DepthMap]:
        pre = self._preprocessed(record)
        rng = sample_rng(self.seed, AUGMENT_STREAM, sample_index)
        crop, d0, flips = random_crop_flip(np.asarray(pre.image, dtype=np.float32), self.window, self.depth_cell,
                                           tuple(self.augment.crop_windows), self.augment.flip_prob, rng)
        windows = to_windows(crop, self.window)
        dtype = next(self.encoder.parameters()).dtype
        parts = []
        for start in range(0, len(windows), self.augment.encoder_batch):
            x = torch.from_numpy(windows[start : start + self.augment.encoder_batch]).to(self.device, dtype=dtype)
            ctx = torch.autocast("cuda", dtype=self.autocast) if self.autocast else torch.autocast("cpu",
                                                                                                  enabled=False)
            with ctx:
                parts.append(self.encoder(x).to(torch.float32))
        cls = torch.cat([p.cls for p in parts]).cpu().numpy()
        avg = torch.cat([p.patch_average for p in parts]).cpu().numpy()
        axis2 = torch.cat([p.axis2 for p in parts]).cpu().numpy()
        grid = tuple(s // w for s, w in zip(crop.shape, self.window, strict=True))
        e = cls.shape[-1]
        affine = np.asarray(pre.affine, dtype=np.float64).copy()
        fr = FeatureRecord(key=record.key, cls=cls.reshape(*grid, e), patch_average=avg.reshape(*grid, e),
                           axis2=axis2.reshape(*grid, axis2.shape[1], e), affine=affine,
                           meta={"crop_depth_offset": d0, "flips": list(flips),
                                 "mirrored_lr": bool(flips[self.lr_axis])})
        n_cells = fr.n_depth_cells
        shift = d0 // self.depth_cell

        def depth_map(cell: int) -> int | None:
            c = cell - shift
            if not 0 <= c < n_cells:
                return None
            return n_cells - 1 - c if flips[2] else c

        return fr, depth_map
