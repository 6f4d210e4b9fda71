"""The demo's frozen window encoder: the `tiny` ViT, briefly pre-trained on the TRAIN split, then frozen.

Why: the official window encoder (SPECTRE ViT-L) is not available offline, and a randomly initialised ViT gives
window features in which small findings (nodules, calcifications, lines) are averaged away (measured: see the
README's "Demo results"). In place of SPECTRE's large-scale pre-training the demo runs a short supervised one on
the synthetic training studies only (never the valid split), which then stays frozen like SPECTRE:

* per depth token of every window (the `axis2` features): which of the 18 findings has a lesion box overlapping
  that 12 mm slab of the window (BCE), and where the slab sits relative to the lung apex, carina and right
  diaphragm dome (regression, in 100 mm units), so that depth features know the anatomy;
* per window (`cls` and `patch_average`): which findings overlap the window at all (BCE).

Targets come from the cohort's ground truth (`truth.jsonl`: lesion boxes and anatomy landmarks in RAS mm),
which a real deployment replaces by its pre-trained encoder. The heads used here are thrown away.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..text.findings import CTRATE_FINDINGS

N_FIND = len(CTRATE_FINDINGS)
LANDMARKS = ("apex_z_mm", "carina_z_mm", "right_dome_z_mm")


@dataclass
class WindowTargets:
    """Pre-training targets of the non-empty windows of one preprocessed scan."""

    windows: np.ndarray  # (n, 1, wh, ww, wd) float16
    depth: np.ndarray  # (n, T, 18) float32 0/1: finding overlaps the window's depth-token slab
    window: np.ndarray  # (n, 18) float32 0/1: finding overlaps the window
    landmarks: np.ndarray  # (n, T, 3) float32: (slab centre z - landmark z) / 100 mm


def window_targets(pre, truth: dict, depth_tokens: int, keep_empty: bool = False) -> WindowTargets:
    """Targets for every window of a `Preprocessed` scan from its truth record (lesion boxes, landmarks)."""
    win = pre.windows()
    loc = pre.window_locations()  # (3, N) voxel offsets
    wsize = np.asarray(pre.window, dtype=np.float64)
    aff = np.asarray(pre.affine, dtype=np.float64)
    n = win.shape[0]
    t = depth_tokens
    depth = np.zeros((n, t, N_FIND), np.float32)
    whole = np.zeros((n, N_FIND), np.float32)
    marks = np.zeros((n, t, len(LANDMARKS)), np.float32)
    boxes = [
        (CTRATE_FINDINGS.index(les["finding"]), np.asarray(les["bbox_ras_mm"], np.float64))
        for les in truth.get("lesions", [])
        if les.get("finding") in CTRATE_FINDINGS
    ]
    land = np.array([float(truth["anatomy"][k]) for k in LANDMARKS], np.float64)
    cell = wsize[2] / t
    for i in range(n):
        lo_v, hi_v = loc[:, i] - 0.5, loc[:, i] + wsize - 0.5
        a, b = _world(aff, lo_v), _world(aff, hi_v)
        lo_w, hi_w = np.minimum(a, b), np.maximum(a, b)
        zs = [_world(aff, loc[:, i] + np.array([0, 0, (k + 0.5) * cell - 0.5]))[2] for k in range(t)]
        marks[i] = (np.asarray(zs)[:, None] - land[None, :]) / 100.0
        for f, box in boxes:
            if np.any(box[1] < lo_w) or np.any(box[0] > hi_w):
                continue
            whole[i, f] = 1.0
            for k in range(t):
                z0 = _world(aff, loc[:, i] + np.array([0, 0, k * cell - 0.5]))[2]
                z1 = _world(aff, loc[:, i] + np.array([0, 0, (k + 1) * cell - 0.5]))[2]
                if box[1, 2] >= min(z0, z1) and box[0, 2] <= max(z0, z1):
                    depth[i, k, f] = 1.0
    keep = np.ones(n, bool) if keep_empty else win.reshape(n, -1).max(axis=1) > 0
    return WindowTargets(win[keep].astype(np.float16), depth[keep], whole[keep], marks[keep])


def _world(aff: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return aff[:3, :3] @ np.asarray(ijk, np.float64) + aff[:3, 3]


class PretrainHeads(nn.Module):
    """Linear heads on the window encoder's outputs; discarded after pre-training."""

    def __init__(self, dim: int):
        super().__init__()
        self.depth = nn.Linear(dim, N_FIND + len(LANDMARKS))
        self.cls = nn.Linear(dim, N_FIND)
        self.avg = nn.Linear(dim, N_FIND)

    def loss(self, feats, y_depth, y_window, y_marks) -> torch.Tensor:
        d = self.depth(feats.axis2)  # (n, T, 18 + 3)
        bce = nn.functional.binary_cross_entropy_with_logits
        return (
            bce(d[..., :N_FIND], y_depth)
            + 0.5 * bce(self.cls(feats.cls), y_window)
            + 0.5 * bce(self.avg(feats.patch_average), y_window)
            + nn.functional.smooth_l1_loss(d[..., N_FIND:], y_marks)
        )


