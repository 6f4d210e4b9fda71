"""Large effective contrastive batches by gradient caching (GradCache, Gao et al. 2021).

A contrastive loss couples every sample to every other, so plain gradient accumulation (loss per micro-batch) only
ever sees a micro-batch worth of negatives. Here, per optimizer step:

1. Phase 1, no graph: embed every micro-batch and cache the embeddings (RNG state recorded per micro-batch).
2. The big-batch loss runs once on the cached embeddings, as leaves: backward gives d loss / d embedding for every
   row, and the gradient of the loss's own parameters (SigLIP t, b), once.
3. Phase 2: each micro-batch is re-embedded with a graph under its recorded RNG state (same dropout masks) and
   back-propagated with its cached embedding gradient, plus any per-micro-batch loss (localization, prompt) that
   does not need the big batch.

The accumulated gradient is then that of one forward/backward on the whole batch (same dropout masks), while memory
holds only one micro-batch's activations. This is the same gradient as the official scheme (each micro-batch's loss
against all cached embeddings with its own rows live), but the loss is computed once instead of once per
micro-batch, and t and b receive their gradient once rather than once per micro-batch.

Multi-process: pass a distributed-aware loss (e.g. `SigLipLoss`, which all-gathers across ranks); the cached
embeddings are then contrasted with every rank's, and each rank back-propagates its own rows. Every rank must use
the same number of micro-batches. With DDP pass `no_sync=ddp_model.no_sync` so gradients are reduced once, on the
last micro-batch (DDP averages over ranks; see `radfinder.losses.siglip_dist` for the resulting scale).

Caveats: batch-norm layers in train mode update their running statistics in both passes; embeddings must be a
deterministic function of (inputs, parameters, RNG state), which `verify=True` checks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import RadfinderError

EmbedFn = Callable[[Any], tuple]  # micro_batch -> (img_emb, txt_emb) or (img_emb, txt_emb, aux)
LossFn = Callable[[torch.Tensor, torch.Tensor], Any]  # (img_all, txt_all) -> Tensor or object with .loss
ExtraLossFn = Callable[[Any, torch.Tensor, torch.Tensor, Any], torch.Tensor | None]


class GradCacheError(RadfinderError):
    """Gradient caching cannot run on these inputs (e.g. embeddings changed between the two passes)."""


class RngState:
    """CPU and (initialised) CUDA generator states, to replay dropout exactly."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        cuda_live = torch.cuda.is_available() and torch.cuda.is_initialized()
        self.cuda = torch.cuda.get_rng_state_all() if cuda_live else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


@dataclass
class GradCacheResult:
    """`loss`: detached big-batch loss (its `loss_global` when the loss reports one); `loss_output`: what the loss
    function returned (e.g. a `SiglipOutput` with diagnostics); `extra_losses`: detached per-micro-batch extras."""

    loss: torch.Tensor
    loss_output: Any
    extra_losses: list[torch.Tensor | None] = field(default_factory=list)
    num_samples: int = 0

    @property
    def extra_loss_sum(self) -> torch.Tensor | None:
        vals = [v for v in self.extra_losses if v is not None]
        return torch.stack(vals).sum() if vals else None


def _unpack(name: str, out) -> tuple[torch.Tensor, torch.Tensor, Any]:
    if not isinstance(out, tuple | list) or len(out) not in (2, 3):
        raise GradCacheError(f"{name} must return (img_emb, txt_emb) or (img_emb, txt_emb, aux), got {type(out)}")
    img, txt = out[0], out[1]
    if not (isinstance(img, torch.Tensor) and isinstance(txt, torch.Tensor)):
        raise GradCacheError(f"{name} must return tensors for the embeddings")
    return img, txt, (out[2] if len(out) == 3 else None)


def _loss_tensor(out) -> torch.Tensor:
    loss = getattr(out, "loss", out)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise GradCacheError(f"loss_fn must return a scalar tensor or an object with a scalar .loss, got {type(out)}")
    return loss.reshape(())


