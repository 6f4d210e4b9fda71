"""`PreprocessSpec`: the one preprocessing contract.

Training, evaluation, feature extraction and inference all apply the same spec, it is saved inside every
checkpoint and feature cache, and its hash is part of every cache key, so a change of any field invalidates
what was computed with the old one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import ConfigError

SPEC_VERSION = 1


class PreprocessSpec(BaseModel):
    """Orientation -> HU window -> resample -> crop/pad -> windows, with every choice explicit.

    The defaults are RadFinder's: RAS, 0.75 x 0.75 x 3 mm, HU [-1000, 1000] -> [0, 1] with clipping applied
    before trilinear resampling, float16 storage, 128 x 128 x 32-voxel windows, largest-multiple centre crop.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "radfinder"
    version: int = SPEC_VERSION
    orientation: str = "RAS"
    spacing: tuple[float, float, float] = (0.75, 0.75, 3.0)
    hu_window: tuple[float, float] = (-1000.0, 1000.0)
    out_range: tuple[float, float] = (0.0, 1.0)
    clip: bool = True
    # "before": window/clip HU, then resample (the official order); "after": resample HU, then window.
    intensity_order: Literal["before", "after"] = "before"
    interpolation: Literal["linear", "nearest"] = "linear"
    window: tuple[int, int, int] = (128, 128, 32)
    crop: Literal["largest_multiple_center", "none"] = "largest_multiple_center"
    pad_value: float = 0.0
    dtype: Literal["float16", "float32"] = "float16"
    # Depth tokens per window along the last axis (8 per 32-slice window: one per 12 mm at 3 mm slices).
    depth_tokens_per_window: int = Field(default=8, ge=1)

    @field_validator("orientation")
    @classmethod
    def _check_orientation(cls, v: str) -> str:
        v = v.upper()
        axes = {"R": "x", "L": "x", "A": "y", "P": "y", "S": "z", "I": "z"}
        if len(v) != 3 or any(c not in axes for c in v) or len({axes[c] for c in v}) != 3:
            raise ValueError(f"orientation must name each of x (R/L), y (A/P), z (S/I) once, got {v!r}")
        return v

    @model_validator(mode="after")
    def _check_values(self) -> PreprocessSpec:
        if any(s <= 0 for s in self.spacing):
            raise ValueError(f"spacing must be positive, got {self.spacing}")
        if self.hu_window[1] <= self.hu_window[0]:
            raise ValueError(f"hu_window must be increasing, got {self.hu_window}")
        if any(w <= 0 for w in self.window):
            raise ValueError(f"window must be positive, got {self.window}")
        if self.window[2] % self.depth_tokens_per_window:
            raise ValueError("window depth must be a multiple of depth_tokens_per_window")
        return self

    @property
    def depth_cell_mm(self) -> float:
        """Thickness of one depth cell (one depth token) in mm: 12 mm for the RadFinder spec."""
        return self.spacing[2] * self.window[2] / self.depth_tokens_per_window

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def hash(self) -> str:
        """Stable 16-hex-digit content hash; independent of field order, process and platform."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    def __hash__(self) -> int:
        return int(self.hash(), 16)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PreprocessSpec:
        return cls.model_validate_json(Path(path).read_text())


PRESETS: dict[str, PreprocessSpec] = {
    "radfinder": PreprocessSpec(),
    # The built-in synthetic cohort is rendered at about 2 mm in-plane: resampling it to 0.75 mm would only
    # interpolate, so its spec keeps 2 x 2 x 3 mm (12 mm depth cells still) and pads instead of cropping.
    "demo": PreprocessSpec(name="demo", spacing=(2.0, 2.0, 3.0), crop="none"),
}


def resolve_spec(spec: str | Path | PreprocessSpec | None) -> PreprocessSpec:
    """A preset name, a YAML/JSON file, or a spec; None means the RadFinder default."""
    if spec is None:
        return PRESETS["radfinder"]
    if isinstance(spec, PreprocessSpec):
        return spec
    if str(spec) in PRESETS:
        return PRESETS[str(spec)]
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"unknown preprocessing spec {str(spec)!r}: not a preset ({', '.join(PRESETS)}) nor a file")
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    try:
        return PreprocessSpec.model_validate(data)
    except Exception as exc:  # pydantic ValidationError, with the file named
        raise ConfigError(f"{path}: invalid preprocessing spec:\n{exc}") from exc
