"""Top-k text-tower training: the bottom layers stay frozen and their outputs are computed once per text.

With `model.text_train: top<k>` only the last k transformer layers of the text tower train. Everything below them
(embeddings and the first L - k layers) never changes, so its output for a given token sequence is a constant:
`TopLayerText` computes it once (eval mode, no graph), keeps it in memory keyed by the token ids, and every later
call runs only the top k layers, pooling and (in the caller) the projection heads. Within a call identical texts
(prompts and snippets repeat) go through the top layers once. The forward equals the tower's own full forward
(tests/test_text_topk.py holds it to float64 precision, gradients included), so a checkpoint trained this way is an
ordinary model: inference runs every layer as usual.

Supported towers: BERT-family encoders (`embeddings` + `encoder.layer`, e.g. the bundled MiniLM). The bottom layers
run in eval mode (no dropout: that is what makes them cacheable); the top layers follow the tower's train/eval mode.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..errors import ConfigError
from .text import pool_hidden

_TOP = re.compile(r"^top([1-9][0-9]*)$")


def top_layers(text_train: str) -> int | None:
    """k of a `top<k>` text_train value; None for all / lora / frozen."""
    m = _TOP.match(text_train)
    return int(m.group(1)) if m else None


def transformer_layers(backbone: nn.Module) -> nn.ModuleList:
    """The tower's stack of transformer layers (BERT family: encoder.layer; Qwen-style decoders: layers)."""
    encoder = getattr(backbone, "encoder", None)
    if encoder is not None and isinstance(getattr(encoder, "layer", None), nn.ModuleList):
        return encoder.layer
    if isinstance(getattr(backbone, "layers", None), nn.ModuleList):
        return backbone.layers
    raise ConfigError(f"cannot find the transformer layers of the text tower {type(backbone).__name__}")


def top_layer_parameters(backbone: nn.Module, k: int) -> list[nn.Parameter]:
    """Parameters of the last k transformer layers (what `text_train: top<k>` trains)."""
    layers = transformer_layers(backbone)
    if not 1 <= k <= len(layers):
        raise ConfigError(f"text_train top{k}: the text tower has {len(layers)} layers")
    return [p for layer in layers[len(layers) - k:] for p in layer.parameters()]


class TopLayerText:
    """Pooled text features from cached bottom-layer states plus a live pass through the top k layers."""

    def __init__(self, backbone: nn.Module, k: int, pooling: str):
        if not (hasattr(backbone, "embeddings") and isinstance(getattr(backbone, "encoder", None), nn.Module)):
            raise ConfigError(
                f"text_train top{k} (cached lower layers) supports BERT-family text towers (e.g. MiniLM); "
                f"{type(backbone).__name__} is not one: use all, lora or frozen")
        self.backbone = backbone
        self.layers = transformer_layers(backbone)
        if not 1 <= k <= len(self.layers):
            raise ConfigError(f"text_train top{k}: the text tower has {len(self.layers)} layers")
        self.k = k
        self.split = len(self.layers) - k
        self.pooling = pooling
        self.cache: dict[bytes, torch.Tensor] = {}  # token ids -> bottom states (n_tokens, H) of the real tokens

    def _mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor):
        """The attention mask in the form the tower's layers take (as the tower builds it in its own forward)."""
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.backbone.config, inputs_embeds=hidden,
                                         attention_mask=attention_mask)

    def _run(self, hidden: torch.Tensor, attention_mask: torch.Tensor, layers) -> torch.Tensor:
        mask = self._mask(hidden, attention_mask)
        for layer in layers:
            hidden = layer(hidden, mask)
            if isinstance(hidden, tuple):  # older transformers return (states, ...)
                hidden = hidden[0]
        return hidden

    @torch.no_grad()
    def bottom(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Embeddings + the frozen bottom layers, in eval mode without a graph: (B, L, H)."""
        modes = [(m, m.training) for m in (self.backbone.embeddings, *self.layers[: self.split])]
        for m, _ in modes:
            m.eval()
        try:
            hidden = self.backbone.embeddings(input_ids=input_ids)
            return self._run(hidden, attention_mask, self.layers[: self.split])
        finally:
            for m, was in modes:
                m.train(was)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, H) equal to pooling the tower's full forward; gradients reach the top layers."""
        real = attention_mask.bool()
        keys = [ids[m].cpu().numpy().tobytes() for ids, m in zip(input_ids, real, strict=True)]
        slot: dict[bytes, int] = {}  # key -> its row among the unique texts
        first: list[int] = []  # that text's first row in the call
        for i, key in enumerate(keys):
            if key not in slot:
                slot[key] = len(first)
                first.append(i)
        unique = [keys[i] for i in first]
        todo = [i for i in first if keys[i] not in self.cache]
        if todo:
            rows = torch.tensor(todo, device=input_ids.device)
            states = self.bottom(input_ids[rows], attention_mask[rows])
            for i, h in zip(todo, states, strict=True):
                self.cache[keys[i]] = h[real[i]].detach().clone()
        # re-batch the unique texts, right-padded: positions are already inside the cached states, and padded
        # positions are masked out of attention and pooling, so the padding length changes nothing
        lengths = [self.cache[key].shape[0] for key in unique]
        width = max(lengths)
        ref = self.cache[unique[0]]
        hidden = ref.new_zeros(len(unique), width, ref.shape[1])
        mask = attention_mask.new_zeros(len(unique), width)
        for j, (key, n) in enumerate(zip(unique, lengths, strict=True)):
            hidden[j, :n] = self.cache[key]
            mask[j, :n] = 1
        top = self._run(hidden, mask, self.layers[self.split:])
        pooled = pool_hidden(top, mask, self.pooling)
        index = torch.tensor([slot[key] for key in keys], device=pooled.device)
        return pooled[index]
