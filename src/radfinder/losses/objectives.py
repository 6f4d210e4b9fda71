"""The built-in objectives and leaf producers (registered on import; the contract: `radfinder.losses.registry`).

Leaves: `image`, `disease` (B, D) from one global pass over the cached features; `text` (B, D) the report
embedding; `prompts` (Q, V, 2, D) the prompt bank (step-level); `t`, `b` SigLIP's scale and bias (parameters).

Objectives (registration order = the order of summation and logging):
* `siglip`: global SigLIP on image/text with negatives from every micro-batch and rank (method notes 1.5 (1));
* `prompt`: the disease-prompt BCE on disease/prompts, mean over the labelled (sample, finding) pairs of the global
  batch (1.5 (2));
* `localization`: a live per-micro-batch term, each snippet against its own scan's depth cells, mean over the
  global batch's snippets (1.5 (3));
* `swca`: SCALE-VLP-style soft-weighted contrast (`soft_contrastive_loss`, docs/soft_contrastive.md) on image/text
  with soft targets `alpha I + (1 - alpha) rownorm(beta S + gamma K)` (`soft_target_pair`, the true pair keeps
  `alpha` of each row at any batch size) from the batch's report-derived labels (knowledge term K) and, when
  beta > 0, the anatomies the reports call abnormal mixed with their volumes (`volume_weight`: organ masks and cited
  depth cells, batch field `swca_volume`; spatial term S). Its temperature reuses SigLIP's learnable log-scale:
  temperature = exp(-t) (so `losses.t_init` sets it; ln(1/0.07) = 2.659 gives CLIP's 0.07).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..features.volume_profile import split_profile_rows
from ..text.ontology import knowledge_similarity
from .collectives import all_gather_rows
from .localization import gaussian_localization_loss
from .prompt import prompt_bce_loss, select_prompts
from .registry import LossSettings, Objective, ObjectiveContext, StepTerm, register_leaves, register_objective
from .siglip_dist import siglip_loss_distributed
from .soft_contrastive import soft_contrastive_loss
from .soft_targets import VolumeProfiles, labels_known, soft_target_pair, spatial_similarity

# ---------------------------------------------------------------------------------------------------- leaves


def _global_leaves(sm, mb) -> tuple[torch.Tensor, torch.Tensor]:
    with sm.autocast():
        image = sm.model.encode_features_global(mb.cls, mb.patch_average, mb.window_mask, mb.grid_size)
    return image.retrieval.to(sm.loss_dtype), image.disease.to(sm.loss_dtype)


def _text_leaf(sm, mb) -> tuple[torch.Tensor]:
    with sm.autocast():
        tok = sm.model.tokenize(mb.texts)
        txt = sm.model.encode_text(tok["input_ids"], tok["attention_mask"])
    return (txt.to(sm.loss_dtype),)


def _prompt_leaf(sm, inputs: dict[str, Any]) -> tuple[torch.Tensor]:
    tokens, shape = inputs["prompt_tokens"], inputs["prompt_shape"]
    with sm.autocast():
        emb = sm.model.encode_text(tokens["input_ids"], tokens["attention_mask"])
    return (emb.to(sm.loss_dtype).reshape(*shape, -1),)


def _siglip_params(model) -> tuple[torch.Tensor, torch.Tensor]:
    return model.criterion.t, model.criterion.b


register_leaves(("image", "disease"), "sample", _global_leaves)
register_leaves("text", "sample", _text_leaf)
register_leaves("prompts", "step", _prompt_leaf)
register_leaves(("t", "b"), "param", _siglip_params)

# ---------------------------------------------------------------------------------------------------- siglip


def _siglip(ctx: ObjectiveContext) -> StepTerm:
    lv = ctx.leaves
    sig = siglip_loss_distributed(lv["image"], lv["text"], lv["t"], lv["b"], chunk_size=ctx.settings.siglip_chunk)
    return StepTerm(loss=sig.loss, value=float(sig.loss_global))


# ---------------------------------------------------------------------------------------------------- prompt


def _n_labelled(mbs: Sequence[Any]) -> float:
    return float(sum(int((mb.labels != -1).sum()) for mb in mbs))


def select_for_batch(prompt_emb: torch.Tensor, mode: str, variant: torch.Tensor) -> torch.Tensor:
    """(Q, V, 2, E) -> (B, Q, 2, E). random_1 uses the per-sample draws made with the batch (rank-independent)."""
    if mode == "random_1":
        q = torch.arange(prompt_emb.shape[0], device=prompt_emb.device)
        return prompt_emb[q[None, :], variant.clamp(max=prompt_emb.shape[1] - 1)]
    gen = torch.Generator(device=prompt_emb.device).manual_seed(int(variant.sum()) if variant.numel() else 0)
    return select_prompts(prompt_emb, mode, variant.shape[0], generator=gen)


def _prompt_term(ctx: ObjectiveContext, leaf: str) -> StepTerm | None:
    """The disease-prompt BCE of the embedding leaf `leaf` against each sample's selected prompts."""
    if ctx.count_global <= 0:
        return None
    s, lv, mbs = ctx.settings, ctx.leaves, ctx.micro_batches
    labels = torch.cat([mb.labels for mb in mbs])
    variant = torch.cat([mb.prompt_variant for mb in mbs])
    selected = select_for_batch(lv["prompts"], s.prompt_mode, variant)
    mean_local = prompt_bce_loss(F.normalize(lv[leaf], dim=-1), F.normalize(selected, dim=-1), labels,
                                 lv["t"], lv["b"], s.pos_weight, s.question_weight)
    n_local = int(ctx.count_local)
    share = mean_local * (n_local / int(ctx.count_global))
    return StepTerm(loss=share, value_sum=float(mean_local.detach()) * n_local)


