"""`PretrainConfig`: window-encoder pre-training (`radfinder pretrain-encoder`), typed and YAML-loadable.

`configs/pretrain/synthetic.yaml` is the run that made the shipped `pretrained-synthetic` encoder.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..data.synth.segmentation import LESION_CLASSES, ORGAN_CLASSES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CohortSection(_Strict):
    """The synthetic pre-training cohort, rendered into `<out>/cohort` when `data.source` is not set. Its stream
    ("pretrain") has its own salt and id prefix: no demo or evaluation seed can regenerate its phantoms."""

    studies: int = Field(600, ge=1)
    seed: int = 0
    res: Literal["demo", "full"] = "demo"
    workers: int | None = None


class PretrainDataSection(_Strict):
    # A synthetic cohort folder (truth.jsonl with masks) or a manifest CSV/JSONL with `volume` and `mask` columns
    # (real CT with TotalSegmentator output); None: render `cohort` below.
    source: str | None = None
    cohort: CohortSection = Field(default_factory=CohortSection)
    spec: str = "demo"  # preprocessing spec: a preset name or a YAML file (saved with the encoder)
    # Target classes: organ ids (soft fractions) and lesion ids (presence), in the masks' numbering.
    organs: list[int] = Field(default_factory=lambda: sorted(ORGAN_CLASSES))
    lesions: list[int] = Field(default_factory=lambda: sorted(LESION_CLASSES))
    windows: str | None = None  # window/target cache folder; default <out>/windows

    @model_validator(mode="after")
    def _check(self) -> PretrainDataSection:
        both = self.organs + self.lesions
        if len(set(both)) != len(both) or not both:
            raise ValueError("data.organs and data.lesions must be non-empty and share no class id")
        return self


class EncoderSection(_Strict):
    kind: Literal["light3d"] = "light3d"
    # Start from an earlier pre-training's encoder (a `<run>/encoder` folder or a shipped name): a continued
    # pre-training; the architecture fields below must match it.
    init: str | None = None
    widths: tuple[int, int, int] = (32, 64, 128)
    blocks: tuple[int, int, int] = (0, 2, 3)
    feature_dim: int = Field(192, ge=8)
    spatial_grid: tuple[int, int] = (4, 4)


class PretrainOptim(_Strict):
    lr: float = Field(2e-3, gt=0)
    min_lr: float = Field(2e-5, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(100, ge=0)
    grad_clip: float | None = 1.0
    lesion_pos_weight: float = Field(5.0, gt=0)


class PretrainSchedule(_Strict):
    epochs: float = Field(4.0, gt=0)
    max_steps: int | None = Field(None, ge=1)  # stops early (the LR schedule still spans `epochs`)
    batch: int = Field(16, ge=1)  # windows per process and step


class PretrainCheckpoint(_Strict):
    every_steps: int = Field(100, ge=1)
    keep_last: int = Field(2, ge=1)


class PretrainLogging(_Strict):
    progress: bool = True
    log_every: int = Field(10, ge=1)


class PretrainConfig(_Strict):
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    threads: int | None = None  # CPU threads per process (None: torch's default)
    data: PretrainDataSection = Field(default_factory=PretrainDataSection)
    encoder: EncoderSection = Field(default_factory=EncoderSection)
    optim: PretrainOptim = Field(default_factory=PretrainOptim)
    schedule: PretrainSchedule = Field(default_factory=PretrainSchedule)
    checkpoint: PretrainCheckpoint = Field(default_factory=PretrainCheckpoint)
    logging: PretrainLogging = Field(default_factory=PretrainLogging)
