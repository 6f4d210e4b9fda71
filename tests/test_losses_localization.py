"""Gaussian localization loss: reference vectors, a plain float64 loop re-derivation, targets, errors."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from radfinder.losses import (
    GaussianLocalizationLoss,
    LossInputError,
    gaussian_localization_loss,
    gaussian_localization_loss_from_index,
)
from radfinder.losses.localization import soft_depth_target


def slow_target(target_idx: int, valid: list[bool], sigma: float) -> list[float]:
    d = len(valid)
    target = [1.0 / (1.0 + 1e-8) if k == target_idx else 0.0 for k in range(d)]  # SPEC: onehot / (sum + 1e-8)
    if sigma <= 0:
        return target
    r = max(int(3 * sigma + 0.5), 1)
    taps = [math.exp(-0.5 * (x / sigma) ** 2) for x in range(-r, r + 1)]
    total = sum(taps)
    taps = [v / total for v in taps]
    blurred = []
    for k in range(d):  # correlation with zero padding (the kernel is symmetric, so also a convolution)
        acc = 0.0
        for x in range(-r, r + 1):
            if 0 <= k + x < d:
                acc += taps[x + r] * target[k + x]
        blurred.append(acc)
    s = sum(blurred) + 1e-8
    return [v / s if valid[k] else 0.0 for k, v in enumerate(blurred)]


def slow_loss(slice_emb, snippet_emb, target_mask, valid_mask, sigma, tau):
    """Loop form in float64 torch scalars (so autograd gives reference gradients)."""
    s_count, d, _ = slice_emb.shape
    total = slice_emb.new_zeros(())
    for s in range(s_count):
        valid = [bool(v) for v in valid_mask[s]]
        tgt = slow_target(int(target_mask[s].nonzero()[0, 0]), valid, sigma)
        u = snippet_emb[s] / torch.sqrt((snippet_emb[s] ** 2).sum())
        logits = []
        for k in range(d):
            if valid[k]:
                e = slice_emb[s, k] / torch.sqrt((slice_emb[s, k] ** 2).sum())
                logits.append((e * u).sum() / tau)
        log_z = torch.log(sum(torch.exp(v) for v in logits))
        vi = 0
        for k in range(d):
            if valid[k]:
                total = total - tgt[k] * (logits[vi] - log_z)
                vi += 1
    return total / s_count


def close(a, b) -> bool:
    a, b = float(a), float(b)
    return abs(a - b) <= max(1e-6, 2e-7 * abs(b))


def test_reference_vectors(compat_dir):
    tv = load_file(str(compat_dir / "tv_losses.safetensors"))
    cases = [(float(m.group(1)), float(m.group(2)), k) for k in tv
             if (m := re.fullmatch(r"loc\.sigma([0-9.]+)_tau([0-9.]+)\.loss", k))]
    assert len(cases) >= 1
    for sigma, tau, key in cases:
        got = gaussian_localization_loss(tv["loc.slice_emb"], tv["loc.snippet_emb"], tv["loc.target_depth_mask"],
                                         tv["loc.valid_depth_mask"], sigma=sigma, tau=tau)
        assert close(got, tv[key]), (key, float(got), float(tv[key]))


def _inputs(seed=0, s=4, d=14, e=6):
    g = torch.Generator().manual_seed(seed)
    slice_emb = torch.randn(s, d, e, generator=g, dtype=torch.float64, requires_grad=True)
    snippet_emb = torch.randn(s, e, generator=g, dtype=torch.float64, requires_grad=True)
    lengths = [d, 9, 5, d][:s]
    targets = [3, 8, 0, d - 1][:s]  # interior, last valid cell, first cell, last cell
    valid = torch.zeros(s, d, dtype=torch.bool)
    target = torch.zeros(s, d, dtype=torch.bool)
    for i, (n, t) in enumerate(zip(lengths, targets, strict=True)):
        valid[i, :n] = True
        target[i, t] = True
    return slice_emb, snippet_emb, target, valid


@pytest.mark.parametrize("sigma,tau", [(2.0, 0.1), (1.0, 0.5), (0.0, 0.1), (0.4, 0.2), (3.0, 1.0)])
def test_value_and_grad_match_loops(sigma, tau):
    slice_emb, snippet_emb, target, valid = _inputs()
    got = gaussian_localization_loss(slice_emb, snippet_emb, target, valid, sigma=sigma, tau=tau)
    want = slow_loss(slice_emb, snippet_emb, target, valid, sigma, tau)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g_got = torch.autograd.grad(got, (slice_emb, snippet_emb))
    g_want = torch.autograd.grad(want, (slice_emb, snippet_emb))
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        assert torch.isfinite(a).all()


def test_invalid_cells_get_no_gradient_and_do_not_matter():
    slice_emb, snippet_emb, target, valid = _inputs(seed=1)
    loss = gaussian_localization_loss(slice_emb, snippet_emb, target, valid)
    (g,) = torch.autograd.grad(loss, slice_emb)
    assert (g[~valid] == 0).all()
    changed = slice_emb.detach().clone()
    changed[~valid] = 1e3
    torch.testing.assert_close(gaussian_localization_loss(changed, snippet_emb, target, valid), loss)


def test_sigma_zero_is_cross_entropy_on_valid_cells():
    slice_emb, snippet_emb, target, valid = _inputs(seed=2)
    got = gaussian_localization_loss(slice_emb, snippet_emb, target, valid, sigma=0.0, tau=0.25)
    cos = torch.einsum("sde,se->sd", F.normalize(slice_emb, dim=-1), F.normalize(snippet_emb, dim=-1)) / 0.25
    want = torch.stack([F.cross_entropy(cos[i, valid[i]][None], target[i, valid[i]].nonzero()[0])
                        for i in range(len(cos))]).mean()
    torch.testing.assert_close(got, want)


def test_target_is_not_renormalised_after_masking():
    valid = torch.zeros(1, 20, dtype=torch.bool)
    valid[0, :10] = True
    at_edge = torch.zeros(1, 20, dtype=torch.bool)
    at_edge[0, 9] = True
    tgt = soft_depth_target(at_edge, valid, sigma=2.0, dtype=torch.float64)
    assert 0.4 < float(tgt.sum()) < 0.7  # about half the Gaussian mass falls outside the valid range
    assert (tgt[~valid] == 0).all()
    assert tgt[0, 9] == tgt.max()
    interior = torch.zeros(1, 20, dtype=torch.bool)
    interior[0, 10] = True
    assert float(soft_depth_target(interior, torch.ones(1, 20, dtype=torch.bool), 2.0).sum()) == pytest.approx(1.0)


def test_index_target_wrapper_and_module():
    slice_emb, snippet_emb, target, valid = _inputs(seed=3)
    idx = target.long().argmax(-1)
    want = gaussian_localization_loss(slice_emb, snippet_emb, target, valid)
    torch.testing.assert_close(gaussian_localization_loss_from_index(slice_emb, snippet_emb, idx, valid), want)
    mod = GaussianLocalizationLoss(sigma=2.0, tau=0.1)
    torch.testing.assert_close(mod(slice_emb, snippet_emb, idx, valid), want)
    torch.testing.assert_close(mod(slice_emb, snippet_emb, target, valid), want)
    with pytest.raises(LossInputError, match=r"\[0, 14\)"):
        gaussian_localization_loss_from_index(slice_emb, snippet_emb, idx + 20, valid)


def test_bad_targets_and_shapes():
    slice_emb, snippet_emb, target, valid = _inputs(seed=4)
    two = target.clone()
    two[0, 0] = True
    with pytest.raises(LossInputError, match=r"rows \[0\]"):
        gaussian_localization_loss(slice_emb, snippet_emb, two, valid)
    outside = torch.zeros_like(target)
    outside[:, -1] = True  # row 1 and 2 have fewer valid cells
    with pytest.raises(LossInputError, match=r"rows \[1, 2\]"):
        gaussian_localization_loss(slice_emb, snippet_emb, outside, valid)
    with pytest.raises(LossInputError, match="bool"):
        gaussian_localization_loss(slice_emb, snippet_emb, target.float(), valid)
    with pytest.raises(LossInputError, match="snippet_emb"):
        gaussian_localization_loss(slice_emb, snippet_emb[:2], target, valid)
    with pytest.raises(LossInputError, match="tau"):
        gaussian_localization_loss(slice_emb, snippet_emb, target, valid, tau=0.0)


def test_empty_snippet_batch_gives_zero_with_graph():
    slice_emb = torch.randn(0, 5, 3, requires_grad=True)
    loss = gaussian_localization_loss(slice_emb, torch.randn(0, 3), torch.zeros(0, 5, dtype=torch.bool),
                                      torch.zeros(0, 5, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
