"""One optimizer step's gradient: three objectives, cached re-forwarding, and data parallelism.

Per step (method notes 1.5; the pattern of `train/gradcache.py`, extended to all objectives):

1. Phase 1, no graph: embed every micro-batch (global image embedding, disease embedding, report embedding) and
   every prompt phrasing once, recording the RNG state before each forward.
2. Step-level losses on the cached embeddings as leaves: SigLIP over the whole accumulated batch (negatives from
   every micro-batch and, through `siglip_loss_distributed`, every rank) and the disease-prompt BCE over the whole
   batch. t and b enter as leaf copies too. Backward gives d objective / d every cached embedding and d t, d b.
3. Phase 2: each micro-batch is re-embedded with a graph under its recorded RNG state, and the surrogate
   <embedding, cached gradient> is back-propagated, plus its localization loss (which needs only its own scan's
   depth cells, so it runs live here). The last micro-batch also re-encodes the prompts and carries the t, b
   surrogates, so every parameter's gradient arrives inside a forward of the (DDP-wrapped) `StepModule`.

Why everything goes through `StepModule.forward`: DistributedDataParallel reduces a parameter's gradient only from
hooks armed by its own forward. Gradients created outside it (a loss on cached leaves touching `criterion.t`) would
silently stay unsynchronised. Here no parameter gradient is created outside, the first K-1 micro-batches run under
`no_sync`, and the last forward touches every trainable parameter (a zero-weighted term for those it does not use)
so one all-reduce per step carries the whole accumulated gradient.

Scaling: each rank's objective is world_size x its share of the global-batch loss (shares sum to the loss of one
process on the concatenated batch; DDP averages gradients over ranks), so the reduced gradient equals the
single-process gradient on the whole global batch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..losses.collectives import dist_active
from ..losses.combined import LossWeights
from ..losses.localization import gaussian_localization_loss
from ..losses.prompt import prompt_bce_loss, select_prompts
from ..losses.siglip_dist import siglip_loss_distributed
from .batches import MicroBatch
from .gradcache import GradCacheError, RngState


@dataclass
class StepStats:
    loss: float
    siglip: float | None
    prompt: float | None
    localization: float | None
    n_samples: int  # global
    n_snippets: int  # global
    n_labelled: int  # global labelled (sample, finding) pairs
    negatives: int  # negatives per image in the SigLIP loss


@dataclass
class LossSettings:
    weights: LossWeights
    sigma: float
    tau: float
    prompt_mode: str
    pos_weight: torch.Tensor  # (Q,)
    question_weight: torch.Tensor  # (Q,)
    siglip_chunk: int | None = None


def _sum_all(values: list[float], device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist_active():
        dist.all_reduce(t)
    return t.tolist()


def _touch(params: list[nn.Parameter]) -> torch.Tensor:
    return torch.stack([p.reshape(-1)[:1].sum() for p in params]).sum() * 0.0


class StepModule(nn.Module):
    """Forward = one micro-batch's surrogate objective (see module doc); wrapped by DDP when distributed."""

    def __init__(self, model: nn.Module, autocast_dtype: torch.dtype | None):
        super().__init__()
        self.model = model
        self.autocast_dtype = autocast_dtype
        # losses run in float32 (float64 when the whole model is, for exactness tests), whatever autocast does
        self.loss_dtype = torch.float64 if model.criterion.t.dtype == torch.float64 else torch.float32

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.autocast_dtype)

    def embed(self, mb: MicroBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        with self.autocast():
            image = m.encode_features_global(mb.cls, mb.patch_average, mb.window_mask, mb.grid_size)
            tok = m.tokenize(mb.texts)
            txt = m.encode_text(tok["input_ids"], tok["attention_mask"])
        ld = self.loss_dtype
        return image.retrieval.to(ld), image.disease.to(ld), txt.to(ld)

    def encode_prompts(self, tokens: dict[str, torch.Tensor], shape: tuple[int, int, int]) -> torch.Tensor:
        with self.autocast():
            emb = self.model.encode_text(tokens["input_ids"], tokens["attention_mask"])
        return emb.to(self.loss_dtype).reshape(*shape, -1)

    def localization_sum(self, mb: MicroBatch, sigma: float, tau: float) -> torch.Tensor:
        """Sum over the micro-batch's snippets of the localization loss (mean x count)."""
        m = self.model
        with self.autocast():
            depth = m.encode_features_depth(mb.cls, mb.axis2, mb.window_mask, mb.grid_size)
            tok = m.tokenize(mb.snippet_texts)
            snip = m.encode_snippet(tok["input_ids"], tok["attention_mask"])
        slices, valid = pad_depth(depth.slice_emb.to(self.loss_dtype)[mb.snippet_scan],
                                  depth.valid_depth_mask[mb.snippet_scan], sigma)
        r = (slices.shape[1] - depth.slice_emb.shape[1]) // 2
        target = F.one_hot(mb.snippet_cell + r, slices.shape[1]).bool()
        loss = gaussian_localization_loss(slices, snip.to(self.loss_dtype), target, valid, sigma=sigma, tau=tau)
        return loss * mb.n_snippets

    def forward(self, mb, g_img, g_dis, g_txt, loc_scale, sigma, tau, final=None, cached=None):
        img, dis, txt = self.embed(mb)
        if cached is not None:
            _check_same(cached, (img, dis, txt))
        surrogate = (img * g_img).sum() + (dis * g_dis).sum() + (txt * g_txt).sum()
        loc_sum = None
        if mb.n_snippets and loc_scale:
            loc_sum = self.localization_sum(mb, sigma, tau)
            surrogate = surrogate + loc_sum * loc_scale
        if final is not None:
            final["rng"].restore()
            prompts = self.encode_prompts(final["tokens"], final["shape"])
            crit = self.model.criterion
            surrogate = surrogate + (prompts * final["g_prompt"]).sum()
            surrogate = surrogate + crit.t * final["g_t"] + crit.b * final["g_b"]
            surrogate = surrogate + _touch(final["params"])
        return surrogate, (None if loc_sum is None else loc_sum.detach())


def pad_depth(slices: torch.Tensor, valid: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Add kernel-radius invalid cells at both ends of the depth axis.

    The soft target is blurred with zero padding and then renormalised: blur mass that leaves the array is lost
    and renormalised away, mass that lands on invalid (padding) cells is kept and then zeroed. Without this margin
    the target of a snippet near the end of the longest scan of a micro-batch would differ from the same snippet
    in a batch with a longer scan, so the loss would depend on how samples are grouped (and on the number of
    ranks). With it, every snippet is treated like one inside a padded batch, whatever its neighbours.
    """
    if sigma <= 0:
        return slices, valid
    r = max(int(3.0 * sigma + 0.5), 1)  # gaussian_kernel's radius
    slices = F.pad(slices, (0, 0, r, r))
    valid = F.pad(valid, (r, r), value=False)
    return slices, valid


def _check_same(cached, live, atol: float = 1e-4) -> None:
    diff = max(float((a - b.detach()).abs().max()) for a, b in zip(cached, live, strict=True))
    if diff > atol:
        raise GradCacheError(f"embeddings differ by {diff:.3g} between the cached and the gradient pass")


def compute_step_gradients(
    step_module: StepModule,
    wrapped: nn.Module,
    micro_batches: list[MicroBatch],
    prompt_tokens: dict[str, torch.Tensor],
    prompt_shape: tuple[int, int, int],
    settings: LossSettings,
    trainable: list[nn.Parameter],
    verify: bool = False,
) -> StepStats:
    """Accumulate this rank's share of the step gradient into `.grad` (zero them before). See module doc."""
    model = step_module.model
    world = dist.get_world_size() if dist_active() else 1
    device = model.criterion.t.device
    w = settings.weights

    # phase 1
    states, imgs, diss, txts = [], [], [], []
    with torch.no_grad():
        for mb in micro_batches:
            states.append(RngState())
            img, dis, txt = step_module.embed(mb)
            imgs.append(img)
            diss.append(dis)
            txts.append(txt)
        prompt_state = RngState()
        prompts = step_module.encode_prompts(prompt_tokens, prompt_shape)
    after_phase1 = RngState()

    # step-level losses on leaves
    sizes = [x.shape[0] for x in imgs]
    img_all = torch.cat(imgs).requires_grad_(True)
    txt_all = torch.cat(txts).requires_grad_(True)
    dis_all = torch.cat(diss).requires_grad_(True)
    prompt_leaf = prompts.detach().requires_grad_(True)
    crit = model.criterion
    t_leaf = crit.t.detach().to(step_module.loss_dtype).requires_grad_(True)
    b_leaf = crit.b.detach().to(step_module.loss_dtype).requires_grad_(True)
    labels = torch.cat([mb.labels for mb in micro_batches])
    n_snip_local = sum(mb.n_snippets for mb in micro_batches)
    n_lab_local = int((labels != -1).sum())
    n_lab_global, n_snip_global = (int(v) for v in _sum_all([n_lab_local, n_snip_local], device))

    objective = img_all.new_zeros(())
    sig = None
    if w.siglip > 0:
        sig = siglip_loss_distributed(img_all, txt_all, t_leaf, b_leaf, chunk_size=settings.siglip_chunk)
        objective = objective + sig.loss * (w.siglip * world)
    prompt_sum_local = 0.0
    if w.prompt > 0 and n_lab_global > 0:
        variant = torch.cat([mb.prompt_variant for mb in micro_batches])
        selected = _select(prompt_leaf, settings.prompt_mode, variant)
        mean_local = prompt_bce_loss(F.normalize(dis_all, dim=-1), F.normalize(selected, dim=-1), labels,
                                     t_leaf, b_leaf, settings.pos_weight, settings.question_weight)
        share = mean_local * (n_lab_local / n_lab_global)
        objective = objective + share * (w.prompt * world)
        prompt_sum_local = float(mean_local.detach()) * n_lab_local
    if objective.requires_grad:
        objective.backward()

    def grad_or_zero(x):
        return x.grad if x.grad is not None else torch.zeros_like(x)

    g_img, g_txt, g_dis = (grad_or_zero(x).split(sizes) for x in (img_all, txt_all, dis_all))
    final = {
        "rng": prompt_state, "tokens": prompt_tokens, "shape": prompt_shape, "g_prompt": grad_or_zero(prompt_leaf),
        "g_t": grad_or_zero(t_leaf).to(crit.t.dtype), "g_b": grad_or_zero(b_leaf).to(crit.b.dtype),
        "params": trainable,
    }
    loc_scale = (w.localization * world / n_snip_global) if (w.localization > 0 and n_snip_global) else 0.0

    # phase 2
    loc_sum_local = 0.0
    last = len(micro_batches) - 1
    no_sync = getattr(wrapped, "no_sync", None)
    for k, mb in enumerate(micro_batches):
        ctx = no_sync() if (no_sync is not None and k < last) else contextlib.nullcontext()
        with ctx:
            states[k].restore()
            cached = (imgs[k], diss[k], txts[k]) if verify else None
            surrogate, loc_sum = wrapped(mb, g_img[k], g_dis[k], g_txt[k], loc_scale, settings.sigma,
                                         settings.tau, final if k == last else None, cached)
            surrogate.backward()
            if loc_sum is not None:
                loc_sum_local += float(loc_sum)
    after_phase1.restore()

    prompt_g, loc_g = _sum_all([prompt_sum_local, loc_sum_local], device)
    siglip_v = float(sig.loss_global) if sig is not None else None
    prompt_v = prompt_g / n_lab_global if n_lab_global else None
    loc_v = loc_g / n_snip_global if n_snip_global else None
    total = sum(getattr(w, name) * v for name, v in
                (("siglip", siglip_v), ("prompt", prompt_v), ("localization", loc_v)) if v is not None)
    n_global = int(_sum_all([float(sum(sizes))], device)[0])
    return StepStats(
        loss=float(total), siglip=siglip_v, prompt=prompt_v, localization=loc_v, n_samples=n_global,
        n_snippets=n_snip_global, n_labelled=n_lab_global, negatives=n_global - 1,
    )


def _select(prompt_emb: torch.Tensor, mode: str, variant: torch.Tensor) -> torch.Tensor:
    """(Q, V, 2, E) -> (B, Q, 2, E). random_1 uses the per-sample draws made with the batch (rank-independent)."""
    if mode == "random_1":
        q = torch.arange(prompt_emb.shape[0], device=prompt_emb.device)
        return prompt_emb[q[None, :], variant.clamp(max=prompt_emb.shape[1] - 1)]
    gen = torch.Generator(device=prompt_emb.device).manual_seed(int(variant.sum()) if variant.numel() else 0)
    return select_prompts(prompt_emb, mode, variant.shape[0], generator=gen)
