"""fVLM's anatomy-level contrastive loss with false-negative-calibrated soft targets (Shui et al., ICLR 2025).

For A anatomies, image and text embeddings are (B, A, D); `valid` (B, A) says whether anatomy a of study b is usable
(present and not cut by the crop), `normal` (B, A) whether its text is the no-abnormality template, `text_ids` (B, A)
identify identical texts (equal id = identical text; derive them from content with `fvlm_text_ids`).

Per anatomy a with at least one abnormal row among its valid rows (rows = the valid studies):

    logits = image_a . text_a^T / temperature              (embeddings L2-normalised first)
    S_ij   = [i and j both normal] OR [text_ids equal],  S_ii = 0
    T      = I + S                                          (every entry 0 or 1, the diagonal exactly 1)
    T      = T / T.sum(1)                                   (each row divided by its sum)
    L_a    = (CE(logits, T) + CE(logits^T, T)) / 2,  CE(X, T) = mean_i  -sum_j T_ij log softmax_j(X_i)

The terms are or-ed as in fVLM's released pre-training code: every same-meaning partner weighs as much as the
true pair, whatever the number of reasons it is one. (Adding them would weigh a normal row's own pair 3 and an
identical normal partner 2 against 1 for a normal partner with other words, bringing back the instance
discrimination among normals that the calibration removes.) Anatomies whose T is constant are skipped; the loss is
sum_a L_a, and zero (still attached to the inputs) when no anatomy qualifies. The temperature divides and is used
as given; `FvlmTemperature` owns it as a learnable parameter (initial 0.07, clamped to [0.001, 0.5] as in fVLM's
code).

Disease-aware extension (optional, `finding_ids`): two abnormal rows whose finding sets for that anatomy are equal
(equal `finding_ids`, e.g. from `finding_set_ids`) count as false negatives too: S_ij is or-ed with
[both abnormal and finding_ids equal] (ours; fVLM's release has no such option).

Distributed form: with an initialised process group every tensor is gathered (embeddings with gradients); each rank
computes the image-to-text rows of its own images and the text-to-image rows of its own texts, each divided by the
anatomy's global row count. The sum of the ranks' losses is the single-process loss on the concatenated batch, and
the gradients w.r.t. each rank's local embeddings are that loss's (the gather's backward sums them); under DDP,
which averages parameter gradients, multiply by the world size as for SigLIP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..models.anatomy_head import TEMPERATURE_INIT, TEMPERATURE_RANGE, FvlmTemperature
from ..text.anatomy import FINDING_ANATOMY, text_id
from ..text.findings import CTRATE_FINDINGS
from ._validate import LossInputError, as_scalar, check_shape
from .collectives import all_gather_rows, all_gather_sizes, dist_active

__all__ = ["TEMPERATURE_INIT", "TEMPERATURE_RANGE", "FvlmLoss", "FvlmOutput", "FvlmTemperature", "anatomy_finding_ids",
           "finding_set_ids", "fvlm_loss", "fvlm_loss_terms", "fvlm_text_ids"]

@dataclass
class FvlmOutput:
    """loss: this process's differentiable share (the whole loss in one process); per_anatomy (A,): detached
    global L_a (0 where skipped); used (A,) bool: anatomies that qualified; rows (A,): valid rows per anatomy."""

    loss: torch.Tensor
    per_anatomy: torch.Tensor
    used: torch.Tensor
    rows: torch.Tensor


def fvlm_text_ids(texts: Sequence[Sequence[str]]) -> torch.Tensor:
    """(B, A) int64 ids from a (B, A) nested list of per-anatomy texts: equal texts get equal ids in every process
    and run (SHA-256 of the UTF-8 text; never Python's `hash`)."""
    rows = [[text_id(t) for t in row] for row in texts]
    if rows and len({len(r) for r in rows}) != 1:
        raise LossInputError("every study needs the same number of anatomy texts")
    return torch.tensor(rows, dtype=torch.int64)


def finding_set_ids(findings: torch.Tensor) -> torch.Tensor:
    """(B, A) int64 ids of per-anatomy finding sets from a (B, A, K) 0/1 tensor (K <= 62): the set's bit mask."""
    check_shape("findings", findings, 3, "(B, A, K)")
    k = findings.shape[-1]
    if k > 62:
        raise LossInputError(f"finding_set_ids supports up to 62 findings, got {k}")
    weights = 2 ** torch.arange(k, dtype=torch.int64, device=findings.device)
    return ((findings > 0).to(torch.int64) * weights).sum(-1)


def anatomy_finding_ids(
    labels: torch.Tensor,
    anatomies: Sequence[str],
    findings: Sequence[str] = CTRATE_FINDINGS,
    mapping: dict[str, str | None] | None = None,
) -> torch.Tensor:
    """(B, A) finding-set ids for the disease-aware extension from (B, F) report labels (1 = positive): for each
    anatomy, the set of its positive findings (`FINDING_ANATOMY` by default), encoded by `finding_set_ids`."""
    check_shape("labels", labels, 2, "(B, F)")
    if labels.shape[1] != len(findings):
        raise LossInputError(f"labels must have {len(findings)} columns, got {labels.shape[1]}")
    mapping = FINDING_ANATOMY if mapping is None else mapping
    member = torch.tensor(
        [[mapping.get(f) == a for f in findings] for a in anatomies], dtype=torch.bool, device=labels.device
    )  # (A, F)
    multi = (labels[:, None, :] == 1) & member[None]
    return finding_set_ids(multi.to(torch.int64))


def _check(image, text, valid, normal, text_ids, finding_ids) -> None:
    check_shape("image", image, 3, "(B, A, D)")
    check_shape("text", text, 3, "(B, A, D)")
    if image.shape != text.shape:
        raise LossInputError(
            f"image and text must have the same shape, got {tuple(image.shape)} and {tuple(text.shape)}"
        )
    for name, t in (("valid", valid), ("normal", normal), ("text_ids", text_ids), ("finding_ids", finding_ids)):
        if t is None and name == "finding_ids":
            continue
        check_shape(name, t, 2, "(B, A)")
        if tuple(t.shape) != tuple(image.shape[:2]):
            raise LossInputError(f"{name} must be (B, A) = {tuple(image.shape[:2])}, got {tuple(t.shape)}")
    if valid.dtype != torch.bool or normal.dtype != torch.bool:
        raise LossInputError("valid and normal must be bool tensors")
    if text_ids.dtype.is_floating_point or (finding_ids is not None and finding_ids.dtype.is_floating_point):
        raise LossInputError("text_ids and finding_ids must be integer tensors")


def _targets(normal: torch.Tensor, ids: torch.Tensor, fids: torch.Tensor | None, dtype) -> torch.Tensor:
    """I + S before row normalisation: S or-s the reasons for a false negative, so every entry is 0 or 1."""
    same = (normal[:, None] & normal[None, :]) | (ids[:, None] == ids[None, :])
    if fids is not None:
        abn = ~normal
        same = same | (abn[:, None] & abn[None, :] & (fids[:, None] == fids[None, :]))
    eye = torch.eye(normal.shape[0], dtype=torch.bool, device=normal.device)
    return (same | eye).to(dtype)


def _soft_ce_rows(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over the given rows of -sum_j T_ij log softmax_j."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum()


def fvlm_loss_terms(
    image: torch.Tensor,
    text: torch.Tensor,
    valid: torch.Tensor,
    normal: torch.Tensor,
    text_ids: torch.Tensor,
    temperature: torch.Tensor | float,
    *,
    finding_ids: torch.Tensor | None = None,
    group: dist.ProcessGroup | None = None,
    local: bool = False,
) -> FvlmOutput:
    """The fVLM loss with its per-anatomy terms (see module doc); distributed when a process group is active,
    unless `local` (then this process's batch alone)."""
    _check(image, text, valid, normal, text_ids, finding_ids)
    zi, zt = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    temp = as_scalar("temperature", temperature, zi)
    distributed = dist_active(group) and not local
    if not distributed:
        lo, hi = 0, zi.shape[0]
        zi_all, zt_all, v_all, n_all, id_all = zi, zt, valid, normal, text_ids
        f_all = finding_ids
    else:
        sizes = all_gather_sizes(zi.shape[0], zi.device, group)
        rank = dist.get_rank(group)
        lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
        zi_all, zt_all = all_gather_rows(zi, sizes, group, True), all_gather_rows(zt, sizes, group, True)
        v_all, n_all = all_gather_rows(valid, sizes, group), all_gather_rows(normal, sizes, group)
        id_all = all_gather_rows(text_ids, sizes, group)
        f_all = None if finding_ids is None else all_gather_rows(finding_ids, sizes, group)
    n_anat = zi.shape[1]
    per = torch.zeros(n_anat, dtype=zi.dtype, device=zi.device)
    used = torch.zeros(n_anat, dtype=torch.bool, device=zi.device)
    rows = torch.zeros(n_anat, dtype=torch.int64, device=zi.device)
    loss = (zi.sum() + zt.sum()) * 0.0 + temp * 0.0  # zero that still reaches every input
    for a in range(n_anat):
        share, qualified, n_rows = _anatomy_share(zi_all, zt_all, v_all, n_all, id_all, f_all, temp, lo, hi, a)
        rows[a] = n_rows
        used[a] = qualified
        if share is not None:
            loss = loss + share
            per[a] = share.detach()
    if distributed:
        dist.all_reduce(per, op=dist.ReduceOp.SUM, group=group)
    return FvlmOutput(loss, per, used, rows)


def _anatomy_share(zi_all, zt_all, valid, normal, ids, fids, temp, lo, hi, a):
    idx = torch.nonzero(valid[:, a], as_tuple=False).flatten()
    n_rows = int(idx.numel())
    nrm = normal[idx, a]
    if n_rows == 0 or bool(nrm.all()):
        return None, False, n_rows
    t = _targets(nrm, ids[idx, a], None if fids is None else fids[idx, a], zi_all.dtype)
    if bool((t == t.flatten()[0]).all()):
        return None, False, n_rows
    t = t / t.sum(1, keepdim=True)
    mine = ((idx >= lo) & (idx < hi)).nonzero(as_tuple=False).flatten()
    if mine.numel() == 0:
        return None, True, n_rows
    img, txt = zi_all[idx, a], zt_all[idx, a]
    i2t = _soft_ce_rows(img[mine] @ txt.T / temp, t[mine])
    t2i = _soft_ce_rows(txt[mine] @ img.T / temp, t[mine])
    return (i2t + t2i) / (2.0 * n_rows), True, n_rows


def fvlm_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    valid: torch.Tensor,
    normal: torch.Tensor,
    text_ids: torch.Tensor,
    temperature: torch.Tensor | float,
    *,
    finding_ids: torch.Tensor | None = None,
    group: dist.ProcessGroup | None = None,
) -> torch.Tensor:
    """Scalar fVLM loss (this process's share when distributed); `fvlm_loss_terms` also gives per-anatomy terms."""
    return fvlm_loss_terms(image, text, valid, normal, text_ids, temperature, finding_ids=finding_ids, group=group).loss


class FvlmLoss(nn.Module):
    """`fvlm_loss_terms` with its own learnable temperature; distributed automatically under a process group."""

    def __init__(self, temperature_init: float = TEMPERATURE_INIT, disease_aware: bool = False):
        super().__init__()
        self.temp = FvlmTemperature(temperature_init)
        self.disease_aware = disease_aware

    def forward(self, image, text, valid, normal, text_ids, finding_ids=None) -> FvlmOutput:
        if self.disease_aware and finding_ids is None:
            raise LossInputError("disease-aware fVLM loss needs finding_ids")
        return fvlm_loss_terms(image, text, valid, normal, text_ids, self.temp(),
                               finding_ids=finding_ids if self.disease_aware else None)  # fmt: skip
