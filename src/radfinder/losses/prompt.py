"""Disease-prompt ("prompt-rate") BCE loss (SPEC 7).

For image i and question q with a positive and a negative prompt embedding:

    diff_iq = (exp(t) * cos(x_i, p+_q) + b) - (exp(t) * cos(x_i, p-_q) + b)      (b cancels)
    loss    = mean over labelled (i, q) of  -[pw_q * y * log sigma(diff) + (1 - y) * log sigma(-diff)] * qw_q

Labels are 1 / 0, or -1 for unknown (ignored). Inputs are expected L2-normalised already; they are deliberately not
re-normalised here, because "mean_all" / "random_1_to_n" average unit vectors and the reference uses that average
as is (its norm is < 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from ._validate import LossInputError, as_scalar, check_shape

PromptMode = Literal["first_only", "mean_all", "random_1", "random_1_to_n"]
PROMPT_MODES: tuple[str, ...] = ("first_only", "mean_all", "random_1", "random_1_to_n")

#: Question-group weights used in training (method notes 1.5): the 18 CT-RATE abnormalities count 5x.
DEFAULT_GROUP_WEIGHTS: dict[str, float] = {"ctrate": 5.0, "abdomen": 1.0, "chest": 1.0}


def select_prompts(
    prompt_emb: torch.Tensor,
    mode: PromptMode,
    batch_size: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one (positive, negative) prompt embedding pair per (sample, question): (Q, V, 2, E) -> (B, Q, 2, E).

    first_only: variant 0. mean_all: mean of the V variants. random_1: one variant per (b, q), uniform.
    random_1_to_n: per (b, q) draw V variants with replacement and a count c in 1..V, and average the first c.
    Random draws use `generator` (on prompt_emb's device) so a run can be replayed.
    """
    check_shape("prompt_emb", prompt_emb, 4, "(Q, V, 2, E)")
    q, v, two, _ = prompt_emb.shape
    if two != 2:
        raise LossInputError(f"prompt_emb axis 2 must hold (positive, negative), got size {two}")
    if v < 1:
        raise LossInputError("prompt_emb has no variants (V = 0)")
    if batch_size < 0:
        raise LossInputError(f"batch_size must be >= 0, got {batch_size}")
    dev = prompt_emb.device
    if mode == "first_only":
        return prompt_emb[:, 0].unsqueeze(0).expand(batch_size, -1, -1, -1)
    if mode == "mean_all":
        return prompt_emb.mean(1).unsqueeze(0).expand(batch_size, -1, -1, -1)
    q_idx = torch.arange(q, device=dev)
    if mode == "random_1":
        var = torch.randint(0, v, (batch_size, q), generator=generator, device=dev)
        return prompt_emb[q_idx[None, :], var]
    if mode == "random_1_to_n":
        var = torch.randint(0, v, (batch_size, q, v), generator=generator, device=dev)
        count = torch.randint(1, v + 1, (batch_size, q), generator=generator, device=dev)
        picked = prompt_emb[q_idx[None, :, None], var]  # (B, Q, V, 2, E)
        keep = (torch.arange(v, device=dev) < count[..., None]).to(picked.dtype)
        return (picked * keep[..., None, None]).sum(2) / count[..., None, None].to(picked.dtype)
    raise LossInputError(f"prompt sampling mode must be one of {PROMPT_MODES}, got {mode!r}")


