"""The neural report-generation path: a scan's volume embedding and depth-cell embeddings (RadFinder's P-d tokens)
as a prefix to a causal language model loaded with `transformers` from a directory the user supplies (e.g. a
Qwen3 checkpoint; radfinder downloads nothing), LoRA (`radfinder.models.lora`) on the LM's attention projections,
and a trainable projector from the P-d tokens to the LM's hidden size. Trained with teacher forcing on report text
from cached embeddings (`radfinder.train.prefix_lm.train_prefix_lm`), bf16 autocast on CUDA.

Checkpoints hold only what is trained (LoRA A/B, projector, token-type embeddings) as safetensors, plus
`prefix_lm.json` with the base directory's path and content hash: loading refuses another base.

**Status**: tested end to end with a tiny randomly initialised Qwen3 config (2 layers, hidden 64) and the bundled
MiniLM WordPiece tokenizer on synthetic reports (the loss falls, `generate` writes text, save/load round-trips).
No real language model is reachable here, so it has never been trained for real: nothing it writes is a result,
and the demo's report-generation table uses the offline `model` generator, not this path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from .lora import add_lora, lora_modules

CONFIG_FILE = "prefix_lm.json"
WEIGHTS_FILE = "prefix_lm.safetensors"
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


def base_content_hash(base_dir: str | Path) -> str:
    """16-hex SHA-256 over the base directory's config and weight files (names and bytes)."""
    base = Path(base_dir)
    files = sorted(p for p in base.iterdir() if p.is_file() and (p.name == "config.json" or p.suffix in
                                                                 (".safetensors", ".bin")))  # fmt: skip
    if not files:
        raise CheckpointError(f"{base}: no config.json or weight files: not a transformers model directory")
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0")
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


@dataclass
class PrefixLMConfig:
    base_dir: str
    base_hash: str
    token_dim: int
    hidden_size: int
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ATTENTION_PROJECTIONS
    max_depth_tokens: int = 64