def _prompt(ctx: ObjectiveContext) -> StepTerm | None:
    return _prompt_term(ctx, "disease")


def _report_prompt(ctx: ObjectiveContext) -> StepTerm | None:
    """The prompt BCE with the report embedding in place of the image's: the text side learns to read its own
    reports' findings and negations (rule labels of the train reports), so the prompts it scores images with mean
    what the reports mean."""
    return _prompt_term(ctx, "text")


# ---------------------------------------------------------------------------------------------------- localization


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


def localization_sum(sm, mb, settings: LossSettings) -> torch.Tensor | None:
    """Sum over the micro-batch's snippets of the localization loss (mean x count); None without snippets."""
    if not mb.n_snippets:
        return None
    m = sm.model
    with sm.autocast():
        depth = m.encode_features_depth(mb.cls, mb.axis2, mb.window_mask, mb.grid_size)
        tok = m.tokenize(mb.snippet_texts)
        snip = m.encode_snippet(tok["input_ids"], tok["attention_mask"])
    sigma, tau = settings.sigma, settings.tau
    slices, valid = pad_depth(depth.slice_emb.to(sm.loss_dtype)[mb.snippet_scan],
                              depth.valid_depth_mask[mb.snippet_scan], sigma)
    r = (slices.shape[1] - depth.slice_emb.shape[1]) // 2
    target = F.one_hot(mb.snippet_cell + r, slices.shape[1]).bool()
    loss = gaussian_localization_loss(slices, snip.to(sm.loss_dtype), target, valid, sigma=sigma, tau=tau)
    return loss * mb.n_snippets


def _n_snippets(mbs: Sequence[Any]) -> float:
    return float(sum(mb.n_snippets for mb in mbs))


# ---------------------------------------------------------------------------------------------------- swca

SWCA_DEFAULTS = {"alpha": 0.5, "beta": 0.0, "gamma": 0.5, "volume_weight": 0.5, "intra_weight": 0.0,
                 "max_log_scale": math.log(100.0)}  # fmt: skip


def _volume(ctx: ObjectiveContext) -> VolumeProfiles:
    rows = all_gather_rows(ctx.batch_field("swca_volume").to(torch.float64)).cpu().numpy()
    return VolumeProfiles(*split_profile_rows(rows))


def swca_options(settings: LossSettings) -> dict[str, Any]:
    given = settings.options.get("swca", {})
    unknown = sorted(set(given) - set(SWCA_DEFAULTS))
    if unknown:
        raise ConfigError(f"losses.options.swca: unknown option(s) {unknown}; known: {', '.join(SWCA_DEFAULTS)}")
    return {**SWCA_DEFAULTS, **given}


def swca_targets(ctx: ObjectiveContext) -> tuple[torch.Tensor, torch.Tensor]:
    """(image-to-text, text-to-image) (B_global, B_global) soft targets of the global batch from its report-derived
    labels, the anatomies the reports call abnormal and their volumes."""
    opt = swca_options(ctx.settings)
    labels = all_gather_rows(torch.cat([mb.labels for mb in ctx.micro_batches])).cpu().numpy()
    n = labels.shape[0]
    know = knowledge_similarity(labels, ctx.settings.label_names) if opt["gamma"] else None
    spatial = None
    if opt["beta"]:
        flags = all_gather_rows(ctx.batch_field("report_abnormal_anatomies").to(torch.uint8))
        volume = _volume(ctx) if opt["volume_weight"] else None
        spatial = spatial_similarity(flags.cpu().numpy().astype(bool), volume=volume,
                                     volume_weight=opt["volume_weight"])  # fmt: skip
    return soft_target_pair(n, alpha=opt["alpha"], beta=opt["beta"], gamma=opt["gamma"], spatial=spatial,
                            knowledge=know, known=labels_known(labels))  # fmt: skip


def _swca(ctx: ObjectiveContext) -> StepTerm:
    opt = swca_options(ctx.settings)
    lv = ctx.leaves
    w, w_t2i = swca_targets(ctx)
    temperature = torch.exp(-lv["t"].clamp(max=opt["max_log_scale"]))
    share = soft_contrastive_loss(lv["image"], lv["text"], w, temperature, intra_weight=opt["intra_weight"],
                                  targets_t2i=w_t2i)  # fmt: skip
    return StepTerm(loss=share, value_sum=float(share.detach()))


# ---------------------------------------------------------------------------------------------------- registration

register_objective(Objective(
    "siglip", leaves=("image", "text", "t", "b"), loss=_siglip,
    description="global SigLIP report-volume contrast (negatives from the whole global batch)"))
register_objective(Objective(
    "prompt", leaves=("disease", "prompts", "t", "b"), batch_fields=("labels", "prompt_variant"), loss=_prompt,
    count=_n_labelled, description="disease-prompt BCE, mean over the labelled (sample, finding) pairs"))
register_objective(Objective(
    "localization", batch_fields=("snippets",), live=localization_sum, count=_n_snippets,
    description="intra-scan localization of report snippets, mean over snippets (live per micro-batch)"))
register_objective(Objective(
    "swca", leaves=("image", "text", "t"), batch_fields=("labels", "report_abnormal_anatomies", "swca_volume"),
    loss=_swca,
    description="SCALE-VLP-style soft-weighted contrast with report-derived soft targets (temperature exp(-t))"))
register_objective(Objective(
    "report_prompt", leaves=("text", "prompts", "t", "b"), batch_fields=("labels", "prompt_variant"),
    loss=_report_prompt, count=_n_labelled,
    description="disease-prompt BCE of the report embeddings (the text side reads its reports' labels)"))
