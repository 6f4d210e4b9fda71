"""fVLM's anatomy head: one learnable query per anatomy attending over the frozen spatial tokens inside its mask.

Input: the spatial tokens of a batch of scans, flattened and (optionally) compacted to the tokens that touch any
anatomy, `tokens` (B, N, F), and each token's anatomy coverage `coverage` (B, A, N) (the fraction of the token's
voxels inside anatomy a; 0 on padding; `radfinder.features.anatomy`). For anatomy a the query attends only over the
tokens with coverage > 0 (others get exactly zero weight, so no gradient reaches them), optionally with log coverage
added to the attention logits (a token half inside the organ counts half as much as one wholly inside). The
attended value passes a residual + LayerNorm and one projection per anatomy into the model's shared embedding space
(`projection_dim`); the result is L2-normalised. An anatomy with no intersecting token gives a zero vector and is
reported invalid.

`FvlmTemperature` (fVLM's learnable contrastive temperature: initial 0.07, clamped to [0.001, 0.5]) lives here, so
a model that carries an anatomy head also carries its temperature in its checkpoint; `radfinder.losses.fvlm`
re-exports it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

TEMPERATURE_INIT = 0.07
TEMPERATURE_RANGE = (0.001, 0.5)


class FvlmTemperature(nn.Module):
    """fVLM's learnable temperature: a parameter initialised at 0.07 and clamped in place to [0.001, 0.5] each
    time it is read (the optimiser may step outside; the value used never is)."""

    def __init__(self, init: float = TEMPERATURE_INIT, bounds: tuple[float, float] = TEMPERATURE_RANGE):
        super().__init__()
        if not bounds[0] <= init <= bounds[1]:
            raise ValueError(f"temperature init {init} outside {bounds}")
        self.bounds = tuple(bounds)
        self.temperature = nn.Parameter(torch.tensor(float(init)))

    def forward(self) -> torch.Tensor:
        with torch.no_grad():
            self.temperature.clamp_(*self.bounds)
        return self.temperature


@dataclass
class AnatomyEmbeddings:
    embeddings: torch.Tensor  # (B, A, P), L2-normalised; zero rows where not valid
    present: torch.Tensor  # (B, A) bool: at least one token intersects the anatomy


class AnatomyHead(nn.Module):
    def __init__(
        self,
        feature_dim: int,
        out_dim: int,
        names: Sequence[str],
        dim: int = 128,
        num_heads: int = 4,
        dropout: float = 0.0,
        coverage_bias: bool = True,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"anatomy head width {dim} is not divisible by {num_heads} heads")
        if not names:
            raise ValueError("the anatomy head needs at least one anatomy")
        self.names = list(names)
        self.num_heads = int(num_heads)
        self.coverage_bias = bool(coverage_bias)
        a = len(self.names)
        self.norm_in = nn.LayerNorm(feature_dim)
        self.proj_in = nn.Linear(feature_dim, dim)
        self.query = nn.Parameter(torch.randn(a, dim) * 0.02)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.norm_out = nn.LayerNorm(dim)
        bound = 1.0 / math.sqrt(dim)
        self.proj_weight = nn.Parameter(torch.empty(a, dim, out_dim).uniform_(-bound, bound))  # one per anatomy
        self.proj_bias = nn.Parameter(torch.zeros(a, out_dim))

    def attention_weights(self, x: torch.Tensor, coverage: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H, A, N) attention weights over the projected tokens `x` (B, N, dim), and `allowed` (B, A, N)."""
        b, n, dim = x.shape
        h, dh = self.num_heads, dim // self.num_heads
        q = self.q(self.query).view(-1, h, dh)  # (A, H, dh)
        k = self.k(x).view(b, n, h, dh)
        logits = torch.einsum("ahd,bnhd->bhan", q, k) / math.sqrt(dh)
        allowed = coverage > 0
        if self.coverage_bias:
            logits = logits + torch.log(coverage.clamp_min(1e-6)).unsqueeze(1).to(logits.dtype)
        logits = torch.where(allowed.unsqueeze(1), logits, torch.finfo(logits.dtype).min)
        return torch.softmax(logits, dim=-1), allowed

    def forward(self, tokens: torch.Tensor, coverage: torch.Tensor) -> AnatomyEmbeddings:
        """tokens (B, N, F), coverage (B, A, N) -> L2-normalised (B, A, P) embeddings and presence (B, A)."""
        if tokens.dim() != 3 or coverage.dim() != 3 or coverage.shape[0] != tokens.shape[0] \
                or coverage.shape[2] != tokens.shape[1] or coverage.shape[1] != len(self.names):  # fmt: skip
            raise ValueError(f"anatomy head: tokens {tuple(tokens.shape)} (B, N, F) and coverage "
                             f"{tuple(coverage.shape)} (B, {len(self.names)}, N) do not fit")  # fmt: skip
        x = self.proj_in(self.norm_in(tokens))
        w, allowed = self.attention_weights(x, coverage)
        present = allowed.any(dim=-1)  # (B, A)
        w = self.dropout(w) * present[:, None, :, None].to(w.dtype)  # no token: no weight at all
        b, n, dim = x.shape
        v = self.v(x).view(b, n, self.num_heads, dim // self.num_heads)
        att = torch.einsum("bhan,bnhd->bahd", w, v).reshape(b, -1, dim)
        z = self.norm_out(self.query.unsqueeze(0) + self.o(att))
        e = torch.einsum("bad,adp->bap", z, self.proj_weight) + self.proj_bias
        e = F.normalize(e, dim=-1) * present.unsqueeze(-1).to(e.dtype)
        return AnatomyEmbeddings(e, present)
