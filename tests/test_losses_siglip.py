"""SigLIP loss: reference vectors, a plain double-loop float64 re-derivation, chunked == direct, the module."""

from __future__ import annotations

import math
import re

import pytest
import torch
from safetensors.torch import load_file

from radfinder.losses import LossInputError, SigLipLoss, batch_bias_init, siglip_loss


def slow_siglip(img, txt, t, b):
    """SPEC 7 written out with Python loops (float64): returns (loss, pos_loss, neg_loss)."""
    n = img.shape[0]
    zi = [img[i] / torch.clamp(torch.sqrt((img[i] * img[i]).sum()), min=1e-12) for i in range(n)]
    zt = [txt[j] / torch.clamp(torch.sqrt((txt[j] * txt[j]).sum()), min=1e-12) for j in range(n)]
    pos = img.new_zeros(())
    neg = img.new_zeros(())
    for i in range(n):
        for j in range(n):
            logit = torch.exp(t) * (zi[i] * zt[j]).sum() + b
            z = 1.0 if i == j else -1.0
            term = -torch.log(1.0 / (1.0 + torch.exp(-z * logit)))
            if i == j:
                pos = pos + term
            else:
                neg = neg + term
    return (pos + neg) / n, pos / n, neg / n


def close(a, b) -> bool:
    """SPEC 13.5: atol 1e-6 or rtol 2e-7, whichever is larger."""
    a, b = float(a), float(b)
    return abs(a - b) <= max(1e-6, 2e-7 * abs(b))