def load_base_lm(base_dir: str | Path, dtype: torch.dtype | None = None):
    """(model, tokenizer) from a local transformers directory, offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = Path(base_dir)
    if not (base / "config.json").is_file():
        raise CheckpointError(f"{base}: no config.json: give a local transformers causal-LM directory")
    kw: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kw["dtype"] = dtype
    lm = AutoModelForCausalLM.from_pretrained(str(base), **kw)
    tok = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.sep_token
    return lm, tok


class PrefixReportLM(nn.Module):
    """A frozen causal LM with LoRA on its attention projections, conditioned on a prefix of projected scan tokens
    (one volume token, then the valid depth-cell tokens in order)."""

    def __init__(self, lm: nn.Module, tokenizer, config: PrefixLMConfig):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.lm = lm
        self.lm.requires_grad_(False)
        add_lora(self.lm, config.lora_targets, config.lora_r, config.lora_alpha)
        h = config.hidden_size
        self.projector = nn.Sequential(nn.Linear(config.token_dim, h), nn.GELU(), nn.Linear(h, h))
        self.token_type = nn.Parameter(torch.zeros(2, h))  # 0: volume token, 1: depth-cell token
        self.depth_position = nn.Parameter(torch.zeros(config.max_depth_tokens, h))

    @classmethod
    def from_base(cls, base_dir: str | Path, token_dim: int, *, lora_r: int = 8, lora_alpha: float = 16.0,
                  targets: Sequence[str] = ATTENTION_PROJECTIONS, max_depth_tokens: int = 64) -> PrefixReportLM:
        lm, tok = load_base_lm(base_dir)
        cfg = PrefixLMConfig(str(Path(base_dir).resolve()), base_content_hash(base_dir), int(token_dim),
                             int(lm.config.hidden_size), lora_r, lora_alpha, tuple(targets), max_depth_tokens)
        return cls(lm, tok, cfg)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        out = {f"projector.{k}": v for k, v in self.projector.state_dict().items()}
        out["token_type"] = self.token_type.data
        out["depth_position"] = self.depth_position.data
        for name, m in self.lm.named_modules():
            if m in set(lora_modules(self.lm)):
                out[f"lm.{name}.lora_A"] = m.lora_A.data
                out[f"lm.{name}.lora_B"] = m.lora_B.data
        return {k: v.detach().float().cpu().contiguous() for k, v in out.items()}

    def trainable_parameters(self) -> list[nn.Parameter]:
        ps = [*self.projector.parameters(), self.token_type, self.depth_position]
        return ps + [p for m in lora_modules(self.lm) for p in (m.lora_A, m.lora_B)]

    def prefix(self, volume: torch.Tensor, depth: torch.Tensor, depth_mask: torch.Tensor):
        """volume (B, P), depth (B, C, P), depth_mask (B, C) -> prefix embeddings (B, 1 + C, H) and mask."""
        c = depth.shape[1]
        if c > self.config.max_depth_tokens:
            raise ConfigError(f"{c} depth tokens, the model takes at most {self.config.max_depth_tokens}")
        dt = self.projector[0].weight.dtype
        v = self.projector(volume.to(dt))[:, None] + self.token_type[0]
        d = self.projector(depth.to(dt)) + self.token_type[1] + self.depth_position[:c]
        mask = torch.cat([torch.ones_like(depth_mask[:, :1]), depth_mask], dim=1).long()
        return torch.cat([v, d], dim=1), mask

    def _text_batch(self, texts: Sequence[str], max_tokens: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.tokenizer
        eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        ids = [tok(t, add_special_tokens=False)["input_ids"][: max_tokens - 1] + [eos] for t in texts]
        n = max(len(x) for x in ids)
        out = torch.full((len(ids), n), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), n), dtype=torch.long)
        for i, x in enumerate(ids):
            out[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        return out.to(device), mask.to(device)

    def loss(self, volume, depth, depth_mask, texts: Sequence[str], max_tokens: int = 256) -> torch.Tensor:
        """Teacher-forced next-token cross-entropy on the report tokens (the prefix and padding are not scored)."""
        dev = volume.device
        ids, tmask = self._text_batch(texts, max_tokens, dev)
        pre, pmask = self.prefix(volume, depth, depth_mask)
        emb = self.lm.get_input_embeddings()(ids)
        inputs = torch.cat([pre.to(emb.dtype), emb], dim=1)
        mask = torch.cat([pmask, tmask], dim=1)
        labels = torch.cat([torch.full_like(pmask, -100), ids.masked_fill(tmask == 0, -100)], dim=1)
        return self.lm(inputs_embeds=inputs, attention_mask=mask, labels=labels).loss

    @torch.no_grad()
    def generate(self, volume, depth, depth_mask, max_new_tokens: int = 128) -> list[str]:
        """Greedy decoding after the scan prefix (the LM's own `generate` with `inputs_embeds`)."""
        pre, pmask = self.prefix(volume, depth, depth_mask)
        tok = self.tokenizer
        eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        dt = self.lm.get_input_embeddings().weight.dtype
        out = self.lm.generate(inputs_embeds=pre.to(dt), attention_mask=pmask, max_new_tokens=max_new_tokens,
                               do_sample=False, eos_token_id=eos, pad_token_id=tok.pad_token_id)  # fmt: skip
        return [tok.decode(row, skip_special_tokens=True).strip() for row in out]

    def save(self, out_dir: str | Path) -> Path:
        from safetensors.torch import save_file

        out = Path(out_dir)
        tmp = out.with_name(out.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        save_file(self.trainable_state(), str(tmp / WEIGHTS_FILE))
        cfg = asdict(self.config)
        cfg["lora_targets"] = list(cfg["lora_targets"])
        (tmp / CONFIG_FILE).write_text(json.dumps({"format": "radfinder-prefix-lm", "version": 1, **cfg}, indent=2))
        out.mkdir(parents=True, exist_ok=True)
        for f in (WEIGHTS_FILE, CONFIG_FILE):
            (tmp / f).replace(out / f)
        tmp.rmdir()
        return out

    @classmethod
    def load(cls, ckpt_dir: str | Path, base_dir: str | Path | None = None) -> PrefixReportLM:
        """Rebuild from a checkpoint: the base LM from `base_dir` (default the recorded path), checked by hash."""
        from safetensors.torch import load_file

        ckpt = Path(ckpt_dir)
        if not (ckpt / CONFIG_FILE).is_file() or not (ckpt / WEIGHTS_FILE).is_file():
            raise CheckpointError(f"{ckpt}: not a prefix-LM checkpoint ({CONFIG_FILE} + {WEIGHTS_FILE})")
        raw = json.loads((ckpt / CONFIG_FILE).read_text())
        raw.pop("format", None)
        raw.pop("version", None)
        cfg = PrefixLMConfig(**{**raw, "lora_targets": tuple(raw["lora_targets"])})
        base = Path(base_dir or cfg.base_dir)
        have = base_content_hash(base)
        if have != cfg.base_hash:
            raise CheckpointError(f"{base}: base LM content hash {have}, the checkpoint was trained on {cfg.base_hash}")
        lm, tok = load_base_lm(base)
        model = cls(lm, tok, cfg)
        state = load_file(str(ckpt / WEIGHTS_FILE))
        model.train()  # LoRA unmerged: A and B are copied beside the base weight, merged again by eval()
        own = {f"projector.{k}": v for k, v in model.projector.state_dict().items()}
        with torch.no_grad():
            for k, v in state.items():
                if k in own:
                    own[k].copy_(v)
                elif k in ("token_type", "depth_position"):
                    getattr(model, k).copy_(v)
                else:
                    mod, _, param = k.removeprefix("lm.").rpartition(".")
                    getattr(model.lm.get_submodule(mod), param).copy_(v)
        return model.eval()


def depth_batch(volumes: Sequence[np.ndarray], depths: Sequence[np.ndarray], device="cpu"):
    """Pad per-scan (C_i, P) depth embeddings: (B, P), (B, C, P), (B, C) mask."""
    c = max(len(d) for d in depths)
    p = len(volumes[0])
    dep = np.zeros((len(depths), c, p), np.float32)
    mask = np.zeros((len(depths), c), np.int64)
    for i, d in enumerate(depths):
        dep[i, : len(d)] = d
        mask[i, : len(d)] = 1
    vol = np.stack([np.asarray(v, np.float32) for v in volumes])
    return torch.from_numpy(vol).to(device), torch.from_numpy(dep).to(device), torch.from_numpy(mask).to(device)