def pretrain_window_encoder(
    encoder: nn.Module,
    scans: Sequence[WindowTargets],
    *,
    epochs: float = 2.0,
    batch: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train `encoder` (in place) with the heads above on the windows of `scans`; returns a small summary."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = np.concatenate([s.windows for s in scans])
    yd = torch.from_numpy(np.concatenate([s.depth for s in scans]))
    yw = torch.from_numpy(np.concatenate([s.window for s in scans]))
    ym = torch.from_numpy(np.concatenate([s.landmarks for s in scans]))
    heads = PretrainHeads(encoder.feature_dim)
    params = list(encoder.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    n = len(x)
    steps = max(1, int(round(epochs * n / batch)))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    encoder.train()
    t0 = time.perf_counter()
    losses: list[float] = []
    order = np.concatenate([rng.permutation(n) for _ in range(int(np.ceil(steps * batch / n)) + 1)])
    for step in range(steps):
        idx = np.sort(order[step * batch : (step + 1) * batch])
        xb = torch.from_numpy(x[idx].astype(np.float32))
        loss = heads.loss(encoder(xb), yd[idx], yw[idx], ym[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if log and (step + 1) % max(1, steps // 10) == 0:
            log(f"  pretrain step {step + 1}/{steps}  loss {np.mean(losses[-20:]):.4f}")
    encoder.eval()
    return {
        "windows": int(n),
        "steps": steps,
        "batch": batch,
        "epochs": epochs,
        "first_loss": float(np.mean(losses[: max(1, steps // 10)])),
        "final_loss": float(np.mean(losses[-max(1, steps // 10) :])),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def read_truth(path: str | Path) -> dict[str, dict]:
    """truth.jsonl -> {volume key (file name without .nii.gz): study truth}."""
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        t = json.loads(line)
        for v in t["volumes"]:
            out[v["name"].removesuffix(".nii.gz")] = t
    return out


@torch.no_grad()
def standardize_features(encoder: nn.Module, windows: np.ndarray, batch: int = 16) -> dict:
    """Fold a per-channel standardisation of the patch tokens (mean 0, std 1 over `windows`, TRAIN windows) into
    the encoder's final LayerNorm, so cls, patch_average and axis2 are centred. Without it the window features
    share one large constant component (norm ~8 against a per-channel spread ~0.3) and every scan's combiner
    output starts nearly identical (cosine 0.997), from which the contrastive heads collapse."""
    norm = getattr(encoder, "norm", None)
    if not isinstance(norm, nn.LayerNorm) or not norm.elementwise_affine or not hasattr(encoder, "forward_tokens"):
        return {"standardized": False}
    encoder.eval()
    s1 = s2 = None
    count = 0
    for i in range(0, len(windows), batch):
        tok = encoder.forward_tokens(torch.from_numpy(windows[i : i + batch].astype(np.float32)))[:, 1:]
        t = tok.reshape(-1, tok.shape[-1]).double()
        s1 = t.sum(0) if s1 is None else s1 + t.sum(0)
        s2 = (t * t).sum(0) if s2 is None else s2 + (t * t).sum(0)
        count += t.shape[0]
    mu = s1 / count
    sd = (s2 / count - mu * mu).clamp_min(1e-8).sqrt()
    norm.weight.copy_((norm.weight.double() / sd).float())
    norm.bias.copy_(((norm.bias.double() - mu) / sd).float())
    return {"standardized": True, "mean_norm_before": float(mu.norm()), "mean_std_before": float(sd.mean())}
