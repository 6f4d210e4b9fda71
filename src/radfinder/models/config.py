"""Model configuration: explicit sizes for every part, named presets, YAML files.

A checkpoint stores the resolved config (no preset names), so it rebuilds without this file's presets.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..config import apply_overrides, load_yaml
from ..errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WindowEncoderConfig(_Strict):
    kind: str = "vit"  # a key of radfinder.models.window_encoder.WINDOW_ENCODERS
    embed_dim: int = 1080
    depth: int = 24
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: tuple[int, int, int] = (16, 16, 4)
    window_size: tuple[int, int, int] = (128, 128, 32)
    rope_base: float = 1000.0
    init_values: float = 1.0
    # Width of the per-window features when it differs from embed_dim (non-ViT backbones); None = embed_dim.
    feature_dim: int | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # extra builder arguments for other kinds

    @model_validator(mode="after")
    def _check(self) -> WindowEncoderConfig:
        if self.kind == "vit":
            if self.embed_dim % self.num_heads or (self.embed_dim // self.num_heads) % 6:
                raise ValueError(
                    f"window encoder: head width {self.embed_dim}/{self.num_heads} must be an integer divisible by 6 "
                    "(3D RoPE splits it into 3 axes x sin/cos pairs)"
                )
            if any(w % p for w, p in zip(self.window_size, self.patch_size, strict=True)):
                raise ValueError(f"window {self.window_size} is not a multiple of patch {self.patch_size}")
        return self

    @property
    def resolved_feature_dim(self) -> int:
        return self.feature_dim or self.embed_dim


class CombinerConfig(_Strict):
    embed_dim: int = 1080
    depth: int = 4
    num_heads: int = 12
    mlp_ratio: float = 4.0
    rope_base: float = 100.0
    init_values: float = 1.0
    axis_patch_proj: bool = True
    axis_input: Literal["axisproj", "clsinput"] = "axisproj"
    rope_mode: Literal["physical", "regular"] = "physical"

    @model_validator(mode="after")
    def _check(self) -> CombinerConfig:
        if self.embed_dim % self.num_heads or (self.embed_dim // self.num_heads) % 6:
            raise ValueError(f"combiner: head width {self.embed_dim}/{self.num_heads} must be divisible by 6")
        if self.axis_input == "axisproj" and not self.axis_patch_proj:
            raise ValueError("combiner.axis_input 'axisproj' needs axis_patch_proj: true")
        return self


class HeadConfig(_Strict):
    hidden_dim: int = 2048
    bottleneck_dim: int = 256


class LoraConfig(_Strict):
    r: int = 16
    alpha: float = 64.0
    dropout: float = 0.05
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


class TextConfig(_Strict):
    # qwen3: built from hf_config (Qwen3-Embedding-0.6B sizes + overrides); minilm: the bundled MiniLM;
    # hf: a local Hugging Face directory (`path`).
    source: Literal["qwen3", "minilm", "hf"] = "minilm"
    path: str | None = None
    hf_config: dict[str, Any] | None = None
    hidden_size: int = 384
    pooling: Literal["last", "mean", "cls"] = "mean"
    lora: LoraConfig | None = None
    max_length: int = 512
    tokenizer: str | None = None  # local tokenizer directory; default: `path` (or the MiniLM directory)


class AnatomyHeadConfig(_Strict):
    """fVLM's anatomy head (`radfinder.models.anatomy_head`): one learnable query per anatomy over the frozen
    spatial tokens inside its mask, a projection per anatomy into the shared space (`projection_dim`)."""

    # The anatomies in order; each must be an anatomy of the feature cache's groups YAML (fVLM's release: four).
    names: list[str] = Field(default_factory=lambda: ["lung", "heart", "esophagus", "aorta"])
    dim: int = Field(128, ge=1)  # attention width
    num_heads: int = Field(4, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    coverage_bias: bool = True  # add log(coverage) to the attention logits
    temperature_init: float = 0.07  # fVLM's learnable temperature (clamped to [0.001, 0.5])
    # Leave anatomies cut by the preprocessing crop out of the training loss (fVLM drops organs its random crop
    # cuts); off keeps every anatomy that has a token. Evaluation scores cut anatomies either way (as fVLM does).
    exclude_cut: bool = True
    # Encode per-anatomy texts without fVLM's "{Anatomy} shows no significant abnormalities." prefix (fVLM does).
    strip_template: bool = True
    # Text side of the anatomy embeddings: "shared" = the model's report head (projection_text, the space SigLIP
    # also uses); "linear" = fVLM's own text projection, one Linear(text hidden -> projection_dim) for anatomy texts
    # and the zero-shot prompts.
    text_head: Literal["shared", "linear"] = "shared"
    # How a per-anatomy text becomes one text-tower feature: "text" = the whole text in one pass (fVLM); "sentences"
    # = each sentence on its own, the features averaged (a short prompt such as "Not Emphysema." is then encoded in
    # the same regime as the report sentences it is compared with; a frozen tower encodes each sentence once).
    text_pooling: Literal["text", "sentences"] = "text"

    @model_validator(mode="after")
    def _check(self) -> AnatomyHeadConfig:
        if not self.names or len(set(self.names)) != len(self.names):
            raise ValueError("anatomy.names must be a non-empty list of distinct anatomies")
        if self.dim % self.num_heads:
            raise ValueError(f"anatomy.dim {self.dim} must be divisible by anatomy.num_heads {self.num_heads}")
        if not 0.001 <= self.temperature_init <= 0.5:
            raise ValueError("anatomy.temperature_init must lie in fVLM's clamp range [0.001, 0.5]")
        return self


class RadFinderConfig(_Strict):
    name: str = "custom"
    window_encoder: WindowEncoderConfig = Field(default_factory=WindowEncoderConfig)
    combiner: CombinerConfig = Field(default_factory=CombinerConfig)
    heads: HeadConfig = Field(default_factory=HeadConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    projection_dim: int = 512
    # Separate heads for the disease/depth-cell image embeddings and for localization snippets (the release has
    # both); without them the retrieval heads serve all purposes.
    copy_image_head: bool = True
    copy_text_head: bool = True
    t_init: float = math.log(10.0)
    b_init: float = -10.0
    localization_sigma: float = 2.0
    localization_tau: float = 0.1
    # fVLM's anatomy head and temperature (None: the model has none; part of the model only when set)
    anatomy: AnatomyHeadConfig | None = None


def _vitl() -> RadFinderConfig:
    return RadFinderConfig(
        name="radfinder-vitl",
        window_encoder=WindowEncoderConfig(),
        combiner=CombinerConfig(),
        heads=HeadConfig(),
        text=TextConfig(
            source="qwen3", hidden_size=1024, pooling="last", lora=LoraConfig(), max_length=1024
        ),
        projection_dim=512,
    )


def _tiny() -> RadFinderConfig:
    # CPU-sized: head widths 18 (window, 4 heads) and 36 (combiner, 2 heads) keep RoPE's divisibility by 6.
    return RadFinderConfig(
        name="tiny",
        window_encoder=WindowEncoderConfig(embed_dim=72, depth=2, num_heads=4),
        combiner=CombinerConfig(embed_dim=72, depth=2, num_heads=2),
        heads=HeadConfig(hidden_dim=96, bottleneck_dim=32),
        text=TextConfig(source="minilm", hidden_size=384, pooling="mean"),
        projection_dim=64,
    )


def _small() -> RadFinderConfig:
    return RadFinderConfig(
        name="small",
        window_encoder=WindowEncoderConfig(embed_dim=384, depth=6, num_heads=4),
        combiner=CombinerConfig(embed_dim=384, depth=2, num_heads=4),
        heads=HeadConfig(hidden_dim=512, bottleneck_dim=128),
        text=TextConfig(source="minilm", hidden_size=384, pooling="mean", lora=LoraConfig(r=8, alpha=16.0,
                        targets=["query", "key", "value"])),
        projection_dim=256,
    )


PRESETS = {"radfinder-vitl": _vitl, "tiny": _tiny, "small": _small}


def resolve_model_config(
    spec: str | Path | RadFinderConfig | dict | None, overrides: list[str] | tuple[str, ...] = ()
) -> RadFinderConfig:
    """A preset name, a YAML file, a dict or a config (None = radfinder-vitl); `a.b=c` overrides applied on top."""
    if isinstance(spec, RadFinderConfig):
        data = spec.model_dump()
        source = spec.name
    elif spec is None or str(spec) in PRESETS:
        name = "radfinder-vitl" if spec is None else str(spec)
        data, source = PRESETS[name]().model_dump(), name
    elif isinstance(spec, dict):
        data, source = spec, "dict"
    else:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"unknown model config {str(spec)!r}: not a preset ({', '.join(PRESETS)}) nor a file")
        data, source = load_yaml(path), str(path)
        base = data.pop("preset", None)
        if base is not None:
            if base not in PRESETS:
                raise ConfigError(f"{path}: unknown preset {base!r}")
            data = _deep_merge(PRESETS[base]().model_dump(), data)
    data = apply_overrides(data, overrides)
    try:
        return RadFinderConfig.model_validate(data)
    except Exception as exc:
        raise ConfigError(f"invalid model config ({source}):\n{exc}") from exc


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