class GradCache:
    """Runs the three steps of the module doc; gradients accumulate into `.grad` as with `loss.backward()`.

    Args:
        embed_fn: micro_batch -> (img_emb, txt_emb[, aux]); called once without and once with a graph.
        loss_fn: (img_all, txt_all) -> scalar tensor or an object with `.loss` (e.g. `SigLipLoss`).
        extra_loss_fn: (micro_batch, img_emb, txt_emb, aux) -> scalar tensor or None; per-micro-batch objectives,
            already weighted, computed on the live phase-2 outputs and added to that micro-batch's backward.
        replay_rng: replay the phase-1 RNG state in phase 2 (needed for dropout; only off to demonstrate why).
        no_sync: context-manager factory (e.g. `ddp.no_sync`) used for all but the last micro-batch.
        verify: check that phase-2 embeddings equal the cached ones (costs a comparison per micro-batch).
        verify_atol: tolerance of that check.
    """

    def __init__(
        self,
        embed_fn: EmbedFn,
        loss_fn: LossFn,
        *,
        extra_loss_fn: ExtraLossFn | None = None,
        replay_rng: bool = True,
        no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
        verify: bool = False,
        verify_atol: float = 1e-5,
    ):
        self.embed_fn = embed_fn
        self.loss_fn = loss_fn
        self.extra_loss_fn = extra_loss_fn
        self.replay_rng = replay_rng
        self.no_sync = no_sync
        self.verify = verify
        self.verify_atol = verify_atol

    def step(self, micro_batches: Sequence[Any]) -> GradCacheResult:
        """Accumulate the big-batch gradient of `micro_batches` (plus extras) into the parameters' `.grad`."""
        if len(micro_batches) == 0:
            raise GradCacheError("no micro-batches given")

        # phase 1: cache embeddings without a graph, remembering the RNG state each micro-batch started from
        states: list[RngState] = []
        imgs: list[torch.Tensor] = []
        txts: list[torch.Tensor] = []
        with torch.no_grad():
            for mb in micro_batches:
                states.append(RngState())
                img, txt, _ = _unpack("embed_fn", self.embed_fn(mb))
                imgs.append(img.detach())
                txts.append(txt.detach())
        after_phase1 = RngState()

        # the big-batch loss, once, on leaves: gives every row's embedding gradient and the loss parameters' grads
        img_all = torch.cat(imgs).requires_grad_(True)
        txt_all = torch.cat(txts).requires_grad_(True)
        loss_out = self.loss_fn(img_all, txt_all)
        loss = _loss_tensor(loss_out)
        loss.backward()
        g_img = (img_all.grad if img_all.grad is not None else torch.zeros_like(img_all)).split(
            [t.shape[0] for t in imgs]
        )
        g_txt = (txt_all.grad if txt_all.grad is not None else torch.zeros_like(txt_all)).split(
            [t.shape[0] for t in txts]
        )

        # phase 2: re-embed each micro-batch with a graph and push its cached gradient through the encoders
        extras: list[torch.Tensor | None] = []
        last = len(micro_batches) - 1
        for k, mb in enumerate(micro_batches):
            ctx = self.no_sync() if (self.no_sync is not None and k < last) else contextlib.nullcontext()
            with ctx:
                if self.replay_rng:
                    states[k].restore()
                img, txt, aux = _unpack("embed_fn", self.embed_fn(mb))
                if img.shape != imgs[k].shape or txt.shape != txts[k].shape:
                    raise GradCacheError(
                        f"micro-batch {k}: embedding shapes changed between passes "
                        f"({tuple(imgs[k].shape)} -> {tuple(img.shape)}, {tuple(txts[k].shape)} -> {tuple(txt.shape)})"
                    )
                if self.verify:
                    self._check_same(k, img, imgs[k], txt, txts[k])
                surrogate = (img * g_img[k]).sum() + (txt * g_txt[k]).sum()
                extra = None
                if self.extra_loss_fn is not None:
                    extra = self.extra_loss_fn(mb, img, txt, aux)
                    if extra is not None:
                        surrogate = surrogate + _loss_tensor(extra)
                extras.append(None if extra is None else _loss_tensor(extra).detach())
                surrogate.backward()
        if self.replay_rng:
            # continue the RNG stream from where one pass would have left it, so the next step gets fresh masks
            after_phase1.restore()

        reported = getattr(loss_out, "loss_global", loss).detach()
        return GradCacheResult(reported, loss_out, extras, int(img_all.shape[0]))

    def _check_same(self, k: int, img, img_c, txt, txt_c) -> None:
        diff = max(float((img.detach() - img_c).abs().max()), float((txt.detach() - txt_c).abs().max()))
        if diff > self.verify_atol:
            raise GradCacheError(
                f"micro-batch {k}: embeddings differ by {diff:.3g} between the cached and the gradient pass; the "
                "encoders are not a deterministic function of (input, RNG state) (train-mode batch norm, "
                "non-deterministic kernels, or RNG other than torch's)"
            )


def gradcache_backward(
    micro_batches: Sequence[Any],
    image_fn: Callable[[Any], torch.Tensor | tuple[torch.Tensor, Any]],
    text_fn: Callable[[Any], torch.Tensor | tuple[torch.Tensor, Any]],
    loss_fn: LossFn,
    *,
    extra_loss_fn: ExtraLossFn | None = None,
    replay_rng: bool = True,
    no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
    verify: bool = False,
) -> GradCacheResult:
    """`GradCache.step` with separate image and text encoders (called in that order per micro-batch).

    Each fn returns an embedding or (embedding, aux); `extra_loss_fn` then receives aux = (image_aux, text_aux).
    Under DDP prefer `GradCache` with one `embed_fn` through the DDP module (one DDP forward per backward).
    """

    def split(out):
        return (out[0], out[1]) if isinstance(out, tuple | list) else (out, None)

    def embed(mb):
        img, img_aux = split(image_fn(mb))
        txt, txt_aux = split(text_fn(mb))
        return img, txt, (img_aux, txt_aux)

    return GradCache(
        embed, loss_fn, extra_loss_fn=extra_loss_fn, replay_rng=replay_rng, no_sync=no_sync, verify=verify
    ).step(micro_batches)
