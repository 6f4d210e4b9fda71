"""Soft-target contrastive loss: InfoNCE at identity targets, a float64 loop written from the issue's text (values
and gradients, with and without the intra-modal terms), target normalisation, bad inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from radfinder.losses import LossInputError, soft_contrastive_loss


def clip_infonce(image, text, temperature):
    zi, zt = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    logits = zi @ zt.T / temperature
    labels = torch.arange(len(zi))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def reference_loop(image, text, targets, temperature, intra_weight=0.0):
    """From the text: logits = image.text^T / temperature; image-to-text targets = rows of W / their sums,
    text-to-image targets = rows of W^T / their sums; mean of the two soft CEs (each a mean over rows); intra terms
    against W with the diagonal removed from logits and targets, over rows with positive off-diagonal mass."""
    b = image.shape[0]
    zi = [image[i] / torch.sqrt((image[i] ** 2).sum()) for i in range(b)]
    zt = [text[i] / torch.sqrt((text[i] ** 2).sum()) for i in range(b)]

    def ce(za, zb, w, drop_diag):
        total, rows = 0.0, 0
        for i in range(b):
            cols = [j for j in range(b) if not (drop_diag and j == i)]
            mass = sum(float(w[i][j]) for j in cols)
            if mass == 0:
                continue
            logits = torch.stack([(za[i] * zb[j]).sum() / temperature for j in cols])
            lse = torch.logsumexp(logits, 0)
            total = total - sum(float(w[i][j]) / mass * (logits[k] - lse) for k, j in enumerate(cols))
            rows += 1
        return total / rows if rows else 0.0

    w = targets.tolist()
    wt = targets.T.tolist()
    loss = (ce(zi, zt, w, False) + ce(zt, zi, wt, False)) / 2
    if intra_weight:
        loss = loss + intra_weight * (ce(zi, zi, w, True) + ce(zt, zt, w, True)) / 2
    return loss


def batch(b=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(b, d, generator=g, dtype=torch.float64)
    text = torch.randn(b, d, generator=g, dtype=torch.float64) + image
    w = torch.rand(b, b, generator=g, dtype=torch.float64)
    w = w * (torch.rand(b, b, generator=g) < 0.5) + 2.0 * torch.eye(b, dtype=torch.float64)  # asymmetric, sparse
    return image, text, w


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_identity_targets_give_infonce(temperature):
    image, text, _ = batch()
    got = soft_contrastive_loss(image.float(), text.float(), torch.eye(6), temperature)
    ref = clip_infonce(image.float(), text.float(), temperature)
    assert abs(got.item() - ref.item()) < 1e-6
    got64 = soft_contrastive_loss(image, text, 3.0 * torch.eye(6, dtype=torch.float64), temperature)
    torch.testing.assert_close(got64, clip_infonce(image, text, temperature), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("intra_weight", [0.0, 0.3])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_float64_loop_values_and_gradients(intra_weight, seed):
    image, text, w = batch(seed=seed)
    x = [image.clone().requires_grad_(True), text.clone().requires_grad_(True),
         torch.tensor(0.1, dtype=torch.float64, requires_grad=True)]  # fmt: skip
    got = soft_contrastive_loss(x[0], x[1], w, x[2], intra_weight)
    y = [t.detach().clone().requires_grad_(True) for t in x]
    ref = reference_loop(y[0], y[1], w, y[2], intra_weight)
    torch.testing.assert_close(got, ref.detach(), rtol=1e-12, atol=1e-12)
    for g, r in zip(torch.autograd.grad(got, x), torch.autograd.grad(ref, y), strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def test_targets_need_not_be_normalised_and_intra_is_off_by_default():
    image, text, w = batch(seed=3)
    a = soft_contrastive_loss(image, text, w, 0.2)
    b = soft_contrastive_loss(image, text, w * 7.5, 0.2)
    torch.testing.assert_close(a, b)
    assert soft_contrastive_loss(image, text, w, 0.2, intra_weight=0.5).item() != a.item()
    # identity targets leave the intra terms without off-diagonal mass: they add nothing
    eye = torch.eye(6, dtype=torch.float64)
    torch.testing.assert_close(
        soft_contrastive_loss(image, text, eye, 0.2, 1.0), soft_contrastive_loss(image, text, eye, 0.2)
    )


def test_bad_inputs():
    image, text, w = batch()
    with pytest.raises(LossInputError, match="non-negative"):
        soft_contrastive_loss(image, text, -w, 0.1)
    z = w.clone()
    z[2] = 0
    with pytest.raises(LossInputError, match="positive sum"):
        soft_contrastive_loss(image, text, z, 0.1)
    with pytest.raises(LossInputError, match=r"\(B, B\)"):
        soft_contrastive_loss(image, text, w[:3], 0.1)
    with pytest.raises(LossInputError, match="intra_weight"):
        soft_contrastive_loss(image, text, w, 0.1, -1.0)
