"""Gradient caching: accumulated gradients equal one big batch (same dropout masks), for several splits."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from radfinder.losses import SigLipLoss, siglip_loss
from radfinder.train.gradcache import GradCache, GradCacheError, gradcache_backward

N, D_IMG, D_TXT, E = 12, 10, 7, 6


class Towers(nn.Module):
    def __init__(self, p_drop: float):
        super().__init__()
        self.img = nn.Sequential(nn.Linear(D_IMG, 16), nn.GELU(), nn.Dropout(p_drop), nn.Linear(16, E))
        self.txt = nn.Sequential(nn.Dropout(p_drop), nn.Linear(D_TXT, E))

    def forward(self, mb):
        x_img, x_txt = mb
        return self.img(x_img), self.txt(x_txt), x_img.shape[0]


def _setup(p_drop: float, seed: int = 0):
    torch.manual_seed(seed)
    model = Towers(p_drop).double()
    loss = SigLipLoss(t_init=1.5, bias_init=-2.0).double()
    g = torch.Generator().manual_seed(seed + 100)
    x_img = torch.randn(N, D_IMG, generator=g, dtype=torch.float64)
    x_txt = torch.randn(N, D_TXT, generator=g, dtype=torch.float64)
    return model, loss, x_img, x_txt


def _split(x_img, x_txt, sizes):
    out, start = [], 0
    for s in sizes:
        out.append((x_img[start : start + s], x_txt[start : start + s]))
        start += s
    return out


def _grads(*modules):
    return {f"{i}.{n}": p.grad.clone() for i, m in enumerate(modules) for n, p in m.named_parameters()}


def _zero(*modules):
    for m in modules:
        for p in m.parameters():
            p.grad = None


def _big_batch_reference(model, loss, mbs, rng_seed, extra=None):
    """One forward over all micro-batches (in the same order, so the same dropout masks) and one backward."""
    torch.manual_seed(rng_seed)
    outs = [model(mb) for mb in mbs]
    img = torch.cat([o[0] for o in outs])
    txt = torch.cat([o[1] for o in outs])
    total = loss(img, txt).loss
    if extra is not None:
        for mb, o in zip(mbs, outs, strict=True):
            total = total + extra(mb, o[0], o[1], o[2])
    total.backward()
    return total.detach(), torch.get_rng_state()


SPLITS = [[12], [6, 6], [4, 4, 4], [1] * 12, [5, 4, 3], [2, 7, 3]]


@pytest.mark.parametrize("p_drop", [0.0, 0.3])
@pytest.mark.parametrize("sizes", SPLITS, ids=lambda s: "-".join(map(str, s)))
def test_gradients_equal_big_batch(p_drop, sizes):
    model, loss, x_img, x_txt = _setup(p_drop)
    mbs = _split(x_img, x_txt, sizes)
    ref_value, ref_rng = _big_batch_reference(model, loss, mbs, rng_seed=7)
    ref = _grads(model, loss)
    _zero(model, loss)

    torch.manual_seed(7)
    res = GradCache(model, loss, verify=True).step(mbs)
    got = _grads(model, loss)
    assert got.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-9, atol=1e-12, msg=k)
    torch.testing.assert_close(res.loss, ref_value)
    assert res.num_samples == N and res.loss_output.num_negatives == N - 1
    # the RNG stream continues as after one pass, so the next step does not reuse these dropout masks
    assert torch.equal(torch.get_rng_state(), ref_rng)


def test_float32_and_chunked_loss_within_atol():
    model, loss, x_img, x_txt = _setup(0.2, seed=3)
    model, loss = model.float(), loss.float()
    loss.chunk_size = 5
    x_img, x_txt = x_img.float(), x_txt.float()
    mbs = _split(x_img, x_txt, [3, 4, 5])
    _big_batch_reference(model, loss, mbs, rng_seed=1)
    ref = _grads(model, loss)
    _zero(model, loss)
    torch.manual_seed(1)
    GradCache(model, loss).step(mbs)
    for k, v in _grads(model, loss).items():
        torch.testing.assert_close(v, ref[k], rtol=1e-5, atol=1e-6, msg=k)


def test_without_rng_replay_dropout_breaks_equality():
    # shows the replay is what makes dropout work: same setup, replay off -> different gradients
    model, loss, x_img, x_txt = _setup(0.5)
    mbs = _split(x_img, x_txt, [4, 4, 4])
    _big_batch_reference(model, loss, mbs, rng_seed=7)
    ref = _grads(model, loss)
    _zero(model, loss)
    torch.manual_seed(7)
    GradCache(model, loss, replay_rng=False).step(mbs)
    got = _grads(model, loss)
    assert any(not torch.allclose(got[k], ref[k], atol=1e-6) for k in ref)


def test_extra_per_micro_batch_losses():
    model, loss, x_img, x_txt = _setup(0.3, seed=5)
    mbs = _split(x_img, x_txt, [5, 4, 3])

    def extra(mb, img, txt, n):  # stands in for localization / prompt losses computed per micro-batch
        assert n == mb[0].shape[0]
        return 0.7 * (img**2).mean() + 0.1 * txt.sum() / n

    ref_value, _ = _big_batch_reference(model, loss, mbs, rng_seed=2, extra=extra)
    ref = _grads(model, loss)
    _zero(model, loss)
    torch.manual_seed(2)
    res = GradCache(model, loss, extra_loss_fn=extra).step(mbs)
    for k, v in _grads(model, loss).items():
        torch.testing.assert_close(v, ref[k], rtol=1e-9, atol=1e-12, msg=k)
    torch.testing.assert_close(res.loss + res.extra_loss_sum, ref_value)
    assert len(res.extra_losses) == 3


def test_functional_form_with_separate_towers_and_no_sync_calls():
    model, loss, x_img, x_txt = _setup(0.3, seed=6)
    mbs = _split(x_img, x_txt, [6, 6])
    _big_batch_reference(model, loss, mbs, rng_seed=4)
    ref = _grads(model, loss)
    _zero(model, loss)
    entered = []

    class NoSync:
        def __enter__(self):
            entered.append(1)

        def __exit__(self, *exc):
            return False

    torch.manual_seed(4)
    gradcache_backward(mbs, lambda mb: model.img(mb[0]), lambda mb: model.txt(mb[1]),
                       lambda i, t: siglip_loss(i, t, loss.t, loss.b), no_sync=NoSync)
    for k, v in _grads(model, loss).items():
        torch.testing.assert_close(v, ref[k], rtol=1e-9, atol=1e-12, msg=k)
    assert len(entered) == 1  # all but the last micro-batch


def test_verify_catches_non_replayable_randomness():
    model, loss, x_img, x_txt = _setup(0.0)
    rnd = random.Random(0)

    def noisy(mb):
        img, txt, n = model(mb)
        return img + rnd.random(), txt, n  # Python's RNG is not replayed

    with pytest.raises(GradCacheError, match="differ"):
        GradCache(noisy, loss, verify=True).step(_split(x_img, x_txt, [6, 6]))


def test_bad_embed_outputs():
    model, loss, x_img, x_txt = _setup(0.0)
    with pytest.raises(GradCacheError, match="no micro-batches"):
        GradCache(model, loss).step([])
    with pytest.raises(GradCacheError, match="must return"):
        GradCache(lambda mb: model.img(mb[0]), loss).step(_split(x_img, x_txt, [12]))
