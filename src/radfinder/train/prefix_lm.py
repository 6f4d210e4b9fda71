"""Training the neural report-generation path (`radfinder.models.prefix_lm.PrefixReportLM`) with teacher forcing
on (volume embedding, depth-cell embeddings, report) triples from cached embeddings. A tested scaffold: see the
status note in `radfinder.models.prefix_lm`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..models.prefix_lm import PrefixReportLM, depth_batch


def train_prefix_lm(
    model: PrefixReportLM, volumes: Sequence[np.ndarray], depths: Sequence[np.ndarray], texts: Sequence[str], *,
    epochs: int = 1, batch_size: int = 8, lr: float = 1e-3, max_tokens: int = 256, seed: int = 0,
    device: str | torch.device = "cpu",
) -> list[float]:
    """Teacher forcing on (volume embedding, depth-cell embeddings, report) triples from cached embeddings;
    AdamW on the LoRA, projector and token embeddings only; bf16 autocast on CUDA. Returns the loss per step."""
    if not (len(volumes) == len(depths) == len(texts)) or not texts:
        raise ConfigError("volumes, depths and texts must be non-empty and of equal length")
    dev = torch.device(device)
    model.to(dev).train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(texts))
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            vol, dep, mask = depth_batch([volumes[i] for i in idx], [depths[i] for i in idx], dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                loss = model.loss(vol, dep, mask, [texts[i] for i in idx], max_tokens)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    model.eval()
    return losses
