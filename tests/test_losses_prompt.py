"""Disease-prompt BCE: reference vectors, a plain float64 loop re-derivation, prompt selection, weights."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from radfinder.losses import (
    LossInputError,
    pos_weight_from_labels,
    prompt_bce_loss,
    question_group_weights,
    select_prompts,
)


def slow_prompt_loss(img, prompts, labels, t, pos_weight, question_weight, ls):
    """Element-wise loops in float64 (b omitted on purpose: it cancels)."""
    bsz, nq = labels.shape
    total = img.new_zeros(())
    count = 0
    for i in range(bsz):
        for q in range(nq):
            if int(labels[i, q]) == -1:
                continue
            diff = torch.exp(t) * ((img[i] * prompts[i, q, 0]).sum() - (img[i] * prompts[i, q, 1]).sum())
            y = float(labels[i, q]) * (1 - 2 * ls) + ls
            log_p = -torch.log1p(torch.exp(-diff))
            log_not_p = -torch.log1p(torch.exp(diff))
            qw = 1.0 if question_weight is None else question_weight[q]
            total = total - (pos_weight[q] * y * log_p + (1 - y) * log_not_p) * qw
            count += 1
    return total / count


def close(a, b) -> bool:
    a, b = float(a), float(b)
    return abs(a - b) <= max(1e-6, 2e-7 * abs(b))


def test_reference_vectors(compat_dir):
    tv = load_file(str(compat_dir / "tv_losses.safetensors"))
    keys = [k for k in tv if re.fullmatch(r"prompt\.\w+\.(no)?qw\.ls[0-9.]+\.loss", k)]
    assert keys
    n_img = tv["prompt.img_emb"].shape[0]
    for key in keys:
        m = re.fullmatch(r"prompt\.(\w+)\.(qw|noqw)\.ls([0-9.]+)\.loss", key)
        mode, qw, ls = m.group(1), m.group(2), float(m.group(3))
        stored = f"prompt.{mode}.sampled_prompt_emb"
        sel = tv[stored] if stored in tv else select_prompts(tv["prompt.prompt_emb"], mode, n_img)
        got = prompt_bce_loss(tv["prompt.img_emb"], sel, tv["prompt.labels"], tv["prompt.t"], tv["prompt.b"],
                              tv["prompt.pos_weight"], tv["prompt.question_weight"] if qw == "qw" else None,
                              label_smoothing=ls)
        assert close(got, tv[key]), (key, float(got), float(tv[key]))


def _inputs(seed=0, b=4, q=5, v=3, e=6):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(b, e, generator=g, dtype=torch.float64), dim=-1).requires_grad_(True)
    bank = F.normalize(torch.randn(q, v, 2, e, generator=g, dtype=torch.float64), dim=-1).requires_grad_(True)
    labels = torch.randint(-1, 2, (b, q), generator=g)
    labels[0, :3] = torch.tensor([1, 0, -1])
    t = torch.tensor(1.9, dtype=torch.float64, requires_grad=True)
    pw = torch.rand(q, generator=g, dtype=torch.float64) * 5 + 0.5
    qw = torch.tensor([1.0, 5.0, 1.0, 2.0, 0.5], dtype=torch.float64)[:q]
    return img, bank, labels, t, pw, qw


@pytest.mark.parametrize("with_qw", [False, True])
@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_value_and_grad_match_loops(with_qw, ls):
    img, bank, labels, t, pw, qw = _inputs()
    sel = select_prompts(bank, "mean_all", img.shape[0])
    b = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    got = prompt_bce_loss(img, sel, labels, t, b, pw, qw if with_qw else None, label_smoothing=ls)
    want = slow_prompt_loss(img, sel, labels, t, pw, qw if with_qw else None, ls)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g_got = torch.autograd.grad(got, (img, bank, t, b), allow_unused=True)
    g_want = torch.autograd.grad(want, (img, bank, t))
    for a, w in zip(g_got[:3], g_want, strict=True):
        torch.testing.assert_close(a, w, rtol=1e-10, atol=1e-12)
    assert abs(float(g_got[3])) < 1e-12  # b cancels


def test_fully_masked_is_zero_with_graph():
    img, bank, labels, t, pw, _ = _inputs(seed=1)
    loss = prompt_bce_loss(img, select_prompts(bank, "first_only", 4), torch.full_like(labels, -1), t, 0.0, pw)
    assert loss.item() == 0.0
    loss.backward()
    assert img.grad is not None and (img.grad == 0).all()


def test_select_prompts_modes():
    _, bank, *_ = _inputs(seed=2)
    bank = bank.detach()
    q, v = bank.shape[:2]
    torch.testing.assert_close(select_prompts(bank, "first_only", 3), bank[:, 0].expand(3, -1, -1, -1))
    torch.testing.assert_close(select_prompts(bank, "mean_all", 2)[1], bank.mean(1))
    r1 = select_prompts(bank, "random_1", 50, generator=torch.Generator().manual_seed(0))
    assert r1.shape == (50, q, 2, bank.shape[-1])
    seen = set()
    for i in range(50):
        for j in range(q):
            match = [k for k in range(v) if torch.equal(r1[i, j], bank[j, k])]
            assert len(match) == 1
            seen.add(match[0])
    assert seen == set(range(v))
    # random_1_to_n: each entry is the average of 1..V variants drawn with replacement
    rn = select_prompts(bank, "random_1_to_n", 40, generator=torch.Generator().manual_seed(1))
    max_weights = []
    for i in range(40):
        for j in range(q):
            a = bank[j].permute(1, 2, 0).reshape(-1, v)
            w = torch.linalg.lstsq(a, rn[i, j].reshape(-1, 1)).solution.flatten()
            # weights are k/c (k of the c draws hit this variant, c in 1..V): multiples of 1/6 for V = 3
            assert torch.allclose(w * 6, (w * 6).round(), atol=1e-6)
            assert abs(float(w.sum()) - 1.0) < 1e-9 and (w > -1e-9).all()
            max_weights.append(round(float(w.max()) * 6))
    assert 4 in max_weights, "draws are with replacement, so a variant sometimes counts 2 of 3"
    assert {6, 3, 2} <= set(max_weights)
    again = select_prompts(bank, "random_1_to_n", 40, generator=torch.Generator().manual_seed(1))
    assert torch.equal(rn, again)
    with pytest.raises(LossInputError, match="mode"):
        select_prompts(bank, "all", 2)


def test_pos_weight_from_labels():
    labels = torch.tensor([[1, 0, -1, 1, -1], [0, 0, -1, 1, 0], [0, 0, -1, 1, -1]] + [[0, 0, -1, 1, 0]] * 40)
    pw = pos_weight_from_labels(labels)
    assert pw[0].item() == pytest.approx(20.0)  # 42 negatives / 1 positive, capped
    assert pw[1].item() == 1.0  # no positives
    assert pw[2].item() == 1.0  # no labels at all
    assert pw[3].item() == 0.0  # positives only: min(0 / n, 20)
    assert pw[4].item() == 1.0  # negatives only
    assert pos_weight_from_labels(torch.tensor([[1], [0], [0], [1], [0]]), cap=20)[0].item() == pytest.approx(1.5)
    assert pos_weight_from_labels(labels, cap=3.0)[0].item() == 3.0


def test_question_group_weights():
    w = question_group_weights(["chest", "ctrate", "abdomen"])
    assert w.tolist() == [1.0, 5.0, 1.0]
    assert question_group_weights(["a", "b"], {"a": 2.0, "b": 0.5}).tolist() == [2.0, 0.5]
    with pytest.raises(LossInputError, match="neuro"):
        question_group_weights(["chest", "neuro"])


def test_bad_inputs():
    img, bank, labels, t, pw, _ = _inputs(seed=3)
    sel = select_prompts(bank, "first_only", 4)
    with pytest.raises(LossInputError, match="labels"):
        prompt_bce_loss(img, sel, labels[:, :2], t, 0.0, pw)
    with pytest.raises(LossInputError, match=r"\{-1, 0, 1\}"):
        prompt_bce_loss(img, sel, labels + 2, t, 0.0, pw)
    with pytest.raises(LossInputError, match="pos_weight"):
        prompt_bce_loss(img, sel, labels, t, 0.0, pw[:2])
    with pytest.raises(LossInputError, match="integers"):
        prompt_bce_loss(img, sel, labels.float(), t, 0.0, pw)
    assert math.isfinite(prompt_bce_loss(img, sel, labels, t, 0.0, pw).item())