def _inputs(n=6, e=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, e, generator=g, dtype=dtype)
    txt = torch.randn(n, e, generator=g, dtype=dtype)
    # make a few pairs similar so positives and negatives both matter
    txt[: n // 2] += 2 * img[: n // 2]
    t = torch.tensor(1.3, dtype=dtype)
    b = torch.tensor(-2.5, dtype=dtype)
    return [x.requires_grad_(True) for x in (img, txt, t, b)]


def _grads(loss, inputs):
    return torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("chunk_size", [None, 1, 4, 64])
def test_reference_vectors(compat_dir, chunk_size):
    tv = load_file(str(compat_dir / "tv_losses.safetensors"))
    cases = sorted({m.group(1) for k in tv if (m := re.fullmatch(r"siglip\.(case\d+)\.loss", k))})
    assert cases, "no siglip cases in tv_losses.safetensors"
    for case in cases:
        out = siglip_loss(tv["siglip.zimg"], tv["siglip.ztxt"], tv[f"siglip.{case}.t"], tv[f"siglip.{case}.b"],
                          chunk_size=chunk_size)
        assert close(out.loss, tv[f"siglip.{case}.loss"]), (case, float(out.loss))
        assert close(out.pos_loss, tv[f"siglip.{case}.pos_loss"]), case
        assert close(out.neg_loss, tv[f"siglip.{case}.neg_loss"]), case


@pytest.mark.parametrize("chunk_size", [None, 1, 2, 5])
def test_value_and_grad_match_double_loop(chunk_size):
    inputs = _inputs()
    ref = slow_siglip(*inputs)
    out = siglip_loss(*inputs, chunk_size=chunk_size)
    for got, want in zip((out.loss, out.pos_loss, out.neg_loss), ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for got, want in zip(_grads(out.loss, inputs), _grads(ref[0], inputs), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_grad_of_pos_and_neg_parts_separately():
    # the chunked backward handles the two outputs' upstream gradients separately
    inputs = _inputs(n=5, seed=3)
    ref = slow_siglip(*inputs)
    out = siglip_loss(*inputs, chunk_size=2)
    obj_ref = 0.3 * ref[1] - 1.7 * ref[2]
    obj = 0.3 * out.pos_loss - 1.7 * out.neg_loss
    for got, want in zip(_grads(obj, inputs), _grads(obj_ref, inputs), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 8, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunked_equals_direct(chunk_size, dtype):
    inputs = _inputs(n=8, e=16, seed=1, dtype=dtype)
    direct = siglip_loss(*inputs)
    chunked = siglip_loss(*inputs, chunk_size=chunk_size)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for name in ("loss", "pos_loss", "neg_loss", "pos_logit_mean", "neg_logit_mean"):
        torch.testing.assert_close(getattr(chunked, name), getattr(direct, name), **tol)
    for got, want in zip(_grads(chunked.loss, inputs), _grads(direct.loss, inputs), strict=True):
        torch.testing.assert_close(got, want, **tol)


def test_chunked_gradcheck():
    inputs = _inputs(n=4, e=3, seed=2)
    assert torch.autograd.gradcheck(lambda *x: siglip_loss(*x, chunk_size=3).loss, inputs)


def _saved_numels(fn) -> list[int]:
    sizes: list[int] = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sizes


def test_chunked_never_keeps_a_batch_square_for_backward():
    n, e = 64, 4  # n*n = 4096 is far above anything of size n*e or n*chunk
    img = torch.randn(n, e, requires_grad=True)
    txt = torch.randn(n, e, requires_grad=True)
    t, b = torch.tensor(2.0, requires_grad=True), torch.tensor(-3.0, requires_grad=True)
    direct = _saved_numels(lambda: siglip_loss(img, txt, t, b).loss.backward())
    assert max(direct) >= n * n  # sanity: the direct form does keep the logit matrix
    chunked = _saved_numels(lambda: siglip_loss(img, txt, t, b, chunk_size=8).loss.backward())
    assert max(chunked) <= n * e


def test_diagnostics_and_counts():
    img, txt, t, b = _inputs(n=5, seed=4)
    out = siglip_loss(img, txt, t, b)
    zi = torch.nn.functional.normalize(img, dim=-1)
    zt = torch.nn.functional.normalize(txt, dim=-1)
    logits = zi @ zt.T * t.exp() + b
    eye = torch.eye(5, dtype=torch.bool)
    torch.testing.assert_close(out.pos_logit_mean, logits[eye].mean().detach())
    torch.testing.assert_close(out.neg_logit_mean, logits[~eye].mean().detach())
    assert out.batch_size == 5 and out.num_negatives == 4
    assert set(out.log_dict()) >= {"siglip/loss", "siglip/num_negatives"}


def test_normalises_inside():
    img, txt, t, b = _inputs(seed=5)
    a = siglip_loss(img, txt, t, b).loss
    c = siglip_loss(img * 7.0, txt * 0.01, t, b).loss
    torch.testing.assert_close(a, c)


def test_bad_inputs():
    with pytest.raises(LossInputError, match="same shape"):
        siglip_loss(torch.randn(3, 4), torch.randn(2, 4), 1.0, 0.0)
    with pytest.raises(LossInputError, match=r"\(B, E\)"):
        siglip_loss(torch.randn(3), torch.randn(3), 1.0, 0.0)
    with pytest.raises(LossInputError, match="scalar"):
        siglip_loss(torch.randn(3, 4), torch.randn(3, 4), torch.ones(2), 0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        siglip_loss(torch.randn(3, 4), torch.randn(3, 4), 1.0, 0.0, chunk_size=0)


def test_module_defaults_and_learning():
    mod = SigLipLoss()
    assert mod.t.item() == pytest.approx(math.log(10))
    assert mod.b.item() == -10.0
    assert {n for n, _ in mod.named_parameters()} == {"t", "b"}
    img, txt = torch.randn(4, 8), torch.randn(4, 8)
    out = mod(img, txt)
    torch.testing.assert_close(out.loss, siglip_loss(img, txt, math.log(10), -10.0).loss)
    out.loss.backward()
    assert mod.t.grad is not None and mod.b.grad is not None


def test_module_batch_bias_init():
    mod = SigLipLoss(bias_init="batch", batch_size=65)
    assert mod.b.item() == pytest.approx(-math.log(64))
    # the defining property: sigmoid(b) equals the positive prior 1/B
    assert torch.sigmoid(torch.tensor(batch_bias_init(65), dtype=torch.float64)).item() == pytest.approx(1 / 65)
    with pytest.raises(LossInputError, match="batch_size"):
        SigLipLoss(bias_init="batch")
    with pytest.raises(LossInputError, match=">= 2"):
        SigLipLoss(bias_init="batch", batch_size=1)
    with pytest.raises(LossInputError):
        SigLipLoss(bias_init="zero")
    frozen = SigLipLoss(t_init=1.0, bias_init=0.5, learnable=False)
    assert list(frozen.parameters()) == [] and float(frozen.b) == 0.5