def prompt_bce_loss(
    img_emb: torch.Tensor,
    prompt_emb_selected: torch.Tensor,
    labels: torch.Tensor,
    t: torch.Tensor | float,
    b: torch.Tensor | float,
    pos_weight: torch.Tensor,
    question_weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Weighted BCE over labelled (image, question) pairs (module doc).

    img_emb (B, E) and prompt_emb_selected (B, Q, 2, E) unit-norm; labels (B, Q) in {-1, 0, 1}; pos_weight (Q);
    question_weight (Q) or None; label smoothing maps y to y(1-2ls)+ls. The mean is over the labelled elements
    (weights are not normalised). With no labelled element the result is 0, still connected to the graph.
    """
    check_shape("img_emb", img_emb, 2, "(B, E)")
    check_shape("prompt_emb_selected", prompt_emb_selected, 4, "(B, Q, 2, E)")
    check_shape("labels", labels, 2, "(B, Q)")
    bsz, e = img_emb.shape
    if prompt_emb_selected.shape[0] != bsz or prompt_emb_selected.shape[2] != 2 or prompt_emb_selected.shape[3] != e:
        raise LossInputError(
            f"prompt_emb_selected must be (B, Q, 2, E) with B={bsz}, E={e}, got {tuple(prompt_emb_selected.shape)}"
        )
    nq = prompt_emb_selected.shape[1]
    if labels.shape != (bsz, nq):
        raise LossInputError(f"labels must be (B, Q) = {(bsz, nq)}, got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point:
        raise LossInputError(f"labels must be integers in {{-1, 0, 1}}, got {labels.dtype}")
    if labels.numel() and bool(((labels < -1) | (labels > 1)).any()):
        raise LossInputError("labels must be in {-1, 0, 1}")
    pos_weight = _per_question("pos_weight", pos_weight, nq, img_emb)
    qw = None if question_weight is None else _per_question("question_weight", question_weight, nq, img_emb)
    if not 0.0 <= label_smoothing < 0.5:
        raise LossInputError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")

    scale = as_scalar("t", t, img_emb).exp()
    bias = as_scalar("b", b, img_emb)
    # batched matmul and torch's BCE-with-logits (same formula as the module doc) track the reference's float32
    # rounding closest; b is kept in both logits for the same reason although it cancels
    cos = torch.bmm(prompt_emb_selected.reshape(bsz, nq * 2, e), img_emb[:, :, None]).reshape(bsz, nq, 2)
    logits = cos * scale + bias
    diff = logits[..., 0] - logits[..., 1]

    valid = labels != -1
    y = labels.clamp(min=0).to(img_emb.dtype)
    if label_smoothing:
        y = y * (1.0 - 2.0 * label_smoothing) + label_smoothing
    elem = F.binary_cross_entropy_with_logits(
        diff, y, weight=None if qw is None else qw.expand_as(diff), pos_weight=pos_weight, reduction="none"
    )
    if not bool(valid.any()):
        return (elem * 0.0).sum()  # nothing labelled: 0, but keep the graph so backward() still works
    return elem[valid].mean()


def _per_question(name: str, w: torch.Tensor, nq: int, like: torch.Tensor) -> torch.Tensor:
    if not isinstance(w, torch.Tensor):
        w = torch.as_tensor(w)
    if w.shape != (nq,):
        raise LossInputError(f"{name} must have shape (Q,) = ({nq},), got {tuple(w.shape)}")
    return w.to(dtype=like.dtype, device=like.device)


def pos_weight_from_labels(labels: torch.Tensor, cap: float = 20.0) -> torch.Tensor:
    """Per-question positive weight min(n_neg / n_pos, cap) over the training labels (N, Q); 1 where n_pos = 0.

    As in the reference, a question with positives but no negatives gets weight 0.
    """
    check_shape("labels", labels, 2, "(N, Q)")
    n_pos = (labels == 1).sum(0).double()
    n_neg = (labels == 0).sum(0).double()
    ratio = torch.clamp(n_neg / n_pos.clamp(min=1), max=cap)
    return torch.where(n_pos > 0, ratio, torch.ones_like(ratio)).float()


def question_group_weights(
    groups: Sequence[str], weights: Mapping[str, float] | None = None
) -> torch.Tensor:
    """(Q,) weights from each question's group name, e.g. ["chest", ..., "ctrate", ...] with ctrate 5.0."""
    table = DEFAULT_GROUP_WEIGHTS if weights is None else dict(weights)
    missing = sorted({g for g in groups if g not in table})
    if missing:
        raise LossInputError(f"no weight for question group(s) {missing}; known: {sorted(table)}")
    return torch.tensor([float(table[g]) for g in groups], dtype=torch.float32)
